"""docs/adding-a-model.md end to end: make the weights, download them, run the model in its env's worker.

The tutorial's weights are made on the spot by the env's own interpreter (the hub is unreachable
here), put in a local mirror, and fetched with the same `orchestrator models download` a user runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from models.model_utils import WEIGHTS_DIR_VAR
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.policy import StopGrace, WorkerPolicy
from tests.support.cli import run_cli
from tests.support.envs import ensure_env
from tests.support.paths import ROOT

EXAMPLE = ROOT / "examples" / "custom_model"


def test_tutorial_model_downloads_and_runs_in_its_env(tmp_path: Path, parent_imports) -> None:
    env = ensure_env("video_splitting")
    mirror, weights = tmp_path / "mirror", tmp_path / "weights"
    made = subprocess.run([str(env.python), str(EXAMPLE / "make_tiny_weights.py"), str(mirror)],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]

    downloaded = run_cli("models", "download", "--from", str(mirror), "--models", "TinyFrameEmbedder",
                         "--weights-dir", str(weights))
    assert downloaded.returncode == 0, downloaded.stderr
    cached = weights / "tutorial" / "tiny-vit"
    assert sorted(p.name for p in cached.iterdir() if not p.name.startswith(".")) == ["config.json",
                                                                                       "model.safetensors"]
    listed = json.loads(run_cli("models", "list", "--json", "--weights-dir", str(weights)).stdout)["models"]
    assert [(r["model"], r["cached"]) for r in listed if r["weights"]] == [("TinyFrameEmbedder", "yes")]

    spec = WorkerSpec("embed/0", env, ModelRef(f"{EXAMPLE / 'frame_embedder.py'}:TinyFrameEmbedder",
                                               {"normalize": True}), extra_environ={WEIGHTS_DIR_VAR: str(weights)})
    rng = np.random.default_rng(0)
    clip_a = rng.integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    clip_b = 255 - clip_a
    with WorkerHandle(spec, tmp_path, WorkerPolicy(ready_timeout_s=240, stop=StopGrace(ask_s=5))) as handle:
        handle.start()
        first, again, other = (handle.call({"frames": c}, timeout=120) for c in (clip_a, clip_a, clip_b))
    assert first["embedding"].shape == (32,) and first["embedding"].dtype == np.float32 and first["frames"] == 3
    assert abs(float(np.linalg.norm(first["embedding"])) - 1.0) < 1e-5
    assert np.array_equal(first["embedding"], again["embedding"])
    assert not np.allclose(first["embedding"], other["embedding"])
    assert parent_imports() == []
