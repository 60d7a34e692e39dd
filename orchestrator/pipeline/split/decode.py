"""The split stage's side of a video: plan its windows, have a media worker decode each (the `decode` step),
hand them to the model, and check what the model answers.

    video ─▶ plan_split: VideoItem, SplitRequest (core start, core length)*, SplitDone   (no pixels)
          ─▶ decode step (media worker): the window's frames, at the split size, in shared memory
          ─▶ split pool: SplitLogic sends the frames' name to the model, reads its transitions (or scenes)

Windows are planned one after another, ahead of the decode by no more than the channels between them hold,
until the decode step reports the video's end (a media worker pads the last ones exactly as one pass over
the video would); the few planned past the end get no frames. So no container's declaration is trusted,
and streaming keeps one window in memory per video whatever its length; clips are cut as soon as their
scene closes. A model that reads whole videos gets one request of every frame at its size: that is its
contract.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from models.model_interface import SplitWindow
from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.items import END, SplitDone, SplitRequest, VideoItem, put
from orchestrator.pipeline.media.feed import InputFeed, follow
from orchestrator.pipeline.media.video import VideoError, VideoInput, probe
from orchestrator.pipeline.pool import StepLogic
from orchestrator.pipeline.split.scenes import check_scenes
from workers.shared_frames import SharedFramesDir

CHUNK_STEPS = 4
"""Window cores of this many model steps (TransNetV2: 4 x 50 frames) per request: few enough requests that
their overhead stays small, short enough that the first clip is cut seconds into a long video."""


def plan_split(videos: Sequence[VideoInput] | InputFeed, window: SplitWindow | None,
               resumable: Callable[[VideoInput], Any], outq: queue.Queue, stop: threading.Event,
               planned: Callable[[VideoItem], None] = lambda item: None) -> None:
    """For each video (as the feed opens it): its VideoItem, its split requests, then SplitDone. A video an
    earlier run finished goes on with its rows; one that cannot be read carries its error. `planned` hears of
    each VideoItem before it is sent on."""
    for seq, video in enumerate(follow(videos, stop)):
        item = VideoItem(seq, video, resumed=resumable(video))
        if item.resumed is None:
            try:
                item.meta = video.meta or probe(video.local or video.path)  # read when the run opened it
            except VideoError as exc:
                item.error = str(exc)
        planned(item)
        if not put(outq, item, stop):
            return
        for request in (split_requests(item, window) if item.needs_work else []):
            if not put(outq, request, stop):
                return
            if planned_enough(item, request):
                break
        if not put(outq, SplitDone(item), stop):
            return
    put(outq, END, stop)


def planned_enough(item: VideoItem, last: SplitRequest) -> bool:
    """Whether the video needs no window after `last`: it failed, or the decode step has read to its end
    and `last`'s core reaches it (a core can end where the frames do while its context runs past them)."""
    return item.error is not None or (item.ended and last.core_start + (last.core or 0) >= item.n_frames)


def split_requests(item: VideoItem, window: SplitWindow | None) -> Iterator[SplitRequest]:
    """A video's windows, one after another until the caller stops (once the decode step has read to the
    video's end: windows asked for past it get no frames); for a model that reads whole videos, one."""
    if window is None:
        yield SplitRequest(item, 0, None, 0, whole=True, core=None, step=1, context=0)
        return
    core = window.step * CHUNK_STEPS
    for start in itertools.count(0, core):
        yield SplitRequest(item, start, None, 0, core=core, step=window.step, context=window.context)


class SplitLogic(StepLogic):
    """A window in, the transition flag of each core frame out (or, reading whole videos, `scenes`)."""

    def __init__(self, stage: StageConfig, window: SplitWindow | None, frames: SharedFramesDir) -> None:
        self.stage = stage
        self.frames = frames
        self.context = window.context if window else 0
        self._failed: set[int] = set()
        """Videos (by seq) with a window this stage failed: their later windows are of no use. A video the
        decode fails later still has the windows read before answered, whatever the timing."""

    def wants(self, item: Any) -> bool:
        if isinstance(item, SplitRequest) and item.video.seq in self._failed:
            self.frames.drop(item.frames)  # decoded before the stage failed an earlier window
            item.frames = None
        return isinstance(item, SplitRequest) and item.frames is not None

    def payload(self, item: SplitRequest) -> Any:
        return {"frames": item.frames}

    def node_of(self, item: SplitRequest) -> str | None:
        return getattr(item.frames, "node", None)  # frames in a cluster's object store

    def absorb(self, item: SplitRequest, result: Any) -> None:
        frames, item.frames = item.frames, None
        self.frames.drop(frames)
        n = 0 if frames is None else frames.shape[0]
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
        self.frames.drop(item.frames)
        item.frames = None
        self._failed.add(item.video.seq)
        if item.video.error is None:
            item.video.error = f"stage {self.stage.name!r}: {reason}"
