"""Find input videos, decode them with PyAV, and encode clips; decode problems become one-line errors."""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from orchestrator.errors import OrchestratorError

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"})


class VideoError(OrchestratorError):
    """A video that cannot be read: missing, corrupt, truncated, without a video stream or without frames."""


@dataclass(frozen=True)
class VideoInput:
    """One input video and the id its outputs are named by (its stem, made unique across inputs)."""

    path: Path
    video_id: str


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
    stems = [p.stem for p in unique]
    return [VideoInput(p, _video_id(p, stems)) for p in unique], missing


def _video_id(path: Path, stems: list[str]) -> str:
    if stems.count(path.stem) == 1:
        return path.stem
    return f"{path.stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


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
    """Writes one clip as H.264 mp4; dimensions are trimmed to even numbers, as yuv420p needs."""

    def __init__(self, path: Path, fps: float, width: int, height: int, codec: str = "libx264") -> None:
        self.path = path
        self.width, self.height = width - width % 2, height - height % 2
        self.frames = 0
        self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, "yuv420p"

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format="rgb24")
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()


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
