"""Find input videos, decode them with PyAV, and encode clips; decode problems become one-line errors."""

from __future__ import annotations

import collections
import contextlib
import errno
import glob
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from orchestrator.errors import OrchestratorError, OutputFull

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"})


class VideoError(OrchestratorError):
    """A video that cannot be read: missing, corrupt, truncated, without a video stream or without frames."""


@dataclass(frozen=True)
class VideoInput:
    """One input video and the id its outputs are named by: the same file always gets the same id, whatever
    else a run into the same folder reads. `fingerprint` and `meta` are read when the file is first opened
    (`open_inputs`): the results are recorded under that fingerprint, so a file replaced while the run reads it
    is noticed instead of recorded as the new file."""

    path: Path
    video_id: str
    fingerprint: str = ""
    meta: VideoMeta | None = None
    """What the container declares (rate, size, frames, duration), read when the file was opened."""

    @property
    def frames(self) -> int:
        """Frames the container declares, counted from its duration where it lists none (0: it says neither)."""
        if self.meta is None:
            return 0
        if self.meta.declared_frames:
            return self.meta.declared_frames
        return int(self.meta.declared_s * self.meta.fps) if self.meta.declared_s else 0

    def changed(self) -> bool:
        """Whether the file is no longer the one opened (rewritten, replaced or gone)."""
        try:
            return fingerprint(self.path) != self.fingerprint
        except OSError:
            return True


def expand_inputs(patterns: list[str], base: Path) -> tuple[list[VideoInput], list[tuple[str, str]]]:
    """Files, folders (searched recursively) and globs -> videos in a stable order, plus (input, reason) misses."""
    found: list[Path] = []
    missing: list[tuple[str, str]] = []
    for pattern in patterns:
        target = Path(pattern) if Path(pattern).is_absolute() else base / pattern
        if target.is_dir():
            found += sorted(p for p in target.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        elif target.exists():
            found.append(target)
        elif matches := sorted(glob.glob(str(target), recursive=True)):
            found += [Path(m) for m in matches if Path(m).is_file()]
        else:
            missing.append((pattern, f"no such file, folder or glob match: {target}"))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return [VideoInput(p, video_id(p)) for p in unique], missing


def video_id(path: Path) -> str:
    """`<folder>_<stem>-<hash of the absolute path>`: readable, the same for the same file in every run, and
    different for `cam1/0001.mp4` and `cam2/0001.mp4`."""
    absolute = path.resolve()
    # never a leading dot or underscore: Parquet readers skip such files in the clip table's folder
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{absolute.parent.name}_{absolute.stem}").strip("._")
    return f"{readable}-{hashlib.sha256(str(absolute).encode()).hexdigest()[:8]}"


def fingerprint(path: Path) -> str:
    """Which file a path held when it was opened: the same path, size, modification time and inode give the
    same fingerprint; a file rewritten or replaced gets another."""
    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def open_inputs(videos: list[VideoInput]) -> tuple[list[VideoInput], list[tuple[VideoInput, str]]]:
    """Each video opened once, before any worker starts: the readable ones with their fingerprint and what
    their container declares, and (video, reason) for those that cannot be read."""
    readable: list[VideoInput] = []
    unreadable: list[tuple[VideoInput, str]] = []
    for video in videos:
        try:
            marks = fingerprint(video.path)
            container = _open(video.path)
        except FileNotFoundError:
            unreadable.append((video, f"{video.path}: file not found"))
            continue
        except VideoError as exc:
            unreadable.append((video, str(exc)))
            continue
        try:
            readable.append(replace(video, fingerprint=marks, meta=_declared(container)))
        finally:
            container.close()
    return readable, unreadable


@dataclass(frozen=True)
class VideoMeta:
    fps: float
    """The average rate: what frame sampling counts in; the frames' own timestamps give times."""
    width: int
    height: int
    declared_frames: int | None = None
    """Frames the container's index lists (mp4, mov), when it has one."""
    declared_s: float | None = None
    """Duration the container declares, when it declares one."""


@dataclass(frozen=True)
class Truncation:
    """A video that decoded short of what its container declares: cut off, or damaged on the way."""

    decoded_frames: int
    declared_frames: int | None
    decoded_s: float
    declared_s: float | None

    def explain(self, path: Path) -> str:
        declared = " ".join(part for part in (
            f"{self.declared_frames} frames" if self.declared_frames is not None else "",
            f"({self.declared_s:.3f} s)" if self.declared_s is not None else "") if part)
        return (f"{path}: decoded {self.decoded_frames} frames ({self.decoded_s:.3f} s) of the {declared} its "
                f"container declares: the file is truncated or damaged")


def truncation(meta: VideoMeta, decoded_frames: int, decoded_s: float) -> Truncation | None:
    """What a video's container declares against what decoded, when the decode fell short of it.

    A short frame count is enough (an index lists every frame); a short duration must miss by more than two
    frames, since a last frame's duration is often a guess."""
    short_frames = meta.declared_frames is not None and decoded_frames < meta.declared_frames
    short_s = meta.declared_s is not None and decoded_s < meta.declared_s - 2 / meta.fps
    if not (short_frames or short_s):
        return None
    return Truncation(decoded_frames, meta.declared_frames, round(decoded_s, 3),
                      None if meta.declared_s is None else round(meta.declared_s, 3))


def _open(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except FileNotFoundError:
        raise VideoError(f"{path}: file not found") from None
    except PermissionError:
        raise VideoError(f"{path}: not readable (permission denied)") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: not a readable video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


@dataclass(frozen=True)
class Frame:
    """A decoded RGB frame and when it is shown."""

    image: np.ndarray
    pts: int
    """When it is shown, in its video's `time_base`, counted from the first frame; always later than the
    frame before (a missing or repeated timestamp becomes the previous one plus one average frame)."""
    time_base: Fraction

    @property
    def time_s(self) -> float:
        return float(self.pts * self.time_base)


class Decoder:
    """A video's frames in order with their own timestamps, resized to (width, height) by FFmpeg's scaler
    (bilinear) when `size` is given.

    One scaler serves the whole video: `frame.to_ndarray(...)` would build a new one for every frame,
    which at 48x27 from 720p cost more than decoding the frame (see bench/decode.py); the pixels are the
    same either way. Without `size`, each frame keeps its own (a stream may change size mid-way). Read it
    once."""

    def __init__(self, path: Path, size: tuple[int, int] | None = None) -> None:
        self.path, self.size = path, size
        self.frames_read = 0
        self.end_pts = 0
        """Where the last frame read stops being shown: its timestamp plus its duration (one average frame
        when the container gives none)."""
        self.time_base = Fraction(1, 90000)
        self._first_pts: int | None = None
        self._last_pts = 0

    @property
    def end_s(self) -> float:
        return float(self.end_pts * self.time_base)

    def __iter__(self) -> Iterator[Frame]:
        container = _open(self.path)
        width, height = self.size or (None, None)
        scaler = VideoReformatter()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            self.time_base = stream.time_base or self.time_base
            step = max(1, round(1 / (_average_rate(stream) * self.time_base)))
            for frame in container.decode(stream):
                pts = self._pts(frame.pts, step)
                self.end_pts = pts + (frame.duration or step)
                self.frames_read += 1
                image = scaler.reformat(frame, width=width, height=height, format="rgb24",
                                        interpolation="BILINEAR").to_ndarray()
                yield Frame(image, pts, self.time_base)
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: corrupt or truncated after frame {self.frames_read} ({exc})") from None
        finally:
            container.close()
        if self.frames_read == 0:
            raise VideoError(f"{self.path}: has no decodable frames")

    def _pts(self, source_pts: int | None, step: int) -> int:
        """A frame's timestamp counted from the first frame's, kept increasing (a stream's timestamps may
        be missing, or jump back where two recordings were joined)."""
        if self._first_pts is None:
            self._first_pts, self._last_pts = source_pts or 0, 0
            return 0
        pts = None if source_pts is None else source_pts - self._first_pts
        if pts is None or pts <= self._last_pts:
            pts = self._last_pts + step
        self._last_pts = pts
        return pts


def iter_frames(path: Path, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """The RGB images of `Decoder(path, size)`, for readers that need no timestamps."""
    frames = iter(Decoder(path, size))
    try:
        for frame in frames:
            yield frame.image
    finally:
        frames.close()  # type: ignore[attr-defined]


def _average_rate(stream: av.video.stream.VideoStream) -> Fraction:
    return stream.average_rate or stream.guessed_rate or Fraction(25)


def probe(path: Path) -> VideoMeta:
    container = _open(path)
    try:
        return _declared(container)
    finally:
        container.close()


def _declared(container: av.container.InputContainer) -> VideoMeta:
    stream = container.streams.video[0]
    if stream.duration is not None and stream.time_base is not None:
        declared_s: float | None = float(stream.duration * stream.time_base)
    else:
        declared_s = container.duration / av.time_base if container.duration else None
    return VideoMeta(float(_average_rate(stream)), stream.codec_context.width, stream.codec_context.height,
                     stream.frames or None, declared_s)


class ClipEncoder:
    """Writes one clip as H.264 mp4 with its source frames' timestamps, so it lasts as long as its scene
    whatever the source's frame rate does; dimensions are trimmed to even numbers, as yuv420p needs. A full
    disk raises OutputFull (the run cannot go on), and an encoder whose write failed is closed without
    flushing: FFmpeg must not be asked to write through a muxer that already failed.

    mp4 takes a clip's length both from where its frames stop being shown and from where its last packet
    in decode order ends, and guesses a missing duration from the average rate. So every packet carries its
    frame's duration (until the next frame; the last frame's until the clip's end), and the last packet in
    decode order (with B-frames, not the last frame shown) reaches to the clip's end."""

    def __init__(self, path: Path, time_base: Fraction, fps: float, width: int, height: int,
                 codec: str = "libx264") -> None:
        self.path = path
        self.width, self.height = width - width % 2, height - height % 2
        self.frames = 0
        self._failed = False
        with self._guard():
            self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, "yuv420p"
        self._stream.codec_context.time_base = self._stream.time_base = time_base
        self._last_pts: int | None = None
        self._durations: dict[int, int] = {}
        """Duration of each frame written whose packet has not been muxed, by its timestamp."""
        self._waiting: collections.deque[av.Packet] = collections.deque()
        """Packets, in decode order, from the first whose frame's duration is not known yet."""
        self._first_dts: int | None = None
        self._end: int | None = None

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Add a frame shown at `pts` (in the clip's time base, from its first frame)."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format="rgb24")
        frame.pts, frame.time_base = pts, self._stream.codec_context.time_base
        if self._last_pts is not None:
            self._durations[self._last_pts] = pts - self._last_pts
        self._last_pts = pts
        with self._guard():
            self._mux(self._stream.encode(frame))
        self.frames += 1

    def _mux(self, packets: list[av.Packet], last: bool = False) -> None:
        """Mux, in decode order, each packet whose frame's duration is known; `last`: the encoder is done."""
        self._waiting.extend(packets)
        while self._waiting and self._waiting[0].pts in self._durations:
            packet = self._waiting.popleft()
            packet.duration = self._durations.pop(packet.pts)
            if self._first_dts is None:
                self._first_dts = packet.dts
            if last and not self._waiting and self._end is not None and packet.dts is not None:
                packet.duration = max(packet.duration, self._end - (packet.dts - self._first_dts))
            self._container.mux(packet)

    def close(self, end_pts: int | None = None) -> None:
        """Finish the file; `end_pts` is where the clip ends (where its last frame stops being shown)."""
        if self._failed:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                self._container.close()
            return
        self._end = end_pts
        if end_pts is not None and self._last_pts is not None:
            self._durations[self._last_pts] = max(1, end_pts - self._last_pts)
        with self._guard():
            self._mux(self._stream.encode(None), last=True)
            while self._waiting:  # only when the clip's end is unknown: a failed clip, to be dropped
                self._container.mux(self._waiting.popleft())
            self._container.close()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            self._failed = True
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutputFull(f"{self.path.parent}: no space left on device; free some space and rerun the "
                                 f"same command to resume") from None
            raise
        except BaseException:
            self._failed = True
            raise


def sample_indices(start: int, end: int, fps: float, sampling: str, rate: float,
                   max_frames: int | None = None) -> list[int]:
    """Frame indices (inclusive range start..end) a stage sees for one clip: at most `max_frames`, spread
    evenly over the ones the sampling picks, so a long shot never holds more frames than that."""
    if sampling == "every_frame":
        picked = list(range(start, end + 1))
    elif sampling == "one_per_clip":
        picked = [(start + end) // 2]
    else:
        step = max(fps / rate, 1.0)
        picked = sorted({min(end, start + round(k * step)) for k in range(int((end - start) / step) + 1)})
        picked = picked or [(start + end) // 2]
    if max_frames is None or len(picked) <= max_frames:
        return picked
    if max_frames == 1:
        return [picked[len(picked) // 2]]
    return [picked[round(i * (len(picked) - 1) / (max_frames - 1))] for i in range(max_frames)]
