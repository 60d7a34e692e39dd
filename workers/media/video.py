"""Decode videos with PyAV and encode clips: what a media worker does with pixels.

Decode problems become a `VideoError` with one line naming the file; a full disk while encoding becomes
`DiskFull`. Both are plain exceptions: this module runs in the media worker, which imports no orchestrator.
"""

from __future__ import annotations

import collections
import contextlib
import errno
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.codec.hwaccel import HWAccel
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from workers.media.s3 import READ_AHEAD, BlockCache, ObjectError, ObjectReader, ObjectStat, is_s3

HW_DEVICE = "cuda"
HW_ENCODERS = {"libx264": "h264_nvenc"}
"""The NVENC encoder that takes over each CPU encoder, where the run uses the GPU's video engines."""


class VideoError(Exception):
    """A video that cannot be read: missing, corrupt, truncated, without a video stream or without frames."""


class DiskFull(OSError):
    """The clip's folder has no space left: the run cannot go on."""


def open_video(path: Path | str, hardware: bool = False, cache: BlockCache | None = None,
               block_size: int = READ_AHEAD, version: ObjectStat | None = None) -> av.container.InputContainer:
    """`path` (a file, or an s3:// object read in place in blocks of `block_size`, through `cache`; `version`:
    its size and ETag where the caller has them, else asked for) opened for reading (decoded on the GPU's
    NVDEC with `hardware`, on the CPU where it cannot take the stream), or a VideoError saying in one line
    why not."""
    hwaccel = HWAccel(HW_DEVICE, allow_software_fallback=True) if hardware else None
    try:
        source = ObjectReader(path, block_size, version, cache) if is_s3(path) else str(path)
        container = av.open(source, hwaccel=hwaccel)
    except ObjectError as exc:
        raise VideoError(str(exc)) from None
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


def location(text: str) -> Path | str:
    """What a request names as its video: an s3:// URL as it is, anything else as a local path."""
    return text if is_s3(text) else Path(text)


def frame_size(value: object) -> tuple[int, int] | None:
    """A (width, height) a request names, or None for the frames' own size."""
    if value is None:
        return None
    width, height = value  # type: ignore[misc]
    return int(width), int(height)


def average_rate(stream: av.video.stream.VideoStream) -> Fraction:
    return stream.average_rate or stream.guessed_rate or Fraction(25)


@dataclass(frozen=True)
class Frame:
    """A decoded frame as FFmpeg holds it, and when it is shown."""

    av_frame: av.VideoFrame
    pts: int
    """When it is shown, in its video's `time_base`, counted from the first frame; always later than the
    frame before (a missing or repeated timestamp becomes the previous one plus one average frame)."""
    time_base: Fraction

    @property
    def time_s(self) -> float:
        return float(self.pts * self.time_base)

    @property
    def size(self) -> tuple[int, int]:
        return self.av_frame.width, self.av_frame.height


class Decoder:
    """A video's frames in order with their own timestamps, decoded on `threads` FFmpeg threads. Read it once.

    `rgb` converts a frame (optionally resized by FFmpeg's bilinear scaler) with one scaler for the whole
    video: `frame.to_ndarray(...)` would build a new one for every frame, which at 48x27 from 720p cost more
    than decoding the frame (see bench/decode.py); the pixels are the same either way."""

    def __init__(self, path: Path | str, threads: int | None = None, hardware: bool = False,
                 cache: BlockCache | None = None) -> None:
        self.path, self.threads, self.hardware, self.cache = path, threads, hardware, cache
        self.frames_read = 0
        self.damaged = False
        """The decode stopped at a packet FFmpeg found invalid."""
        self.end_pts = 0
        """Where the last frame read stops being shown: its timestamp plus its duration (one average frame
        when the container gives none)."""
        self.time_base = Fraction(1, 90000)
        self._first_pts: int | None = None
        self._last_pts = 0
        self._scaler = VideoReformatter()

    @property
    def end_s(self) -> float:
        return float(self.end_pts * self.time_base)

    def rgb(self, frame: Frame, size: tuple[int, int] | None = None) -> np.ndarray:
        """The frame as an (H, W, 3) uint8 array, at `size` (width, height) when given."""
        width, height = size or (None, None)
        return self._scaler.reformat(frame.av_frame, width=width, height=height, format="rgb24",
                                     interpolation="BILINEAR").to_ndarray()

    def __iter__(self) -> Iterator[Frame]:
        container = open_video(self.path, self.hardware, self.cache)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if self.threads:
                stream.thread_count = self.threads
            self.time_base = stream.time_base or self.time_base
            step = max(1, round(1 / (average_rate(stream) * self.time_base)))
            for frame in self._decoded(container, stream):
                pts = self._pts(frame.pts, step)
                self.end_pts = pts + (frame.duration or step)
                self.frames_read += 1
                yield Frame(frame, pts, self.time_base)
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: corrupt or truncated after frame {self.frames_read} ({exc})") from None
        except ObjectError as exc:  # the store failed a read mid-video
            raise VideoError(f"{exc} (after frame {self.frames_read})") from None
        finally:
            container.close()
        if self.frames_read == 0:
            raise VideoError(f"{self.path}: has no decodable frames")

    def _decoded(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 ) -> Iterator[av.VideoFrame]:
        """The stream's frames up to the first packet FFmpeg finds invalid: a file cut off mid-packet, or damaged
        mid-stream, keeps what decoded before the damage, whatever the decoder's thread count (frame threads
        would hide some damage and not other), and shows as truncated against what its container declares."""
        for packet in container.demux(stream):
            try:
                frames = stream.decode(packet)
            except av.error.InvalidDataError:
                self.damaged = True
                return
            yield from frames

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
    """A video's RGB images, resized to `size` when given, for readers that need no timestamps."""
    decoder = Decoder(path)
    frames = iter(decoder)
    try:
        for frame in frames:
            yield decoder.rgb(frame, size)
    finally:
        frames.close()  # type: ignore[attr-defined]


class ClipEncoder:
    """Writes one clip as H.264 mp4 with its source frames' timestamps, so it lasts as long as its scene
    whatever the source's frame rate does; dimensions are trimmed to even numbers, as yuv420p needs. A full
    disk raises DiskFull (the run cannot go on), and an encoder whose write failed is closed without
    flushing: FFmpeg must not be asked to write through a muxer that already failed.

    mp4 takes a clip's length both from where its frames stop being shown and from where its last packet
    in decode order ends, and guesses a missing duration from the average rate. So every packet carries its
    frame's duration (until the next frame; the last frame's until the clip's end), and the last packet in
    decode order (with B-frames, not the last frame shown) reaches to the clip's end."""

    def __init__(self, path: Path, time_base: Fraction, fps: float, width: int, height: int,
                 codec: str = "libx264", threads: int | None = None, hardware: bool = False) -> None:
        codec = HW_ENCODERS.get(codec, codec) if hardware else codec
        self.path = path
        self.width, self.height = width - width % 2, height - height % 2
        self.frames = 0
        self._failed = False
        with self._guard():
            self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, "yuv420p"
        self._stream.codec_context.time_base = self._stream.time_base = time_base
        if threads:
            self._stream.codec_context.thread_count = threads
        self._scaler = VideoReformatter()
        self._last_pts: int | None = None
        self._durations: dict[int, int] = {}
        """Duration of each frame written whose packet has not been muxed, by its timestamp."""
        self._waiting: collections.deque[av.Packet] = collections.deque()
        """Packets, in decode order, from the first whose frame's duration is not known yet."""
        self._first_dts: int | None = None
        self._end: int | None = None

    def write_frame(self, source: av.VideoFrame, pts: int) -> None:
        """Add a decoded frame shown at `pts`, converted straight to the clip's size and yuv420p (no RGB)."""
        frame = self._scaler.reformat(source, width=self.width, height=self.height, format="yuv420p",
                                      interpolation="BILINEAR")
        frame.pict_type = PictureType.NONE  # the encoder picks each frame's type, not the source's encoder
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
                raise DiskFull(exc.errno, f"{self.path.parent}: no space left on device; free some space and "
                                          f"rerun the same command to resume") from None
            raise
        except BaseException:
            self._failed = True
            raise
