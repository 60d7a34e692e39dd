"""A clip's frames at full size, read forward through its video: sampled for each clip stage, encoded.

A `ClipReader` keeps its place in one video: each clip is read from where the last one stopped, and the
frame after a clip is read ahead to learn where the clip stops being shown. Once the decode breaks, the
clip it broke after is still whole and every later clip of the video fails with the reason.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from workers.media.s3 import BlockCache, ObjectError, is_s3, upload
from workers.media.video import ClipEncoder, Decoder, DiskFull, Frame, VideoError, frame_size
from workers.shared_frames import SharedFramesDir

ENCODE_ERRORS = (OSError, ValueError, av.error.FFmpegError, MemoryError)
"""Writing a clip can fail on a full disk, a codec the build lacks, or too little memory."""


class ClipReader:
    """One video's frames at full size, read forward only, clip after clip."""

    def __init__(self, path: Path | str, threads: int | None = None, hardware: bool = False,
                 cache: BlockCache | None = None) -> None:
        self.path = path
        self.decoder = Decoder(path, threads, hardware, cache)
        self._frames: Iterator[Frame] | None = None
        self._ahead: Frame | None = None
        self.position = 0
        """The index of the next frame `next` returns."""
        self.broken: str | None = None

    def next(self) -> Frame | None:
        if self._frames is None:
            self._frames = iter(self.decoder)
        frame, self._ahead = self._ahead, None
        if frame is None:
            frame = next(self._frames, None)
        if frame is not None:
            self.position += 1
        return frame

    def clip(self, start: int, end: int) -> Iterator[tuple[int, Frame]]:
        """The frames start..end (inclusive) with their indices, skipping those before `start`."""
        while self.position <= end:
            index = self.position
            frame = self.next()
            if frame is None:
                raise VideoError(f"{self.path}: has fewer frames than the split stage read")
            if index >= start:
                yield index, frame

    def end_of_last_frame(self) -> int:
        """Where the frame just read stops being shown: where the next one starts, or, after the last frame
        (or where the decode breaks), its own timestamp plus duration."""
        try:
            if self._frames is None:
                self._frames = iter(self.decoder)
            self._ahead = next(self._frames, None)
        except VideoError as exc:
            self.broken = str(exc)  # this clip is whole; the next ones fail with it
        return self._ahead.pts if self._ahead is not None else self.decoder.end_pts

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()  # type: ignore[attr-defined]


def read_clip(reader: ClipReader, request: dict[str, Any], frames_dir: SharedFramesDir,
              threads: int | None) -> dict[str, Any]:
    """Sample each stage's frames of a clip into shared memory (and encode the clip when asked): the
    segments, the clip's times, whether its file was written."""
    if reader.broken is not None:
        return {"error": reader.broken}
    start, end = request["start"], request["end"]
    samples = {stage: (set(spec["indices"]), frame_size(spec.get("size")))
               for stage, spec in request["samples"].items()}
    picked: dict[str, list[np.ndarray]] = {stage: [] for stage in samples}
    encode = request.get("encode")
    target = _encode_target(encode["out"]) if encode else None
    encoder: ClipEncoder | None = None
    first: Frame | None = None
    end_pts: int | None = None
    try:
        for index, frame in reader.clip(start, end):
            if first is None:
                first = frame
                if encode:
                    assert target is not None
                    encoder = ClipEncoder(target, frame.time_base, encode["fps"], *frame.size,
                                          encode["codec"], threads, reader.decoder.hardware)
            if encoder is not None:
                encoder.write_frame(frame.av_frame, frame.pts - first.pts)
            for stage, (indices, size) in samples.items():
                if index in indices:  # a stream may change size mid-clip: every frame at the first's size
                    picked[stage].append(reader.decoder.rgb(frame, size or first.size))
        assert first is not None
        end_pts = reader.end_of_last_frame()
        times = [first.time_s, float(end_pts * first.time_base)]
        end_pts -= first.pts
    except DiskFull:
        raise
    except (VideoError, *ENCODE_ERRORS) as exc:
        return {"error": _broken(reader, exc)}
    finally:
        closed = False
        try:
            if encoder is not None:
                _close(encoder, end_pts)
            closed = True
        finally:  # a clip for a bucket that will not be uploaded leaves no local file (not even on a full disk)
            if target is not None and encode and is_s3(encode["out"]) and (encoder is None or end_pts is None
                                                                            or not closed):
                target.unlink(missing_ok=True)
    if encoder is not None and target is not None and is_s3(encode["out"]):
        try:
            upload(target, encode["out"])  # from here: the clip's pixels never pass through the orchestrator
        except ObjectError as exc:
            return {"error": f"uploading the clip failed: {exc}"}
        finally:
            target.unlink(missing_ok=True)
    segments = {stage: frames_dir.write_stack(f"{request['name']}.{stage}", frames)
                for stage, frames in picked.items() if frames}
    return {"frames": segments, "times": times, "encoded": encoder is not None}


def _encode_target(out: str) -> Path:
    """Where the clip's file is written: its place in the output folder, or, for an s3:// output, a local
    file uploaded once whole."""
    if not is_s3(out):
        return Path(out)
    handle, name = tempfile.mkstemp(prefix="clip-", suffix=".mp4")
    os.close(handle)
    return Path(name)


def _broken(reader: ClipReader, exc: BaseException) -> str:
    """Why this clip failed; the clips after it in the video fail with the same reason."""
    reader.broken = str(exc) if isinstance(exc, VideoError) else f"cutting clips failed: {type(exc).__name__}: {exc}"
    return reader.broken


def _close(encoder: ClipEncoder, end_pts: int | None) -> None:
    """Finish the clip's file; a failure other than a full disk leaves a file the orchestrator drops."""
    try:
        encoder.close(end_pts)
    except DiskFull:
        raise
    except ENCODE_ERRORS:
        pass
