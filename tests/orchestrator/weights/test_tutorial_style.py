"""A tutorial-style model (unguarded `import torch`, `model_utils.ModelInterface`, `__call__(images)`) kept
in a folder outside the project: listed, its weights downloaded, and run in its env, while the
orchestrator's own process never imports torch, transformers, onnxruntime or the model's module: the
CLI runs with sentinels of those libraries first on its path (tests/fixtures/sentinels), which record an import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from models.model_utils import WEIGHTS_DIR_VAR
from orchestrator.envs import Env
from tests.fixtures.sentinels import LOG_VAR, PROBE_PRELUDE, imported_sentinels
from tests.support.paths import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "tutorial_style"
NEVER_IN_THE_ORCHESTRATOR = {"torch", "transformers", "onnxruntime", "radio_like", "safetensors"}
CONFIG = """\
models:
  - class: radio_like.py:RadioLike          # file.py:Class, relative to this file
  - class: radio_like.BatchedRadioLike      # module.Class, importable from this file's folder
    params: {dtype: float32}
"""
_PROBE = """
import atexit, json, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv[0] = "orchestrator"
from orchestrator.cli import main
main()
"""


def orchestrator(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the CLI in a child, sentinels first on its path, that reports at exit the top-level name of every
    module it imported, the sentinels it recorded importing among them."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "imports.log"
        done = subprocess.run([sys.executable, "-c", PROBE_PRELUDE + _PROBE, *args], cwd=ROOT,
                              env={**os.environ, "COLUMNS": "200", LOG_VAR: str(log)},
                              capture_output=True, text=True, timeout=300)
        recorded = set(imported_sentinels(log))
    lines = [line for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    assert lines, done.stderr
    return done, recorded | {name.partition(".")[0] for name in json.loads(lines[-1].removeprefix("MODULES "))}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's own folder: the model file and a model_download.yaml listing it."""
    folder = tmp_path_factory.mktemp("my_project")
    shutil.copy(FIXTURE / "radio_like.py", folder / "radio_like.py")
    (folder / "model_download.yaml").write_text(CONFIG)
    return folder


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, video_splitting: Env) -> Path:
    """The tiny checkpoint, made by the env's interpreter in a folder laid out like the cache."""
    folder = tmp_path_factory.mktemp("mirror")
    made = subprocess.run([str(video_splitting.python), str(FIXTURE / "make_radio_like_weights.py"), str(folder)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    return folder


def test_models_list_and_download_never_import_the_model_here(project: Path, mirror: Path, tmp_path: Path) -> None:
    config, weights = str(project / "model_download.yaml"), str(tmp_path / "weights")
    listed, imported = orchestrator("models", "list", "--json", "--config", config, "--weights-dir", weights)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["models"]
    assert [(r["model"], r["env"], r["weights"], r["files"], r["cached"]) for r in rows] == [
        ("RadioLike", "video_splitting", "test-org/radio-like", ["model.safetensors"], "no"),
        ("BatchedRadioLike", "video_splitting", "test-org/radio-like", ["model.safetensors"], "no"),
    ]
    assert "orchestrator" in imported and not imported & NEVER_IN_THE_ORCHESTRATOR
    assert not any(name.startswith("user_model") for name in imported)  # how workers.model_loader names files

    downloaded, imported = orchestrator("models", "download", "--config", config, "--from", str(mirror),
                                        "--weights-dir", weights)
    assert downloaded.returncode == 0, downloaded.stderr
    assert "test-org/radio-like: downloaded" in downloaded.stdout
    assert not imported & NEVER_IN_THE_ORCHESTRATOR
    cached = tmp_path / "weights" / "test-org" / "radio-like"
    assert sorted(p.name for p in cached.iterdir() if not p.name.startswith(".")) == ["model.safetensors"]
    listed, _ = orchestrator("models", "list", "--json", "--config", config, "--weights-dir", weights)
    assert [r["cached"] for r in json.loads(listed.stdout)["models"]] == ["yes", "yes"]


_RUN_CLIPS = """
import json, sys
import numpy as np
from workers.calls import call_items
from workers.model_input import InputSpec, adapt_input
from workers.model_loader import instantiate

model_file = sys.argv[1]
spec = InputSpec.from_dict({"form": "frames", "type": "torch", "layout": "NCHW", "dtype": "float32"})
rng = np.random.default_rng(0)
clips = [rng.integers(0, 256, (n, 16, 24, 3), dtype=np.uint8) for n in (3, 1, 5)]
for clip in clips:
    clip.flags.writeable = False  # as a worker receives frames: read-only views of shared memory
inputs = [adapt_input({"frames": clip}, spec) for clip in clips]
answers = {}
for name in ("RadioLike", "BatchedRadioLike"):
    model = instantiate(f"{model_file}:{name}", {})
    model.setup()
    outcomes = call_items(model, inputs, model.batched)
    answers[name] = [[float(v) for v in result] if error is None else error["message"] for result, error in outcomes]
alone = [[float(v) for v in model([x])[0]] for x in inputs]
print(json.dumps({"answers": answers, "alone": alone, "n": [len(c) for c in clips]}))
"""


def test_the_model_runs_on_bare_nchw_float_tensors_per_clip_and_batched(project: Path, mirror: Path,
                                                                        video_splitting: Env, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(mirror, weights)
    environ = video_splitting.launch_environ(os.environ) | {"PYTHONPATH": str(ROOT), WEIGHTS_DIR_VAR: str(weights)}
    done = subprocess.run([str(video_splitting.python), "-c", _RUN_CLIPS, str(project / "radio_like.py")],
                          env=environ, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    per_clip, batched = result["answers"]["RadioLike"], result["answers"]["BatchedRadioLike"]
    assert len(per_clip) == len(batched) == 3 and all(len(summary) == 8 for summary in per_clip)
    assert per_clip[0] != per_clip[1] != per_clip[2]
    for one, many, alone in zip(per_clip, batched, result["alone"], strict=True):
        assert one == pytest.approx(many, abs=1e-5) and one == pytest.approx(alone, abs=1e-5)


PIPELINE = """\
inputs: [{video}]
output: {output}
stages:
  - {{name: shots, split: models.transnetv2.TransNetV2ShotDetector, frames: {{size: [48, 27]}}}}
  - name: radio                                   # the tutorial's model as written: one clip per call, the
    model: radio_like.py:RadioLike                # (N, 3, H, W) tensor its `__call__` annotation asks for
    frames: {{sampling: per_second, rate: 2, size: [24, 16]}}
  - name: batched                                 # the same model opting in to batched calls; `input:` wins
    model: radio_like.BatchedRadioLike
    batch_size: 3
    input: {{form: frames, type: torch, layout: NCHW, dtype: float32}}
    frames: {{sampling: per_second, rate: 2, size: [24, 16]}}
"""


def test_a_pipeline_runs_the_tutorial_model_per_clip_and_batched(project: Path, mirror: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.sample_video import generate_sample

    video = tmp_path / "sample.mp4"
    shots = generate_sample(video)
    config = project / "pipeline.yaml"
    config.write_text(PIPELINE.format(video=video, output=tmp_path / "out"))
    monkeypatch.setenv(WEIGHTS_DIR_VAR, str(tmp_path / "weights"))
    downloaded, _ = orchestrator("models", "download", "--config", str(project / "model_download.yaml"),
                                 "--from", str(mirror))
    assert downloaded.returncode == 0, downloaded.stderr.partition("MODULES")[0]
    done, imported = orchestrator("run", str(config), "--quiet")
    assert done.returncode == 0, done.stderr.partition("MODULES")[0][-4000:]
    assert not imported & NEVER_IN_THE_ORCHESTRATOR
    rows = [json.loads(line) for line in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == len(shots)
    for row in rows:
        assert len(row["radio"]) == 8
        assert row["radio"] == pytest.approx(row["batched"], abs=1e-5)
    assert len({tuple(row["radio"]) for row in rows}) == len(rows)
