"""What flows between pipeline steps, in input order.

    decode ─▶ VideoItem, SplitRequest*, SplitDone ─▶ split pool (answers each SplitRequest)
    cut    ─▶ VideoItem, Clip*, VideoDone        ─▶ clip stages ─▶ writer
"""

from __future__ import annotations

import queue
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestrator.pipeline.media.video import Truncation, VideoInput, VideoMeta
from workers.shared_frames import SharedFramesDir


@dataclass
class VideoItem:
    """A video on its way through the steps: it heads its split requests, then its clips."""

    seq: int
    video: VideoInput
    meta: VideoMeta | None = None
    n_frames: int = 0
    """Frames the split stage's decode read, set once it has read them all (by `SplitDone`)."""
    error: str | None = None
    resumed: list[dict[str, Any]] | None = None
    """Rows an earlier run wrote for this video: it goes straight to the writer, unprocessed."""
    truncated: Truncation | None = None
    """Set with `n_frames` when the decode fell short of what the container declares."""
    ended: bool = False
    """The decode step has read to the video's end (`n_frames` is final): no more windows are planned."""

    @property
    def needs_work(self) -> bool:
        return self.error is None and self.resumed is None

    @property
    def decoded_here(self) -> bool:
        """Its frames are read in this run (it opened, and no earlier run finished it). Unlike `error`, which
        a later window or the rest of the decode may set, this is settled before any of its windows leaves."""
        return self.meta is not None and self.resumed is None

    @property
    def notes(self) -> dict[str, Any]:
        """What every row of this video says about the video itself."""
        return {"truncated": asdict(self.truncated)} if self.truncated else {}


@dataclass
class SplitRequest:
    """A window of a video for the split stage (context, core, context), or the whole of it for a model that
    reads a video at once. The decode step fills in its frames (shared, by name) and how many of its core
    frames are the video's; the split stage's answer is stored on it: the core's transition flags, or
    whole `scenes`."""

    video: VideoItem
    core_start: int
    frames: Any
    """The window's frames once decoded: `SharedFrames` (or an array); None before, or past the video's end."""
    real: int
    """Frames of the core that are the video's own; the rest is padding after its last frame."""
    whole: bool = False
    core: int | None = None
    """Core frames asked for; None: up to the video's end."""
    step: int = 1
    context: int = 0
    transitions: np.ndarray | None = None
    scenes: list[tuple[int, int]] | None = None


@dataclass
class SplitDone:
    """Every split request of a video has gone before; `video.n_frames` (or `video.error`) is final."""

    video: VideoItem


@dataclass
class VideoDone:
    """Closes a video: every clip of it has gone before."""

    video: VideoItem


@dataclass
class Clip:
    """One clip of a video with what each stage found; frames per stage are dropped once used."""

    video: VideoItem
    index: int
    start: int
    end: int
    frames: dict[str, Any] = field(default_factory=dict)
    """Each clip stage's sampled frames: `SharedFrames` a media worker left (an array when read here)."""
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    filtered_by: list[str] = field(default_factory=list)
    encoded: Any = None
    """The clip's encoded file awaiting keep (moved into clips/) or drop."""
    encode_to: Any = None
    """Where its file is to be encoded (a path in the output folder's temporary folder)."""
    times: tuple[float, float] | None = None
    """When its first frame is shown and when its last stops being shown (where the next frame starts), in
    seconds from the video's first frame, by the frames' own timestamps; set as its frames are decoded."""

    @property
    def start_s(self) -> float | None:
        return round(self.times[0], 3) if self.times else self._at_average_rate(self.start)

    @property
    def end_s(self) -> float | None:
        return round(self.times[1], 3) if self.times else self._at_average_rate(self.end + 1)

    @property
    def duration_s(self) -> float:
        """How long the clip is shown: by its frames' timestamps once decoded, else at the average rate."""
        if self.times:
            return self.times[1] - self.times[0]
        return (self.end - self.start + 1) / (self.video.meta.fps if self.video.meta else 1.0)

    def _at_average_rate(self, frame: int) -> float | None:
        """A frame's time estimated from the average rate, for a clip whose frames never decoded."""
        fps = self.video.meta.fps if self.video.meta else 0.0
        return round(frame / fps, 3) if fps else None

    def release_frames(self, frames: SharedFramesDir) -> None:
        """Free whatever shared frames the clip still holds (its stages are done with it, or it failed)."""
        for value in self.frames.values():
            frames.drop(value)
        self.frames.clear()

    @property
    def active(self) -> bool:
        """Still worth running models on: not filtered out and no stage failed."""
        return not self.filtered_by and not self.errors


END = object()
"""Closes a queue: every step passes it on after its last item."""


def put(outq: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put with backpressure that still notices a stop (so no step blocks on a consumer that has gone);
    False if stopped."""
    while not stop.is_set():
        try:
            outq.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
