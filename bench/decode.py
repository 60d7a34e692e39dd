"""What the parent spends per decoded frame, against PyAV's bare decode measured in the same run.

    generated input (320x240 and 1280x720, 24 fps, H.264)
        ├─▶ PyAV decode, frames only: default threading, then frame+slice threads  ─▶ frames/s (the floor)
        ├─▶ the same + to_ndarray(format="rgb24")                                   ─▶ frames/s (full-size peer)
        └─▶ workers.media.video.iter_frames at full size and at 48x27      ─▶ frames/s

The pipeline decodes every video twice: at the split model's size (48x27 for TransNetV2), then at full
size to cut clips. `RATIO` lines give ours over the bare peer (1.00: the parent adds nothing to what
decoding needs; the CPU-time ratio in brackets is steadier on a busy machine). The rgb24 peer is PyAV's
plain `frame.to_ndarray`, which builds a new scaler for every frame; ours keeps one per video, so it can
beat that peer. Each figure is the best of `--repeats` passes over the whole file.

    .venv/bin/python bench/decode.py [--seconds 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import av

from orchestrator.sample_video import SampleSpec, generate_sample
from workers.media.video import iter_frames

FPS = 24
SIZES = ((320, 240), (1280, 720))
SPLIT_SIZE = (48, 27)
BARE_DEFAULT = "PyAV decode, frames only, default threads"
BARE_AUTO = "PyAV decode, frames only, AUTO threads"
BARE_RGB = "PyAV decode + rgb24 array, AUTO threads"
OURS_FULL = "iter_frames, full size"
OURS_SPLIT = "iter_frames, 48x27"
SHOT_PATTERN: tuple[tuple[int, str | None], ...] = ((48, "HELLO WORLD"), (72, None), (96, "CURATION"), (60, None))


def make_input(folder: Path, width: int, height: int, seconds: float) -> tuple[Path, int]:
    """A generated H.264 video of about `seconds` at `width`x`height`; its path and frame count."""
    target, shots = round(seconds * FPS), []
    for n_frames, text in itertools.cycle(SHOT_PATTERN):
        shots.append((min(n_frames, target - sum(n for n, _ in shots)), text))
        if sum(n for n, _ in shots) >= target:
            break
    path = folder / f"input-{width}x{height}.mp4"
    generate_sample(path, SampleSpec(width=width, height=height, fps=FPS, shots=tuple(shots)))
    return path, target


def bare_decode(path: Path, threaded: bool, convert: bool) -> Iterable[object]:
    """PyAV alone: every frame decoded, optionally converted to an RGB array, nothing else."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threaded:
            stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24") if convert else frame


@dataclass
class Rate:
    """Best wall-clock and best CPU time per frame over the repeats (CPU time counts every thread)."""

    wall_s: float = float("inf")
    cpu_s: float = float("inf")

    @property
    def per_s(self) -> float:
        return 1 / self.wall_s


def measure(path: Path, n_frames: int, repeats: int) -> dict[str, Rate]:
    """Every step over the whole file, `repeats` rounds taking the steps in turn, so a burst of other
    work on the machine spreads over all of them instead of skewing one."""
    steps: dict[str, Callable[[], Iterable[object]]] = {
        BARE_DEFAULT: lambda: bare_decode(path, threaded=False, convert=False),
        BARE_AUTO: lambda: bare_decode(path, threaded=True, convert=False),
        BARE_RGB: lambda: bare_decode(path, threaded=True, convert=True),
        OURS_FULL: lambda: iter_frames(path),
        OURS_SPLIT: lambda: iter_frames(path, SPLIT_SIZE),
    }
    rates = {label: Rate() for label in steps}
    for _ in range(repeats):
        for label, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            count = sum(1 for _ in step())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if count != n_frames:
                raise RuntimeError(f"{label}: decoded {count} frames, expected {n_frames}")
            rate = rates[label]
            rate.wall_s, rate.cpu_s = min(rate.wall_s, wall / count), min(rate.cpu_s, cpu / count)
    return rates


def ratio(label: str, ours: Rate, peer: Rate, target: str = "") -> None:
    print(f"RATIO {label} = {ours.per_s / peer.per_s:.2f}   (CPU time: {peer.cpu_s / ours.cpu_s:.2f}){target}")


def report(size: tuple[int, int], n_frames: int, rates: dict[str, Rate]) -> None:
    width, height = size
    print(f"{f'{width}x{height}, {n_frames} frames:':<46}{'frames/s':>9}{'wall ms':>9}{'CPU ms':>9}")
    for label, rate in rates.items():
        print(f"  {label:<44}{rate.per_s:>9.0f}{rate.wall_s * 1000:>9.2f}{rate.cpu_s * 1000:>9.2f}")
    bare = max(rates[BARE_DEFAULT], rates[BARE_AUTO], key=lambda r: r.per_s)
    ratio(f"{width}x{height} iter_frames full size / bare decode + rgb24", rates[OURS_FULL], rates[BARE_RGB],
          "   (target ~1.0)")
    ratio(f"{width}x{height} iter_frames full size / bare decode", rates[OURS_FULL], bare)
    ratio(f"{width}x{height} iter_frames 48x27 / bare decode", rates[OURS_SPLIT], bare,
          "   (target ~1.0: shrinking costs little)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each generated input (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="passes per figure; the best counts (default 5)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} (other work on the machine skews "
          f"every number); PyAV {av.__version__}")
    with tempfile.TemporaryDirectory(prefix="orch-bench-decode-") as folder:
        for width, height in SIZES:
            path, n_frames = make_input(Path(folder), width, height, args.seconds)
            report((width, height), n_frames, measure(path, n_frames, args.repeats))


if __name__ == "__main__":
    main()
