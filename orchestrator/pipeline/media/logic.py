"""What the pools of the media steps send to media workers and keep of their answers.

Shared frames are named by the video's place in the run and what they hold (`<seq>.split.<core start>`,
`<seq>.<clip>.<stage>`), so a retry rewrites the same file. Every request is keyed by its video
(`affinity`), so a video's requests go to the worker already reading it, in order, and each is served by
decoding on from where the last stopped. Answers carry names of shared frames, never pixels; a video a
worker cannot read fails alone, with the worker's one-line reason, and a full disk stops the run.
"""

from __future__ import annotations

import abc
from typing import Any

from orchestrator.errors import OutputFull
from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.items import Clip, SplitRequest
from orchestrator.pipeline.media.video import sample_indices, truncation
from orchestrator.pipeline.pool import StepLogic
from workers.shared_frames import SharedFramesDir


def _checked(answer: Any) -> dict[str, Any]:
    """A media worker's answer, or OutputFull when it ran out of disk."""
    if not isinstance(answer, dict):
        raise ValueError(f"a media worker answered {type(answer).__name__}")
    if answer.get("disk_full"):
        raise OutputFull(str(answer.get("error")))
    return answer


class SplitDecodeLogic(StepLogic):
    """A split request in, its window's frames (decoded at the split stage's size) named on it."""

    def __init__(self, split: StageConfig, strict: bool, frames: SharedFramesDir) -> None:
        self.size = split.frames.size
        self.strict = strict
        self.frames = frames

    def wants(self, item: Any) -> bool:
        return isinstance(item, SplitRequest) and item.video.error is None

    def affinity(self, item: SplitRequest) -> int:
        return item.video.seq

    def payload(self, item: SplitRequest) -> dict[str, Any]:
        video = item.video.video
        return {"op": "split", "path": video.source, "size": self.size, "core_start": item.core_start,
                "core": item.core, "step": item.step, "context": item.context,
                "name": self._name(item)}

    @staticmethod
    def _name(item: SplitRequest) -> str:
        return f"{item.video.seq}.split.{item.core_start}"

    def absorb(self, item: SplitRequest, result: Any) -> None:
        answer = _checked(result)
        if answer.get("error"):
            self.fail(item, answer["error"])
            return
        item.frames, item.real = answer.get("frames"), answer["real"]
        if answer.get("ended"):
            self._ended(item, answer["n_frames"], answer["end_s"])

    def _ended(self, item: SplitRequest, n_frames: int, end_s: float) -> None:
        """Record how much of the video decoded, and whether that is less than its container declares."""
        video = item.video
        video.n_frames, video.ended = n_frames, True
        if video.meta is not None:
            video.truncated = truncation(video.meta, n_frames, end_s)
        if self.strict and video.truncated is not None and video.error is None:
            video.error = f"{video.truncated.explain(video.video.path)} (strict: true fails such a video)"

    def fail(self, item: SplitRequest, reason: str) -> None:
        self.frames.forget(self._name(item))  # a worker that died answering may have left it
        if item.video.error is None:
            item.video.error = reason


class _ClipsOfVideos(StepLogic):
    """A step over a video's clips in order: once one clip cannot be read (or kills its worker each time),
    every later clip of that video fails with the same reason instead of being tried again."""

    error_key = ""
    """The stage name a failure is recorded under in the clip's errors."""

    def __init__(self) -> None:
        self._broken: dict[int, str] = {}
        """Why each video whose reading broke did, by its seq."""

    def wants(self, item: Any) -> bool:
        if not isinstance(item, Clip) or not self.takes(item):
            return False
        if (reason := self._broken.get(item.video.seq)) is not None:
            item.errors[self.error_key] = reason
            return False
        return True

    @abc.abstractmethod
    def takes(self, item: Clip) -> bool:
        """Whether this step has work for the clip (its video aside)."""

    def affinity(self, item: Clip) -> int:
        return item.video.seq

    def fail(self, item: Clip, reason: str) -> None:
        item.errors[self.error_key] = reason
        self._broken.setdefault(item.video.seq, reason)


class ClipFramesLogic(_ClipsOfVideos):
    """A clip's bounds in; the frames each clip stage samples (resized for it) named on it, its times, and
    (with `encode: all`) its file."""

    error_key = "decode"

    def __init__(self, stages: list[StageConfig], encode: bool, codec: str, frames: SharedFramesDir) -> None:
        super().__init__()
        self.stages, self.encode, self.codec, self.frames = stages, encode, codec, frames

    def takes(self, item: Clip) -> bool:
        return not item.errors

    def payload(self, item: Clip) -> dict[str, Any]:
        fps = item.video.meta.fps if item.video.meta else 1.0
        samples = {st.name: {"indices": sample_indices(item.start, item.end, fps, st.frames.sampling, st.frames.rate,
                                                       st.frames.max_frames), "size": st.frames.size}
                   for st in self.stages}
        request = {"op": "clip", "path": item.video.video.source, "start": item.start, "end": item.end,
                   "samples": samples, "name": self._name(item)}
        if self.encode:
            request["encode"] = {"out": str(item.encode_to), "codec": self.codec, "fps": fps}
        return request

    def absorb(self, item: Clip, result: Any) -> None:
        answer = _checked(result)
        if answer.get("error"):
            self.fail(item, answer["error"])
            return
        item.frames = dict(answer["frames"])
        item.times = (answer["times"][0], answer["times"][1])
        if answer.get("encoded"):
            item.encoded = item.encode_to

    def fail(self, item: Clip, reason: str) -> None:
        for stage in self.stages:  # a worker that died answering may have left some
            self.frames.forget(f"{self._name(item)}.{stage.name}")
        super().fail(item, reason)

    @staticmethod
    def _name(item: Clip) -> str:
        return f"{item.video.seq}.{item.index:04d}"


class EncodeLogic(_ClipsOfVideos):
    """A clip the filters kept in, its file encoded (from its video, at full size)."""

    error_key = "encode"

    def __init__(self, codec: str) -> None:
        super().__init__()
        self.codec = codec

    def takes(self, item: Clip) -> bool:
        return item.active and item.encoded is None

    def payload(self, item: Clip) -> dict[str, Any]:
        return {"op": "encode", "path": item.video.video.source, "start": item.start, "end": item.end,
                "samples": {}, "name": f"{item.video.seq}.{item.index:04d}",
                "encode": {"out": str(item.encode_to), "codec": self.codec,
                           "fps": item.video.meta.fps if item.video.meta else 1.0}}

    def absorb(self, item: Clip, result: Any) -> None:
        answer = _checked(result)
        if answer.get("error"):
            self.fail(item, answer["error"])
        else:
            item.encoded = item.encode_to

