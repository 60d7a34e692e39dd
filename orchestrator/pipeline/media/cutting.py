"""Cut a video into clips as the split stage's answers arrive: each clip leaves as soon as its scene closes.

    VideoItem, SplitRequest (answered)*, SplitDone ──▶ VideoItem, Clip*, VideoDone
                         │ transitions ─▶ SceneStitcher ─▶ closed scenes ─▶ Clip (its frame range)

A clip leaves with its bounds only: the `cut` media step reads its frames (and the step after the filters
encodes it), so this thread never touches a pixel.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from orchestrator.pipeline.items import END, Clip, SplitDone, SplitRequest, VideoDone, VideoItem, put
from orchestrator.pipeline.split.scenes import Scene, SceneStitcher


class VideoCutter:
    """One video's clips, in order, from its scenes as they close."""

    def __init__(self, video: VideoItem, clips_tmp: Path | str | None) -> None:
        self.video, self.clips_tmp = video, clips_tmp
        self.stitcher = SceneStitcher()
        self._clips = 0
        self._split_failed = False
        """A window went unanswered: the scenes after it cannot be known, so no more clips are cut."""

    def answered(self, request: SplitRequest) -> list[Clip]:
        """The clips whose scenes this answer closes; none from a window the split failed on, or after it."""
        if request.real == 0 and self.video.error is None:
            return []  # planned past where the video turned out to end: nothing to split
        if request.scenes is None and request.transitions is None:
            self._split_failed = True
        if self._split_failed:
            return []
        if request.scenes is not None:
            return [self._clip(scene) for scene in request.scenes]
        return [self._clip(scene) for scene in self.stitcher.feed(request.transitions[: request.real])]

    def finish(self) -> list[Clip]:
        """The clips of the scenes still open at the video's end (none if its split failed)."""
        if self._split_failed or self.video.error is not None or self.stitcher.frames_fed != self.video.n_frames:
            return []
        return [self._clip(scene) for scene in self.stitcher.finish(self.video.n_frames)]

    def _clip(self, scene: Scene) -> Clip:
        clip = Clip(self.video, self._clips, *scene)
        if self.clips_tmp is not None:
            name = f"{self.video.video.video_id}_{clip.index:04d}.mp4"
            clip.encode_to = (f"{self.clips_tmp}{name}" if isinstance(self.clips_tmp, str)  # an s3:// prefix
                              else self.clips_tmp / name)
        self._clips += 1
        return clip


def cut_clips(clips_tmp: Path | str | None, inq: queue.Queue, outq: queue.Queue, stop: threading.Event) -> None:
    """The step between the split pool and the `cut` media step: VideoItem, its clips as they close,
    VideoDone. `clips_tmp`: where clip files are encoded (None: no clip files)."""
    cutter: VideoCutter | None = None
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
            cutter = VideoCutter(item, clips_tmp) if item.decoded_here else None
            out = [item]
        elif isinstance(item, SplitRequest) and cutter is not None:
            out = list(cutter.answered(item))
        elif isinstance(item, SplitDone):
            out = [*(cutter.finish() if cutter is not None else []), VideoDone(item.video)]
            cutter = None
        for each in out:
            if not put(outq, each, stop):
                return
