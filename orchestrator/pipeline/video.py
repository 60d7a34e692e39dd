"""Find input videos, decode them with PyAV, and encode clips; decode problems become one-line errors."""

from __future__ import annotations

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
    else a run into the same folder reads. `fingerprint` and `frames` are set when the file is first opened
    (`open_inputs`): the results are recorded under that fingerprint, so a file replaced while the run reads it
    is noticed instead of recorded as the new file."""

    path: Path
    video_id: str
    fingerprint: str = ""
    frames: int = 0
    """Frames the container declares (0 when it does not say)."""

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
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{absolute.parent.name}_{absolute.stem}").strip("_")
    return f"{readable}-{hashlib.sha256(str(absolute).encode()).hexdigest()[:8]}"


def fingerprint(path: Path) -> str:
    """Which file a path held when it was opened: the same path, size, modification time and inode give the
    same fingerprint; a file rewritten or replaced gets another."""
    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def open_inputs(videos: list[VideoInput]) -> tuple[list[VideoInput], list[tuple[VideoInput, str]]]:
    """Each video opened once, before any worker starts: the readable ones with their fingerprint and declared
    frame count, and (video, reason) for those that cannot be read."""
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
            readable.append(replace(video, fingerprint=marks, frames=_declared_frames(container)))
        finally:
            container.close()
    return readable, unreadable


def _declared_frames(container: av.container.InputContainer) -> int:
    stream = container.streams.video[0]
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return int(stream.duration * stream.time_base * rate)
    return 0


@dataclass(frozen=True)
class VideoMeta:
    fps: float
    width: int
    height: int


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


def iter_frames(path: Path, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """RGB frames in order, resized to (width, height) by FFmpeg's scaler (bilinear) when `size` is given.

    One scaler serves the whole video: `frame.to_ndarray(...)` would build a new one for every frame,
    which at 48x27 from 720p cost more than decoding the frame (see bench/decode.py); the pixels are the
    same either way."""
    container = _open(path)
    count = 0
    width, height = size or (None, None)
    scaler = VideoReformatter()
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield scaler.reformat(frame, width=width, height=height, format="rgb24",
                                  interpolation="BILINEAR").to_ndarray()
            count += 1
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: corrupt or truncated after frame {count} ({exc})") from None
    finally:
        container.close()
    if count == 0:
        raise VideoError(f"{path}: has no decodable frames")


def probe(path: Path) -> VideoMeta:
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        return VideoMeta(float(rate), stream.codec_context.width, stream.codec_context.height)
    finally:
        container.close()


class ClipEncoder:
    """Writes one clip as H.264 mp4; dimensions are trimmed to even numbers, as yuv420p needs. A full disk
    raises OutputFull (the run cannot go on), and an encoder whose write failed is closed without flushing:
    FFmpeg must not be asked to write through a muxer that already failed."""

    def __init__(self, path: Path, fps: float, width: int, height: int, codec: str = "libx264") -> None:
        self.path = path
        self.width, self.height = width - width % 2, height - height % 2
        self.frames = 0
        self._failed = False
        with self._guard():
            self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, "yuv420p"

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format="rgb24")
        with self._guard():
            self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if self._failed:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                self._container.close()
            return
        with self._guard():
            self._container.mux(self._stream.encode(None))
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
