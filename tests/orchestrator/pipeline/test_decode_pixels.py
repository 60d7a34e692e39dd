"""`iter_frames` shares one scaler across a video for speed; the pixels must stay exactly those FFmpeg's
bilinear scaler gives each frame on its own, so the split model sees what it always saw."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from orchestrator.sample_video import SampleSpec, generate_sample
from workers.media.video import iter_frames


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "v.mp4"
    generate_sample(path, SampleSpec(width=320, height=240, shots=((20, None), (20, "PIXELS"))))
    return path


@pytest.mark.parametrize("size", [None, (48, 27), (224, 224), (640, 480)])
def test_frames_equal_frame_by_frame_conversion(video: Path, size: tuple[int, int] | None) -> None:
    with av.open(str(video)) as container:
        expected = [frame.to_ndarray(width=(size or (frame.width, frame.height))[0],
                                     height=(size or (frame.width, frame.height))[1], format="rgb24")
                    for frame in container.decode(video=0)]
    frames = list(iter_frames(video, size))
    assert len(frames) == len(expected) == 40
    for index, (frame, reference) in enumerate(zip(frames, expected, strict=True)):
        assert frame.dtype == np.uint8 and frame.flags.c_contiguous
        assert np.array_equal(frame, reference), f"frame {index} differs"
