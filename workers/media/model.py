"""The media worker's model: the pixel work of a run, served like any model stage's requests.

    {"op": "split", path, size, core_start, core, step, context}  ─▶ a split window in shared memory
    {"op": "clip", path, start, end, samples: {stage: {indices, size}}, encode?}
                                                                  ─▶ each stage's sampled frames in shared
                                                                     memory, the clip's times, its file
    {"op": "encode", path, start, end, encode: {out, codec, fps}} ─▶ the clip's file (a clip's read, sampling
                                                                     nothing, kept apart from the "clip" reads)

Each request is whole by itself (a retry on another worker gives the same answer), and a worker keeps
its place in the videos it reads: requests for a video come in order, so each is served by decoding on
from where the last stopped, and only a request behind that place decodes from the start again. Frames
go to `SharedFramesDir` segments named after what they hold, so the orchestrator moves names, never
pixels. A video that cannot be read is answered with `error` (one line), never an exception: the
orchestrator fails that video alone.
"""

from __future__ import annotations

import collections
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from models.model_interface import ModelInterface, SplitWindow
from workers.media.clips import ClipReader, read_clip
from workers.media.s3 import BlockCache
from workers.media.video import Decoder, DiskFull, VideoError, frame_size, location
from workers.media.windows import SplitWindows
from workers.shared_frames import SharedFramesDir, SharedFramesFull
from workers.threads import budget_from_environ

OWN_ENV = "orchestrator"
"""The env media workers run in: the orchestrator's own (it has PyAV), never a model's."""
OBJECT_BLOCKS = "objects"
"""The frames folder's subfolder of cached object blocks (beside the segments, gone with the folder)."""
MAX_READERS = 4
"""Videos a worker keeps its place in at once (open decoders), oldest dropped first."""


def frame_outputs(request: Any) -> int:
    """How many arrays of frames the answer to `request` (or to a batch of them) holds at most: one window
    for a split, one per sampled stage for a clip, none for an encode. What a caller that must say ahead how
    many values a call returns (a Ray actor call) reserves."""
    if isinstance(request, list):
        return sum(frame_outputs(one) for one in request)
    if request.get("op") == "split":
        return 1
    if request.get("op") == "clip":
        return len(request.get("samples") or {})
    return 0


class MediaWorker(ModelInterface):
    """Decodes, cuts, samples and encodes; see the module's docstring for its requests."""

    def __init__(self, frames_dir: str, hardware: bool = False) -> None:
        """`hardware`: decode on NVDEC and encode on NVENC (the orchestrator checked that they open here)."""
        self.frames = SharedFramesDir(Path(frames_dir))
        self.blocks = BlockCache(Path(frames_dir) / OBJECT_BLOCKS)
        """Blocks of s3:// videos this run's media workers fetched, so each is read from the store once."""
        self.hardware = hardware
        self.threads = budget_from_environ()
        """FFmpeg's threads for each decode and encode: the thread budget the parent gave this worker."""
        self._readers: collections.OrderedDict[tuple[str, ...], Any] = collections.OrderedDict()

    @property
    def conda_env_name(self) -> str:
        return OWN_ENV

    def setup(self) -> None:
        """Nothing to load: PyAV is imported with this module."""

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            if request["op"] == "split":
                return self._split(request)
            if request["op"] == "clip":
                return self._clip(request)
            if request["op"] == "encode":
                return self._encode(request)
        except DiskFull as exc:
            return {"error": exc.strerror, "disk_full": True}
        except SharedFramesFull as exc:
            return {"error": str(exc)}
        except VideoError as exc:
            return {"error": str(exc)}
        except MemoryError as exc:
            return {"error": f"{request.get('path')}: too big to decode here ({exc})"}
        raise ValueError(f"unknown media request {request.get('op')!r}")

    def _split(self, request: dict[str, Any]) -> dict[str, Any]:
        path, size = request["path"], frame_size(request.get("size"))
        window = SplitWindow(step=request["step"], context=request["context"])
        key = ("split", path, str(size), str(window))
        reader = self._readers.get(key)
        if reader is None or not reader.serves(request["core_start"]):
            reader = _SplitReader(Decoder(location(path), self.threads, self.hardware, self.blocks), size, window)
        self._keep(key, reader)
        try:
            frames, real = reader.window_frames(request["core_start"], request.get("core"))
        except BaseException:
            self._drop(key)  # its decode stopped where it failed: a retry starts over
            raise
        answer: dict[str, Any] = {"real": real, "ended": reader.ended}
        if frames is not None:
            answer["frames"] = self.frames.write_stack(request["name"], frames)
        if reader.ended:
            answer.update(n_frames=reader.n_read, end_s=reader.decoder.end_s)
        return answer

    def _clip(self, request: dict[str, Any]) -> dict[str, Any]:
        reader = self._reader(("clip", request["path"]), request["start"])
        return read_clip(reader, request, self.frames, self.threads)

    def _encode(self, request: dict[str, Any]) -> dict[str, Any]:
        reader = self._reader(("encode", request["path"]), request["start"])  # a place of its own in the video
        return read_clip(reader, request, self.frames, self.threads)

    def _reader(self, key: tuple[str, str], start: int) -> ClipReader:
        reader = self._readers.get(key)
        if reader is None or reader.position > start:
            reader = ClipReader(location(key[1]), self.threads, self.hardware, self.blocks)
        self._keep(key, reader)
        return reader

    def _drop(self, key: tuple[str, ...]) -> None:
        if (reader := self._readers.pop(key, None)) is not None:
            reader.close()

    def _keep(self, key: tuple[str, ...], reader: Any) -> None:
        """Keep `reader` as the key's (closing one it replaces, behind where it was asked to read), the most
        recently used, within MAX_READERS."""
        if (replaced := self._readers.get(key)) is not None and replaced is not reader:
            replaced.close()
        self._readers[key] = reader
        self._readers.move_to_end(key)
        while len(self._readers) > MAX_READERS:
            _, dropped = self._readers.popitem(last=False)
            dropped.close()


class _SplitReader(SplitWindows):
    """A video's split windows at one size, with the decoder that reads them (its end time, once ended)."""

    def __init__(self, decoder: Decoder, size: tuple[int, int] | None, window: SplitWindow) -> None:
        self.decoder = decoder
        self._frames = _one_size(decoder, size)
        super().__init__(self._frames, window)

    def close(self) -> None:
        self._frames.close()


def _one_size(decoder: Decoder, size: tuple[int, int] | None) -> Generator[np.ndarray, None, None]:
    """The frames at `size`, which windows (arrays) need all of one size: a VideoError where it changes."""
    first: tuple[int, int] | None = None
    for index, frame in enumerate(decoder):
        first = first or frame.size
        if size is None and frame.size != first:
            (width, height), (new_width, new_height) = first, frame.size
            raise VideoError(f"{decoder.path}: the frame size changes from {width}x{height} to {new_width}x"
                             f"{new_height} at frame {index}; give the split stage frames: {{size: [{width}, "
                             f"{height}]}}, or re-encode the video at one size")
        yield decoder.rgb(frame, size)
