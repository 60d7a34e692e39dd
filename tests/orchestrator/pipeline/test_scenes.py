"""Streaming scenes: windows cut and padded as TransNetV2 pads a whole video, scenes stitched across any
chunking, and whole-video scenes validated. (The comparison with TransNetV2's own code, run in its env,
is in tests/models/test_transnetv2_streaming.py.)"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.model_interface import SplitWindow
from orchestrator.pipeline.split.scenes import SceneStitcher, check_scenes
from tests.support.frame_windows import FrameWindows

TRANSNET = SplitWindow(step=50, context=25)


def stitch(flags: list[bool], cuts: list[int] = ()) -> list[tuple[int, int]]:
    """Scenes of `flags` fed in pieces split at `cuts`."""
    stitcher, scenes, previous = SceneStitcher(), [], 0
    for cut in [*sorted(cuts), len(flags)]:
        scenes += stitcher.feed(np.array(flags[previous:cut], dtype=bool))
        previous = max(previous, cut)
    return scenes + stitcher.finish(len(flags))


def as_flags(text: str) -> list[bool]:
    return [c == "1" for c in text]


@pytest.mark.parametrize(("flags", "scenes"), [
    ("0", [(0, 0)]),
    ("00000", [(0, 4)]),
    ("00100", [(0, 2), (3, 4)]),
    ("0011000", [(0, 2), (4, 6)]),
    ("1100100", [(2, 4), (5, 6)]),      # a transition at frame 0 opens no scene
    ("0001111", [(0, 3)]),              # trailing transitions: the last scene ends at the first of them
    ("00101", [(0, 2), (3, 4)]),
    ("1", [(0, 0)]),
    ("1111", [(0, 3)]),                 # transitions only: one scene
    ("101", [(1, 2)]),
    ("", []),                           # no frames, no scene
])
def test_stitcher_follows_transnetv2s_conventions(flags: str, scenes: list[tuple[int, int]]) -> None:
    assert stitch(as_flags(flags)) == scenes


def test_stitcher_returns_each_scene_as_soon_as_it_closes() -> None:
    stitcher = SceneStitcher()
    assert stitcher.feed(np.array(as_flags("0000"))) == []
    assert stitcher.feed(np.array(as_flags("01"))) == [(0, 5)]
    assert stitcher.feed(np.array(as_flags("1000"))) == []
    assert stitcher.finish(10) == [(7, 9)]


def test_finish_refuses_a_frame_count_other_than_the_frames_fed() -> None:
    stitcher = SceneStitcher()
    stitcher.feed(np.zeros(100, dtype=bool))
    with pytest.raises(ValueError, match=r"finish\(90\) after 100 frames"):
        stitcher.finish(90)


@given(st.lists(st.booleans(), max_size=300), st.lists(st.integers(0, 300), max_size=12))
def test_any_chunking_gives_the_same_scenes(flags: list[bool], cuts: list[int]) -> None:
    assert stitch(flags, [min(c, len(flags)) for c in cuts]) == stitch(flags)


@given(st.lists(st.sampled_from([0.0, 0.0, 0.0, 1.0]), max_size=200))
def test_stitched_scenes_are_always_valid(flags: list[float]) -> None:
    scenes = stitch([f > 0.5 for f in flags])
    assert check_scenes([list(s) for s in scenes], len(flags)) == scenes


@pytest.mark.parametrize(("scenes", "message"), [
    ({"0": [0, 9]}, "must be a list of"),
    ([[0, 9, 10]], "scene 0 must be a"),
    ([5], "scene 0 must be a"),
    ([[0, 4], [5.0, 9]], "scene 1 has non-integer bounds"),
    ([[True, 4]], "non-integer"),
    ([[0, 4], [7, 5]], "scene 1 starts after it ends"),
    ([[-1, 4]], "outside the video's frames"),
    ([[0, 10]], r"outside the video's frames \[0, 10\)"),
    ([[0, 4], [4, 9]], "scene 1 .* overlaps scene 0"),
    ([[5, 9], [0, 4]], "scene 1 .* out of order after scene 0"),
])
def test_check_scenes_names_the_first_problem(scenes: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_scenes(scenes, 10)


def test_check_scenes_accepts_gaps_numpy_integers_and_no_scenes() -> None:
    assert check_scenes([[0, 3], (np.int32(5), np.int64(9))], 10) == [(0, 3), (5, 9)]
    assert check_scenes([], 10) == []


def padded_like_predict_frames(frames: np.ndarray) -> np.ndarray:
    """TransNetV2's `predict_frames` padding of a whole video: 25 copies of the first frame before, and
    after it copies of the last frame up to 25 plus a whole number of 50-frame steps."""
    after = 25 + 50 - (len(frames) % 50 if len(frames) % 50 != 0 else 50)
    return np.concatenate([frames[:1]] * 25 + [frames] + [frames[-1:]] * after)


@pytest.mark.parametrize("n_frames", [1, 24, 25, 49, 50, 51, 75, 100, 101, 137, 250])
@pytest.mark.parametrize("chunk_steps", [1, 2, 3])
def test_windows_are_predict_frames_windows_grouped(n_frames: int, chunk_steps: int) -> None:
    frames = np.arange(n_frames, dtype=np.int32)[:, None] * np.ones((1, 2), dtype=np.int32)
    padded = padded_like_predict_frames(frames)
    windows = FrameWindows(iter(frames), TRANSNET, chunk_steps)
    starts = []
    for core_start, window in windows:
        starts.append(core_start)
        core = len(window) - 50
        assert core % 50 == 0 and 0 < core <= 50 * chunk_steps
        assert np.array_equal(window, padded[core_start: core_start + core + 50])
        assert windows.n_frames - core_start > 0
    assert starts == list(range(0, n_frames, 50 * chunk_steps))
    assert windows.n_frames == n_frames
    assert starts[-1] + len(window) - 50 == len(padded) - 50


@pytest.mark.parametrize("window", [SplitWindow(step=10, context=25), SplitWindow(step=7, context=0)])
def test_windows_cover_every_frame_once_with_any_step_and_context(window: SplitWindow) -> None:
    frames = np.arange(123, dtype=np.int64)
    cores = []
    windows = FrameWindows(frames, window, chunk_steps=2)
    for core_start, chunk in windows:
        real = min(len(chunk) - 2 * window.context, windows.n_frames - core_start)
        core = chunk[window.context: window.context + real]
        assert np.array_equal(core, frames[core_start: core_start + real])
        before = frames[np.clip(np.arange(core_start - window.context, core_start), 0, None)]
        assert np.array_equal(chunk[: window.context], before)
        cores.append(core)
    assert np.array_equal(np.concatenate(cores), frames)


def test_no_frames_give_no_windows() -> None:
    windows = FrameWindows(iter([]), TRANSNET)
    assert list(windows) == [] and windows.n_frames == 0


def test_bad_window_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="step >= 1"):
        FrameWindows([], SplitWindow(step=0, context=25))
    with pytest.raises(ValueError, match="chunk_steps=0"):
        FrameWindows([], TRANSNET, chunk_steps=0)


def test_memory_holds_a_window_not_the_video() -> None:
    n_frames, frame_shape = 100_000, (27, 48, 3)

    def frames() -> Iterator[np.ndarray]:
        for index in range(n_frames):
            yield np.full(frame_shape, index % 251, dtype=np.uint8)

    window_bytes = 100 * int(np.prod(frame_shape))
    tracemalloc.start()
    try:
        windows = FrameWindows(frames(), TRANSNET)
        count = sum(1 for _ in windows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n_frames // 50 and windows.n_frames == n_frames
    # The window the caller still holds plus the one being filled; the whole video would be 1000 windows.
    assert peak < 2.5 * window_bytes, f"peak {peak} bytes; a window is {window_bytes}"
