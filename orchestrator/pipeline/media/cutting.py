"""Cut clips at full size as the split stage's answers arrive: each clip leaves as soon as its scene closes.

    VideoItem, SplitRequest (answered)*, SplitDone ──▶ VideoItem, Clip*, VideoDone
                         │ transitions ─▶ SceneStitcher ─▶ closed scenes
                         ▼
       full-size decode, moving forward only ─▶ each scene's frames: encoded to its clip file, and the
                                                frames each clip stage samples, resized for it

The full-size decode trails the split stage by at most one scene, so a long video never sits in memory.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.items import END, Clip, SplitDone, SplitRequest, VideoDone, VideoItem, put
from orchestrator.pipeline.media.video import ClipEncoder, Decoder, Frame, VideoError, sample_indices
from orchestrator.pipeline.split.scenes import Scene, SceneStitcher

_ENCODE_ERRORS = (OSError, ValueError, av.error.FFmpegError, MemoryError)
"""Writing a clip can fail on a full disk, a codec the build lacks, or too little memory."""


class VideoCutter:
    """One video's clips, cut in order from its scenes as they close."""

    def __init__(self, video: VideoItem, stages: list[StageConfig], clips_tmp: Path, codec: str) -> None:
        self.video, self.stages, self.clips_tmp, self.codec = video, stages, clips_tmp, codec
        self.fps = video.meta.fps if video.meta else 1.0
        self.stitcher = SceneStitcher()
        self._decoder = Decoder(video.video.path)
        self._frames: Iterator[Frame] | None = None
        self._ahead: Frame | None = None
        """The frame after the last clip cut, read to learn where that clip ends."""
        self._position = 0
        self._clips = 0
        self._broken: str | None = None
        """Why the full-size decode stopped; every later clip fails with it."""
        self._split_failed = False
        """A window went unanswered: the scenes after it cannot be known, so no more clips are cut."""

    def answered(self, request: SplitRequest) -> list[Clip]:
        """The clips whose scenes this answer closes; none from a window the split failed on, or after it."""
        if request.scenes is None and request.transitions is None:
            self._split_failed = True
        if self._split_failed:
            return []
        if request.scenes is not None:
            return [self._cut(scene) for scene in request.scenes]
        return [self._cut(scene) for scene in self.stitcher.feed(request.transitions[: request.real])]

    def finish(self) -> list[Clip]:
        """The clips of the scenes still open at the video's end (none if its split failed)."""
        if self._split_failed or self.video.error is not None or self.stitcher.frames_fed != self.video.n_frames:
            return []
        return [self._cut(scene) for scene in self.stitcher.finish(self.video.n_frames)]

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()  # type: ignore[attr-defined]

    def _cut(self, scene: Scene) -> Clip:
        clip = Clip(self.video, self._clips, *scene)
        self._clips += 1
        reason = self._broken
        if reason is None:
            try:
                self._encode(clip)
                return clip
            except VideoError as exc:
                reason = str(exc)
            except _ENCODE_ERRORS as exc:
                reason = f"cutting clips failed: {type(exc).__name__}: {exc}"
            self._broken = reason
        clip.errors["decode"] = reason
        clip.frames.clear()
        return clip

    def _encode(self, clip: Clip) -> None:
        wanted = {st.name: set(sample_indices(clip.start, clip.end, self.fps, st.frames.sampling, st.frames.rate,
                                              st.frames.max_frames)) for st in self.stages}
        picked: dict[str, list[np.ndarray]] = {st.name: [] for st in self.stages}
        encoder: ClipEncoder | None = None
        first: Frame | None = None
        end_pts: int | None = None
        try:
            while self._position <= clip.end:
                frame = self._read()
                if frame is None:
                    raise VideoError(f"{self.video.video.path}: has fewer frames than the split stage read")
                index, self._position = self._position, self._position + 1
                if index < clip.start:
                    continue
                if first is None:
                    first, (height, width) = frame, frame.image.shape[:2]
                    path = self.clips_tmp / f"{self.video.video.video_id}_{clip.index:04d}.mp4"
                    encoder = ClipEncoder(path, frame.time_base, self.fps, width, height, self.codec)
                    clip.encoded = encoder.path
                image = resize_frame(frame.image, (width, height))  # a stream may change size mid-clip
                encoder.write(image, frame.pts - first.pts)  # type: ignore[union-attr]
                for stage in self.stages:
                    if index in wanted[stage.name]:
                        picked[stage.name].append(resize_frame(image, stage.frames.size))
            if first is not None:
                end_pts = self._end_of_last_frame()
                clip.times = (first.time_s, float(end_pts * first.time_base))
                end_pts -= first.pts
        finally:
            if encoder is not None:
                with contextlib.suppress(*_ENCODE_ERRORS):
                    encoder.close(end_pts)
        clip.frames = {name: np.stack(frames) for name, frames in picked.items() if frames}

    def _read(self) -> Frame | None:
        if self._frames is None:
            self._frames = iter(self._decoder)
        frame, self._ahead = self._ahead, None
        return frame if frame is not None else next(self._frames, None)

    def _end_of_last_frame(self) -> int:
        """Where the frame just read stops being shown: where the next one starts, or, after the last frame
        (or where the decode breaks), its own timestamp plus duration."""
        try:
            self._ahead = self._read()
        except VideoError as exc:
            self._broken = str(exc)  # this clip is whole; the next ones fail with it
        return self._ahead.pts if self._ahead is not None else self._decoder.end_pts


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """A frame at a stage's `frames.size` (PIL bilinear), or as it is when that is its size or none is set."""
    if size is None or (frame.shape[1], frame.shape[0]) == size:
        return frame
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


def cut_clips(model_stages: list[StageConfig], clips_tmp: Path, codec: str, inq: queue.Queue, outq: queue.Queue,
              stop: threading.Event) -> None:
    """The step between the split pool and the clip stages: VideoItem, its clips as they close, VideoDone."""
    cutter: VideoCutter | None = None
    try:
        while not stop.is_set():
            try:
                item = inq.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is END:
                put(outq, END, stop)
                return
            out: list[object] = []
            if isinstance(item, VideoItem):
                cutter = VideoCutter(item, model_stages, clips_tmp, codec) if item.decoded_here else None
                out = [item]
            elif isinstance(item, SplitRequest) and cutter is not None:
                out = list(cutter.answered(item))
            elif isinstance(item, SplitDone):
                out = [*(cutter.finish() if cutter is not None else []), VideoDone(item.video)]
                if cutter is not None:
                    cutter.close()
                cutter = None
            for each in out:
                if not put(outq, each, stop):
                    return
    finally:
        if cutter is not None:
            cutter.close()
