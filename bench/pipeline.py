"""The quickstart pipeline end to end, against its slowest model stage run alone, measured in the same run.

    generated input (N min, 320x240, 24 fps, known shots)
        ├─▶ execute(quickstart.yaml) ─▶ wall, start-up, clips/s; peak RSS of the process tree (every 0.2 s)
        ├─▶ the same for an input half as long ─▶ peak RSS (memory should not grow with the input)
        └─▶ each model stage alone: start its worker, feed it exactly the pipeline's payloads ─▶ clips/s

A pipeline can go no faster than its slowest stage, so end-to-end clips/s (start-up excluded) over that
stage's clips/s alone says what the pipeline's own plumbing costs. The payloads for the stages alone come
from the pipeline's own steps (`decode_videos`, `extract_clips`, `SplitLogic`/`ClipModelLogic.payload`)
cut at the true shots, and those two parent-side passes are timed as well.

    .venv/bin/python bench/pipeline.py [--minutes 1.0] [--long-minutes 10]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from orchestrator.envs import EnvRegistry
from orchestrator.pipeline.config import PipelineConfig, load_config
from orchestrator.pipeline.executor import RunState
from orchestrator.pipeline.items import END, Clip, VideoItem
from orchestrator.pipeline.run import ResolvedStage, execute, resolve_stages
from orchestrator.pipeline.steps import ClipModelLogic, SplitLogic, decode_videos, extract_clips
from orchestrator.pipeline.video import VideoInput
from orchestrator.sample_video import SampleSpec, Shot, generate_sample
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml"
FPS = 24
SHOT_PATTERN: tuple[tuple[int, str | None], ...] = (
    (48, "HELLO WORLD"), (72, None), (96, "CURATION"), (60, None),
    (84, "OPEN SOURCE"), (54, None), (90, None), (66, "SHOT DETECTION"),
)
"""Repeated to the wanted length: 48 to 96 frames a shot, text in half of them, ~20 shots a minute."""
MIN_SHOT_FRAMES = 24
"""A leftover shorter than this joins the last shot instead of making a clip the filter would drop."""
RSS_INTERVAL_S = 0.2
LOG_TAIL = 200
MiB = 1024 * 1024


# --- input --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A generated input video and its true shots."""

    minutes: float
    path: Path
    shots: list[Shot]

    @property
    def frames(self) -> int:
        return self.shots[-1].end_frame + 1

    @property
    def clips(self) -> int:
        return len(self.shots)


def shots_for(minutes: float) -> tuple[tuple[int, str | None], ...]:
    """SHOT_PATTERN repeated to exactly `minutes` of video at FPS."""
    target = round(minutes * 60 * FPS)
    shots: list[tuple[int, str | None]] = []
    for n_frames, text in itertools.cycle(SHOT_PATTERN):
        if sum(n for n, _ in shots) + n_frames > target:
            break
        shots.append((n_frames, text))
    left = target - sum(n for n, _ in shots)
    if left >= MIN_SHOT_FRAMES or not shots:
        shots.append((left, SHOT_PATTERN[len(shots) % len(SHOT_PATTERN)][1]))
    elif left:
        shots[-1] = (shots[-1][0] + left, shots[-1][1])
    return tuple(shots)


def make_source(folder: Path, minutes: float) -> Source:
    path = folder / f"input-{minutes:g}min.mp4"
    return Source(minutes, path, generate_sample(path, SampleSpec(fps=FPS, shots=shots_for(minutes))))


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temp folder that also takes every temp folder made while it is open, removed with it on exit.

    `execute` makes a runtime folder it never removes; redirecting `tempfile` keeps it inside ours."""
    path = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    previous = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(path, ignore_errors=True)


# --- end to end ---------------------------------------------------------------------------------
class TreeMemory:
    """Peak RSS of this process, alone and summed with all its descendants, sampled on a thread."""

    def __init__(self, interval_s: float = RSS_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.peak_parent = self.peak_tree = self.start_parent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-rss")

    def __enter__(self) -> TreeMemory:
        self._sample()
        self.start_parent = self.peak_parent
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        me = psutil.Process()
        parent = me.memory_info().rss
        total = parent
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # exited since it was listed
                total += child.memory_info().rss
        self.peak_parent = max(self.peak_parent, parent)
        self.peak_tree = max(self.peak_tree, total)


class ReadyClock:
    """The executor's first progress tick comes only once every stage's workers are ready (within its
    0.2 s idle tick), so its time marks the end of start-up."""

    def __init__(self) -> None:
        self.ready_at: float | None = None

    def __call__(self, state: RunState) -> None:
        if self.ready_at is None:
            self.ready_at = time.monotonic()


@dataclass(frozen=True)
class PipelineRun:
    source: Source
    wall_s: float
    startup_s: float
    clips: int
    summary: dict[str, Any]
    start_parent: int
    peak_parent: int
    peak_tree: int

    @property
    def run_s(self) -> float:
        return self.wall_s - self.startup_s


def run_pipeline(source: Source, out_dir: Path) -> PipelineRun:
    """The quickstart config over `source`, quiet; worker logs are shown only if the run raises."""
    config, config_dir = load_config(QUICKSTART, [str(source.path)], str(out_dir))
    logs: deque[str] = deque(maxlen=LOG_TAIL)
    clock = ReadyClock()
    with TreeMemory() as memory:
        started = time.monotonic()
        try:
            summary = execute(config, config_dir, gpus=0, on_log=lambda label, line: logs.append(f"[{label}] {line}"),
                              warn=logs.append, display=clock)
        except BaseException:
            print("\n".join(logs), file=sys.stderr)
            raise
        wall_s = time.monotonic() - started
    if clock.ready_at is None:
        raise RuntimeError("the pipeline finished without a single progress tick; cannot tell its start-up")
    return PipelineRun(source, wall_s, clock.ready_at - started, summary["clips"], summary, memory.start_parent,
                       memory.peak_parent, memory.peak_tree)


# --- stages alone -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timed:
    """One step measured alone: worker start (0 for parent-side passes), input frames, time."""

    label: str
    start_s: float
    frames: int
    run_s: float


def parent_passes(config: PipelineConfig, source: Source, clips_tmp: Path) -> tuple[VideoItem, list[Clip], list[Timed]]:
    """The pipeline's two decode passes over `source`, cut at its true shots, each timed."""
    split, *rest = config.stages
    video, stop = VideoInput(source.path, source.path.stem), threading.Event()
    decoded: queue.Queue = queue.Queue()
    started = time.perf_counter()
    decode_videos([video], split, decoded, stop)
    decode_s = time.perf_counter() - started
    item = decoded.get_nowait()
    if item.error:
        raise RuntimeError(f"decoding the generated input failed: {item.error}")
    item.scenes = [(s.start_frame, s.end_frame) for s in source.shots]
    cut_in, cut_out = queue.Queue(), queue.Queue()
    for entry in (item, END):
        cut_in.put(entry)
    started = time.perf_counter()
    extract_clips([s for s in rest if s.model], clips_tmp, config.clip_codec, cut_in, cut_out, stop)
    extract_s = time.perf_counter() - started
    clips = [c for c in iter(cut_out.get_nowait, END) if isinstance(c, Clip)]
    if item.error or len(clips) != source.clips:
        raise RuntimeError(f"extracting clips gave {len(clips)} of {source.clips} ({item.error or 'no error'})")
    return item, clips, [
        Timed("parent: decode at the split size (pass 1)", 0.0, source.frames, decode_s),
        Timed("parent: decode, encode clips, sample (pass 2)", 0.0, source.frames, extract_s),
    ]


def stream(handle: WorkerHandle, payloads: list[Any]) -> float:
    """Seconds to send every payload with the handle's usual in-flight limit and receive every reply."""
    started = time.perf_counter()
    for payload in payloads:
        while len(handle.in_flight) >= handle.policy.max_in_flight:
            handle.receive()
        handle.submit(payload)
    while handle.in_flight:
        handle.receive()
    return time.perf_counter() - started


def stage_alone(resolved: ResolvedStage, payloads: list[Any], config_dir: Path, runtime_dir: Path) -> Timed:
    """Start the stage's worker alone (timed), then stream it `payloads`; the worker is always stopped."""
    stage = resolved.config
    spec = WorkerSpec(f"bench-{stage.name}", resolved.env, ModelRef(stage.class_path or "", stage.params),
                      (config_dir, Path.cwd()))
    logs: deque[str] = deque(maxlen=LOG_TAIL)
    with WorkerHandle(spec, runtime_dir, on_log=lambda label, line: logs.append(f"[{label}] {line}")) as handle:
        try:
            started = time.perf_counter()
            handle.start()
            start_s = time.perf_counter() - started
            run_s = stream(handle, payloads)
        except BaseException:
            print("\n".join(logs), file=sys.stderr)
            raise
    frames = sum(len(p["frames"]) for p in payloads)
    label = f"{stage.name} alone ({type(resolved.model).__name__})"
    return Timed(label, start_s, frames, run_s)


def stages_alone(source: Source, scratch: Path) -> tuple[list[Timed], list[Timed]]:
    """(model stages alone, parent-side passes), over the payloads the pipeline would send for `source`."""
    config, config_dir = load_config(QUICKSTART, [str(source.path)], str(scratch / "unused-out"))
    (scratch / "clips").mkdir()
    item, clips, passes = parent_passes(config, source, scratch / "clips")
    resolved = resolve_stages(config, config_dir, EnvRegistry())
    runtime_dir = Path(tempfile.mkdtemp(prefix="runtime-", dir=scratch))
    models = []
    for stage in resolved.values():
        if stage.config.split:
            payloads = [SplitLogic(stage.config).payload(item)]
        else:
            payloads = [ClipModelLogic(stage.config).payload(clip) for clip in clips]
        models.append(stage_alone(stage, payloads, config_dir, runtime_dir))
    return models, passes


# --- report -------------------------------------------------------------------------------------
COLUMNS = ("start s", "run s", "items", "items/s", "clips/s", "peak MiB", "parent", "parent@0")


def row(name: str, *cells: str) -> str:
    return f"{name:<46}" + "".join(f"{cell:>9}" for cell in cells)


def pipeline_rows(run: PipelineRun) -> list[str]:
    peaks = (f"{run.peak_tree / MiB:.0f}", f"{run.peak_parent / MiB:.0f}", f"{run.start_parent / MiB:.0f}")
    frames, clips = run.source.frames, run.clips
    return [
        row(f"pipeline {run.source.minutes:.2f} min, incl. start-up", f"{run.startup_s:.1f}", f"{run.wall_s:.1f}",
            f"{frames} fr", f"{frames / run.wall_s:.1f}", f"{clips / run.wall_s:.3f}", *peaks),
        row(f"pipeline {run.source.minutes:.2f} min, excl. start-up", "", f"{run.run_s:.1f}", f"{frames} fr",
            f"{frames / run.run_s:.1f}", f"{clips / run.run_s:.3f}"),
    ]


def timed_row(step: Timed, clips: int) -> str:
    start = f"{step.start_s:.1f}" if step.start_s else ""
    return row(step.label, start, f"{step.run_s:.2f}", f"{step.frames} fr", f"{step.frames / step.run_s:.1f}",
               f"{clips / step.run_s:.2f}")


def report(runs: list[PipelineRun], main: PipelineRun, models: list[Timed], passes: list[Timed],
           load: tuple[float, float]) -> None:
    source = main.source
    print(f"input: {source.minutes:.2f} min at 320x240, {FPS} fps = {source.frames} frames, {source.clips} true "
          f"shots; {os.cpu_count()} CPU cores, load average {load[0]:.1f} before, {load[1]:.1f} after "
          f"(other work on the machine skews every number)")
    print("items/s counts each step's input frames; peak MiB: RSS of this process and its workers together; "
          "parent: this process alone, at its peak and when the run began")
    print(row("", *COLUMNS))
    for run in runs:
        print("\n".join(pipeline_rows(run)))
    for step in [*models, *passes]:
        print(timed_row(step, source.clips))
    serial = sum(m.run_s for m in models)
    print(row("model stages alone, one after another (sum)", "", f"{serial:.2f}", "", "",
              f"{source.clips / serial:.2f}"))
    print()
    rates = ", ".join(f"{name} {stats['items_per_s']:.2f}" for name, stats in main.summary["stages"].items())
    print(f"in the pipeline ({source.minutes:.2f} min), items/s from first dispatch: {rates}")
    print(f"clips found: {main.clips} of {source.clips} true shots; failures: {len(main.summary['failures'])}")
    bottleneck = min(models, key=lambda m: source.clips / m.run_s)
    alone = source.clips / bottleneck.run_s
    print(f"bottleneck: {bottleneck.label} at {alone:.2f} clips/s")
    print(f"RATIO end-to-end clips/s (excluding start-up) / bottleneck stage alone = "
          f"{main.clips / main.run_s / alone:.2f}   (target >= 0.9)")
    print(f"RATIO peak memory long/short = {main.peak_tree / runs[0].peak_tree:.2f}   (target ~1.0: flat)")
    for run in runs[2:]:
        print(f"RATIO peak memory {run.source.minutes:g} min / {source.minutes:g} min = "
              f"{run.peak_tree / main.peak_tree:.2f}   (target ~1.0: flat)")


def progress(line: str) -> None:
    print(f"... {line}", file=sys.stderr, flush=True)


def run(minutes: float, long_minutes: float) -> None:
    load_before = os.getloadavg()[0]
    lengths = [minutes / 2, minutes, *([long_minutes] if long_minutes else [])]
    with scratch_dir() as scratch:
        runs = []
        for length in lengths:
            progress(f"generating {length:g} min of input")
            source = make_source(scratch, length)
            progress(f"running the pipeline over {length:g} min")
            runs.append(run_pipeline(source, scratch / f"out-{length:g}min"))
        main = runs[1]
        progress("running each model stage alone")
        models, passes = stages_alone(main.source, scratch)
    report(runs, main, models, passes, (load_before, os.getloadavg()[0]))


def at_least_3s(text: str) -> float:
    minutes = float(text)
    if minutes * 60 < 3:
        raise argparse.ArgumentTypeError("must be at least 0.05 (3 seconds)")
    return minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=at_least_3s, default=1.0,
                        help="input length for throughput; memory is also measured at half of it (default 1.0)")
    parser.add_argument("--long-minutes", type=float, default=0.0,
                        help="also run the pipeline over this many minutes and compare its peak memory, e.g. 10 "
                             "(default 0: skip; 10 minutes takes well over 10 minutes on 2 cores)")
    args = parser.parse_args()
    if args.long_minutes and args.long_minutes * 60 < 3:
        parser.error("--long-minutes must be 0 (skip) or at least 0.05")
    try:
        run(args.minutes, args.long_minutes)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
