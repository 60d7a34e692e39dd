"""Windows served one request at a time, planned until the decode reports the video's end, are exactly the
windows one pass over the video cuts (`FrameWindows`, TransNetV2's own padding), for any length, step,
context and number of frames decoded ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.model_interface import SplitWindow
from orchestrator.pipeline.items import VideoItem
from orchestrator.pipeline.media.video import VideoInput
from orchestrator.pipeline.split.decode import planned_enough, split_requests
from tests.support.frame_windows import FrameWindows
from workers.media.windows import SplitWindows


def frames(n: int) -> list[np.ndarray]:
    return [np.full((2, 2, 3), (i % 251, i // 251, 7), np.uint8) for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 900), step=st.sampled_from([2, 5, 50]), context=st.sampled_from([0, 3, 25]))
def test_planned_windows_equal_one_pass(n: int, step: int, context: int) -> None:
    window = SplitWindow(step=step, context=context)
    expected = list(FrameWindows(iter(frames(n)), window, chunk_steps=4))
    reader, item, got = SplitWindows(iter(frames(n)), window), VideoItem(0, VideoInput(Path("/v.mp4"), "v")), []
    for request in split_requests(item, window):
        window, real = reader.window_frames(request.core_start, request.core)
        if window is not None:
            got.append((request.core_start, np.stack(window), real))
        if reader.ended:  # what the decode step's answer says
            item.ended, item.n_frames = True, reader.n_read
        if planned_enough(item, request):
            break
    assert [start for start, _ in expected] == [start for start, _, _ in got]
    for (_, want), (start, array, real) in zip(expected, got, strict=True):
        assert array.shape == want.shape and np.array_equal(array, want), start
        assert real == min(step * 4, n - start)
    assert sum(real for _, _, real in got) == n


def test_a_whole_video_model_gets_one_request_of_every_frame() -> None:
    item = VideoItem(0, VideoInput(Path("/v.mp4"), "v"))
    [request] = list(split_requests(item, None))
    reader = SplitWindows(iter(frames(37)), SplitWindow(step=request.step, context=request.context))
    window, real = reader.window_frames(request.core_start, request.core)
    assert request.whole and real == 37 and np.stack(window).shape == (37, 2, 2, 3)
