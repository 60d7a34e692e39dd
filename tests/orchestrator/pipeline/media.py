"""Test videos made with PyAV: shots of flat colours, with chosen timestamps, sizes and damage."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

Colour = tuple[int, int, int]


def write_shots(path: Path, shots: Sequence[tuple[int, Colour]], size: tuple[int, int] = (64, 48),
                pts: Sequence[int] | None = None, time_base: Fraction = Fraction(1, 24), fmt: str | None = None,
                first_pts: int = 0, options: dict[str, str] | None = None) -> list[Colour]:
    """An H.264 video of `shots` (frame count, colour, under a fine moving grain); `pts` gives each frame's
    timestamp in `time_base` (default: one per frame from `first_pts`). Returns each frame's colour."""
    colours = [colour for n, colour in shots for _ in range(n)]
    stamps = list(pts) if pts is not None else [first_pts + i for i in range(len(colours))]
    width, height = size
    grain = np.random.default_rng(0).integers(-12, 13, (height, width * 2, 3))
    with av.open(str(path), mode="w", format=fmt, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = stream.time_base = time_base
        for index, (colour, stamp) in enumerate(zip(colours, stamps, strict=True)):
            shift = index % width  # moving grain, so every frame costs bytes as a real one does
            rgb = np.clip(np.asarray(colour) + grain[:, shift: shift + width], 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = stamp, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return colours


def write_resizing(path: Path, first: Sequence[tuple[int, Colour]], second: Sequence[tuple[int, Colour]],
                   sizes: tuple[tuple[int, int], tuple[int, int]]) -> None:
    """An MPEG-TS video whose frame size changes mid-stream: two streams of different sizes, one after the
    other in time, joined byte for byte (MPEG-TS allows it; a decoder sees one stream that changes size)."""
    one, two = path.with_suffix(".one.ts"), path.with_suffix(".two.ts")
    tick = Fraction(1, 90000)
    write_shots(one, first, sizes[0], fmt="mpegts", time_base=tick,
                pts=[i * 3750 for i in range(sum(n for n, _ in first))])
    offset = sum(n for n, _ in first)
    write_shots(two, second, sizes[1], fmt="mpegts", time_base=tick,
                pts=[(offset + i) * 3750 for i in range(sum(n for n, _ in second))])
    path.write_bytes(one.read_bytes() + two.read_bytes())
    one.unlink()
    two.unlink()


def truncate(path: Path, target: Path, fraction: float) -> None:
    """The first `fraction` of `path`'s bytes, as a download cut off there would leave it."""
    data = path.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
