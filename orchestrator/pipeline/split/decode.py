"""The split stage's side of a video: decode it small and hand the model windows (or the whole video), then
check what the model answers.

    video ─▶ Decoder(split size) ─▶ FrameWindows ─▶ SplitRequest (context + core + context) ... SplitDone
                                      (or, for a model without a split window, one SplitRequest of every frame)

Streaming keeps one window in memory per video whatever its length, and clips can be cut as soon as their
scene closes. A model that reads whole videos holds the whole video at its size: that is its contract.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from models.model_interface import SplitWindow
from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.items import END, SplitDone, SplitRequest, VideoItem, put
from orchestrator.pipeline.media.video import Decoder, Frame, VideoError, VideoInput, probe, truncation
from orchestrator.pipeline.pool import StepLogic
from orchestrator.pipeline.split.scenes import FrameWindows, check_scenes

CHUNK_STEPS = 4
"""Window cores of this many model steps (TransNetV2: 4 x 50 frames) per request: few enough requests that
their overhead stays small, short enough that the first clip is cut seconds into a long video."""


def decode_for_split(videos: list[VideoInput], split: StageConfig, window: SplitWindow | None,
                     resumable: Callable[[VideoInput], Any], outq: queue.Queue, stop: threading.Event,
                     strict: bool = False) -> None:
    """For each video: its VideoItem, its split requests, then SplitDone. A video an earlier run finished
    goes on with its rows; one that cannot be read carries its error, and so does a truncated one when
    `strict`. Once a video has failed (a window it could not split), the rest of it is not decoded."""
    for seq, video in enumerate(videos):
        item = VideoItem(seq, video, resumed=resumable(video))
        if item.resumed is None:
            try:
                item.meta = video.meta or probe(video.path)  # read when the run opened it
            except VideoError as exc:
                item.error = str(exc)
        if not put(outq, item, stop):
            return
        if item.needs_work and not _send_requests(item, split.frames.size, window, outq, stop):
            return
        if strict and item.truncated is not None and item.error is None:
            item.error = f"{item.truncated.explain(video.path)} (strict: true fails such a video)"
        if not put(outq, SplitDone(item), stop):
            return
    put(outq, END, stop)


def _send_requests(item: VideoItem, size: tuple[int, int] | None, window: SplitWindow | None,
                   outq: queue.Queue, stop: threading.Event) -> bool:
    """Put the video's split requests until its frames end or it fails; False if stopped."""
    try:
        for request in _requests(item, size, window):
            if item.error is not None:  # a window failed: the windows after it are of no use
                return True
            if not put(outq, request, stop):
                return False
    except VideoError as exc:
        item.error = str(exc)
    except MemoryError as exc:
        item.error = f"{item.video.path}: too big to split here ({type(exc).__name__}: {exc})"
    return True


def _requests(item: VideoItem, size: tuple[int, int] | None, window: SplitWindow | None) -> Iterator[SplitRequest]:
    decoder = Decoder(item.video.path, size)
    frames = _one_size(decoder, item.video.path)
    if window is None:
        whole = np.stack(list(frames))
        _decoded(item, decoder)
        yield SplitRequest(item, 0, whole, len(whole), whole=True)
        return
    windows = FrameWindows(frames, window, CHUNK_STEPS)
    for core_start, frames_window in windows:
        core = len(frames_window) - 2 * window.context
        yield SplitRequest(item, core_start, frames_window, min(core, windows.n_frames - core_start))
    _decoded(item, decoder)


def _one_size(frames: Iterable[Frame], path: Path) -> Iterator[np.ndarray]:
    """The frames' images, which windows (arrays) need all of one size: a VideoError where the size changes."""
    first: tuple[int, ...] | None = None
    for index, frame in enumerate(frames):
        first = first or frame.image.shape
        if frame.image.shape != first:
            (height, width), (new_height, new_width) = first[:2], frame.image.shape[:2]
            raise VideoError(f"{path}: the frame size changes from {width}x{height} to {new_width}x{new_height} at "
                             f"frame {index}; give the split stage frames: {{size: [{width}, {height}]}}, or "
                             f"re-encode the video at one size")
        yield frame.image


def _decoded(item: VideoItem, decoder: Decoder) -> None:
    """Record how much of the video decoded, and whether that is less than its container declares."""
    item.n_frames = decoder.frames_read
    if item.meta is not None:
        item.truncated = truncation(item.meta, decoder.frames_read, decoder.end_s)


class SplitLogic(StepLogic):
    """A window in, the transition flag of each core frame out (or, reading whole videos, `scenes`)."""

    def __init__(self, stage: StageConfig, window: SplitWindow | None) -> None:
        self.stage = stage
        self.context = window.context if window else 0
        self._failed: set[int] = set()
        """Videos (by seq) with a window this stage failed: their later windows are of no use. A video the
        decode fails later still has the windows read before answered, whatever the timing."""

    def wants(self, item: Any) -> bool:
        return isinstance(item, SplitRequest) and item.video.seq not in self._failed

    def payload(self, item: SplitRequest) -> Any:
        return {"frames": item.frames}

    def absorb(self, item: SplitRequest, result: Any) -> None:
        frames, item.frames = item.frames, None
        n = 0 if frames is None else len(frames)
        try:
            if item.whole:
                scenes = result.get("scenes") if isinstance(result, dict) else None
                item.scenes = check_scenes(scenes, n)
            else:
                item.transitions = self._transitions(result, n - 2 * self.context)
        except ValueError as exc:
            self.fail(item, f"model {self.stage.split} returned an unusable split: {exc}")

    @staticmethod
    def _transitions(result: Any, core: int) -> np.ndarray:
        flags = result.get("transitions") if isinstance(result, dict) else None
        if not isinstance(flags, np.ndarray) or flags.dtype != np.bool_ or flags.shape != (core,):
            got = f"{flags.dtype} {flags.shape}" if isinstance(flags, np.ndarray) else type(flags).__name__
            raise ValueError(f"'transitions' must be a bool array of one flag per core frame ({core},), got {got}")
        return flags

    def fail(self, item: SplitRequest, reason: str) -> None:
        item.frames = None
        self._failed.add(item.video.seq)
        if item.video.error is None:
            item.video.error = f"stage {self.stage.name!r}: {reason}"
