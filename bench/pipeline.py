"""The quickstart pipeline end to end against its stages alone, and its peak memory on a long input against a
short one, measured in one run.

    --videos generated videos (--minutes each, --size (320x240), 24 fps, known shots)
        ├─▶ execute(quickstart.yaml) ─▶ start-up (until every worker has finished setup()), clips/s after it,
        │                              each stage's busy share, CPU seconds of this process and its workers
        └─▶ each step alone over exactly the pipeline's items, every worker with all cores:
              plan_split ─▶ decode (media) ─▶ shots (SplitLogic) ─▶ cut_clips ─▶ cut (media: clip frames)
                  ─▶ ocr, content (ClipModelLogic) ─▶ keep (filter) ─▶ encode (media: kept clips)
    one 1-minute video, one --long-minutes video ─▶ execute ─▶ peak RSS of the process tree (every 0.5 s)

A step alone runs its worker (a model's, or a media worker) through a `StagePool` of one replica, the pool
the pipeline uses, fed the items the pipeline's own steps before it make (the split stage's windows as the
decode step answers them, the clips `cut_clips` cuts from the split stage's answers, with the frames the
cut step sampled). The RATIO lines: end-to-end clips/s (start-up excluded)
over the model stages run one after another (serial sum: what doing the stages in turn would give), and
over the slowest of them alone (what a pipeline of stages on separate cores could reach).

    .venv/bin/python bench/pipeline.py [--videos 8] [--minutes 1] [--long-minutes 60] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from models.model_interface import SplitWindow
from orchestrator.declarations import ModelDeclarations
from orchestrator.envs import EnvRegistry
from orchestrator.pipeline.channel import Channel
from orchestrator.pipeline.clip_model import ClipModelLogic
from orchestrator.pipeline.config import PipelineConfig, StageConfig, load_config
from orchestrator.pipeline.executor import RunState
from orchestrator.pipeline.filters import run_filter
from orchestrator.pipeline.items import END, Clip, SplitDone, VideoItem
from orchestrator.pipeline.media.cutting import cut_clips
from orchestrator.pipeline.media.logic import ClipFramesLogic, EncodeLogic, SplitDecodeLogic
from orchestrator.pipeline.media.steps import CUT, DECODE, ENCODE
from orchestrator.pipeline.media.video import VideoInput, expand_inputs, open_inputs
from orchestrator.pipeline.pool import StagePool, StepLogic
from orchestrator.pipeline.run import execute
from orchestrator.pipeline.split.decode import SplitLogic, split_requests
from orchestrator.pipeline.stages import ResolvedStage, resolve_media, resolve_stages, worker_policy
from orchestrator.pipeline.stats import StageStats
from orchestrator.sample_video import SampleSpec, Shot, generate_sample
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.policy import StopGrace
from orchestrator.supervisor.threads import available_cores, thread_environ
from workers.shared_frames import SharedFramesDir

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml"
FPS = 24
DEFAULT_SIZE = (320, 240)
SHOT_PATTERN: tuple[tuple[int, str | None], ...] = (
    (48, "HELLO WORLD"), (72, None), (96, "CURATION"), (60, None),
    (84, "OPEN SOURCE"), (54, None), (90, None), (66, "SHOT DETECTION"),
)
"""Repeated to the wanted length: 48 to 96 frames a shot, text in half of them, ~20 shots a minute."""
MIN_SHOT_FRAMES = 24
"""A leftover shorter than this joins the last shot instead of making a clip the filter would drop."""
RSS_INTERVAL_S = 0.5
"""Sampling the process tree costs this process CPU time the pipeline would use: not more often."""
LOG_TAIL = 200
SERVER_START_S = 30.0
"""How long moto_server may take to open its port."""
MiB = 1024 * 1024


# --- input --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Generated input videos (copies of one) and the true shots of each."""

    minutes: float
    paths: tuple[Path, ...]
    shots: tuple[Shot, ...]
    size: tuple[int, int] = DEFAULT_SIZE

    @property
    def frames(self) -> int:
        return (self.shots[-1].end_frame + 1) * len(self.paths)

    @property
    def clips(self) -> int:
        return len(self.shots) * len(self.paths)

    def describe(self) -> str:
        copies = f"{len(self.paths)} videos of " if len(self.paths) > 1 else ""
        length = f"{self.minutes:g} min" if self.minutes >= 1 else f"{self.minutes * 60:.3g} s"
        return f"{copies}{length}"


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


def make_source(folder: Path, minutes: float, copies: int = 1, size: tuple[int, int] = DEFAULT_SIZE) -> Source:
    """One generated video of `minutes` at `size`, copied to `copies` input files (the same work in each)."""
    first = folder / f"input-{minutes:g}min-0.mp4"
    shots = generate_sample(first, SampleSpec(width=size[0], height=size[1], fps=FPS, shots=shots_for(minutes)))
    paths = [first]
    for index in range(1, copies):
        paths.append(folder / f"input-{minutes:g}min-{index}.mp4")
        shutil.copy(first, paths[-1])
    return Source(minutes, tuple(paths), tuple(shots), size)


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
class TreeUsage:
    """Peak RSS of this process, alone and summed with all its descendants, and the CPU seconds each used.

    A thread samples the tree every `interval_s`. The workers' total is exact all the same: a worker that
    exited was reaped by this process, so its CPU time is in this process's children's times (`os.times()`);
    the samples only attribute it, by each worker's `--name` (a worker's last sample before it exits: what
    it used after that is `unattributed_s`). The sampling's own CPU time is not counted as this process's."""

    def __init__(self, interval_s: float = RSS_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.peak_parent = self.peak_tree = 0
        self.parent_cpu_s = self.workers_cpu_s = self.sampler_cpu_s = 0.0
        self.series: list[tuple[float, float, float]] = []
        """(time.monotonic(), CPU seconds of this process and of the whole tree so far) at each sample."""
        self._children_cpu: dict[int, float] = {}
        self._labels: dict[int, str] = {}
        self._threads: dict[int, tuple[str, float]] = {}
        """This process's threads by id: name and CPU seconds at the last sample."""
        self._threads_at_start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-usage")
        self._me = psutil.Process()
        self._cpu_at_start = self._reaped_at_start = 0.0

    @property
    def tree_cpu_s(self) -> float:
        return self.parent_cpu_s + self.workers_cpu_s

    @property
    def unattributed_s(self) -> float:
        return max(0.0, self.workers_cpu_s - sum(self._children_cpu.values()))

    def by_label(self) -> dict[str, list[float]]:
        """Each worker label's CPU seconds, one entry per process that had it."""
        labels: dict[str, list[float]] = {}
        for pid, cpu_s in self._children_cpu.items():
            labels.setdefault(self._labels[pid], []).append(cpu_s)
        return labels

    def by_thread(self) -> dict[str, float]:
        """This process's CPU seconds by thread name (the sampler's own left out), each thread's last sample."""
        names: dict[str, float] = {}
        for tid, (name, cpu_s) in self._threads.items():
            if name != self._thread.name:
                names[name] = names.get(name, 0.0) + cpu_s - self._threads_at_start.get(tid, 0.0)
        return names

    def cpu_since(self, moment: float) -> tuple[float, float]:
        """CPU seconds of this process and of the whole tree from the first sample at or after `moment` on."""
        end = (self.parent_cpu_s, self.tree_cpu_s)
        parent, tree = next(((p, t) for when, p, t in self.series if when >= moment), end)
        return end[0] - parent, end[1] - tree

    def __enter__(self) -> TreeUsage:
        self._cpu_at_start = _cpu_s(self._me)
        self._reaped_at_start = _reaped_cpu_s(self._me)
        self._threads_at_start = {t.id: t.user_time + t.system_time for t in self._me.threads()}
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        alive = self._sample()
        self.parent_cpu_s = _cpu_s(self._me) - self._cpu_at_start - self.sampler_cpu_s
        self.workers_cpu_s = _reaped_cpu_s(self._me) - self._reaped_at_start + alive

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> float:
        """Record one sample; returns the CPU seconds of the descendants alive now."""
        started = time.thread_time()
        total = parent = self._me.memory_info().rss
        alive = 0.0
        for child in self._me.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # exited since it was listed
                if child.pid not in self._labels:
                    self._labels[child.pid] = _label(child.cmdline())
                total += child.memory_info().rss
                self._children_cpu[child.pid] = _cpu_s(child)
                alive += self._children_cpu[child.pid]
        names = {t.native_id: t.name for t in threading.enumerate()}
        for thread in self._me.threads():
            self._threads[thread.id] = (names.get(thread.id, "threads not Python's (zmq, FFmpeg)"),
                                        thread.user_time + thread.system_time)
        self.peak_parent = max(self.peak_parent, parent)
        self.peak_tree = max(self.peak_tree, total)
        parent_cpu = _cpu_s(self._me) - self._cpu_at_start - self.sampler_cpu_s
        workers = _reaped_cpu_s(self._me) - self._reaped_at_start + alive
        self.series.append((time.monotonic(), parent_cpu, parent_cpu + workers))
        self.sampler_cpu_s += time.thread_time() - started
        return alive


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _reaped_cpu_s(process: psutil.Process) -> float:
    """CPU seconds of the descendants that have exited and been waited for."""
    times = process.cpu_times()
    return times.children_user + times.children_system


def _label(cmdline: list[str]) -> str:
    """A worker's `--name` (`<stage>/<replica>`), else the start of its command line."""
    if "--name" in cmdline[:-1]:
        return cmdline[cmdline.index("--name") + 1]
    return " ".join([Path(cmdline[0]).name, *cmdline[1:4]])[:44] if cmdline else "?"


class Clock:
    """Reads the run's state at each progress tick: when the last video was written."""

    def __init__(self) -> None:
        self.state: RunState | None = None
        self.done_at: float | None = None

    def __call__(self, state: RunState) -> None:
        self.state = state
        if self.done_at is None and state.videos_done == state.videos_total:
            self.done_at = time.monotonic()


@dataclass(frozen=True)
class PipelineRun:
    source: Source
    started: float
    ready_at: float
    """When every worker had finished setup(): the end of start-up."""
    done_at: float
    clips: int
    summary: dict[str, Any]
    stages: dict[str, StageStats]
    usage: TreeUsage

    @property
    def startup_s(self) -> float:
        return self.ready_at - self.started

    @property
    def run_s(self) -> float:
        return self.done_at - self.ready_at

    @property
    def wall_s(self) -> float:
        return self.done_at - self.started


def run_pipeline(source: Source, out_dir: Path, config_path: Path = QUICKSTART, **where: Any) -> PipelineRun:
    """The config at `config_path` over `source`, quiet; worker logs are shown only if the run raises. `where`
    goes to `execute` (cluster=RayCluster(address): the Ray executor)."""
    config, config_dir = load_config(config_path, [str(p) for p in source.paths], str(out_dir))
    logs: deque[str] = deque(maxlen=LOG_TAIL)
    clock = Clock()
    with TreeUsage() as usage:
        started = time.monotonic()
        try:
            summary = execute(config, config_dir, gpus=0, on_log=lambda label, line: logs.append(f"[{label}] {line}"),
                              warn=logs.append, display=clock, fresh=True, **where)
        except BaseException:
            print("\n".join(logs), file=sys.stderr)
            raise
    if clock.state is None or clock.done_at is None:
        raise RuntimeError("the pipeline finished without writing every video")
    return PipelineRun(source, started, _ready_at(clock.state), clock.done_at, summary.clips, summary.to_json(),
                       dict(clock.state.stages), usage)


def _ready_at(state: RunState) -> float:
    """When every worker had finished setup(); where some never did before the run ended (an input too short
    for its slowest worker's start), when the last of the others did, said on stderr."""
    stages = [s for s in state.stages.values() if s.replicas]
    late = [s.name for s in stages if s.ready_at is None]
    if late:
        progress(f"stage {', '.join(late)}: not every replica was set up before the run ended (the input is too "
                 f"short for a steady state); start-up counted until the other stages were")
    return max(s.ready_at for s in stages if s.ready_at is not None)


# --- stages alone -------------------------------------------------------------------------------
@dataclass
class Timed:
    """One step measured alone: its worker's start, input frames, items, time."""

    label: str
    start_s: float
    frames: int
    items: int
    run_s: float


@dataclass
class Alone:
    """Starts one step's worker at a time, with every core, the way the pipeline would start it."""

    config_dir: Path
    runtime_dir: Path
    resolved: dict[str, ResolvedStage]
    frames: SharedFramesDir
    logs: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL))

    def worker(self, stage: StageConfig) -> tuple[WorkerHandle, ModelDeclarations, float]:
        resolved = self.resolved[stage.name]
        spec = WorkerSpec(f"alone-{stage.name}", resolved.env, ModelRef(resolved.class_path, stage.params),
                          (self.config_dir, Path.cwd()), thread_environ(available_cores()), {"input": stage.input},
                          self.frames.path)
        handle = WorkerHandle(spec, self.runtime_dir, worker_policy(stage),
                              on_log=lambda label, line: self.logs.append(f"[{label}] {line}"))
        started = time.perf_counter()
        handle.start(describe=True)
        return handle, ModelDeclarations.from_dict(handle.declarations or {}), time.perf_counter() - started

    def run(self, stage: StageConfig, logic: StepLogic, items: list[Any], frames: int) -> tuple[Timed, list[Any]]:
        """Stream `items` through the stage's worker in a pool of one, as the pipeline would; always stops it.
        Returns the timing and every item the pool put out, in order."""
        handle, _, start_s = self.worker(stage)
        return self.through_pool(stage, logic, items, frames, handle, start_s)

    def through_pool(self, stage: StageConfig, logic: StepLogic, items: list[Any], frames: int,
                     handle: WorkerHandle, start_s: float) -> tuple[Timed, list[Any]]:
        stop, stats = threading.Event(), StageStats(stage.name)
        pool = StagePool(logic, lambda i: handle, 1, stage.batch_size, stats, stop, adopt={0: handle})
        inq, outq = channel_of(items), Channel()
        try:
            started = time.perf_counter()
            pool.run(inq, outq)
            run_s = time.perf_counter() - started
        except BaseException:
            print("\n".join(self.logs), file=sys.stderr)
            raise
        finally:
            stop.set()
            pool.close(StopGrace(1.0, 1.0))
        if stats.failed:
            raise RuntimeError(f"{stats.failed} items failed in {stage.name} alone:\n" + "\n".join(self.logs))
        model = self.resolved[stage.name].class_path.rsplit(".", 1)[-1]
        return (Timed(f"{stage.name} alone ({model})", start_s, frames, stats.done, run_s),
                list(iter(outq.get_nowait, END)))


def channel_of(items: list[Any]) -> Channel:
    """A channel holding `items`, then END."""
    channel = Channel()
    for item in [*items, END]:
        channel.put(item)
    return channel


def collected(step: Callable[..., None], *args: Any, items: list[Any] | None = None) -> list[Any]:
    """Everything the orchestrator's own step `step(*args, [inq,] outq, stop)` puts out, run on this thread;
    `items` is its input, when it reads one."""
    out = Channel()
    step(*args, *([] if items is None else [channel_of(items)]), out, threading.Event())
    return list(iter(out.get_nowait, END))


def stages_alone(source: Source, scratch: Path) -> tuple[list[Timed], list[Timed]]:
    """(model stages alone, media steps alone), each over the items the steps before it made for `source`."""
    config, config_dir = load_config(QUICKSTART, [str(p) for p in source.paths], str(scratch / "unused-out"))
    frames = SharedFramesDir.make()
    try:
        media = resolve_media(config, frames.path)
        alone = Alone(config_dir, Path(tempfile.mkdtemp(prefix="runtime-", dir=scratch)),
                      {**resolve_stages(config, config_dir, EnvRegistry()), **media}, frames)
        return steps_alone(config, config_dir, source, scratch, alone, {n: m.config for n, m in media.items()})
    finally:
        frames.remove()


def planned_windows(videos: list[VideoInput], window: SplitWindow | None) -> list[Any]:
    """What `plan_split` plans for each video, stopped where its container says it ends (the decode runs after
    the planning here, not beside it, so it cannot say so first; the generated videos declare every frame)."""
    items: list[Any] = []
    for seq, video in enumerate(open_inputs(videos)[0]):
        item = VideoItem(seq, video, meta=video.meta)
        windows = itertools.takewhile(lambda r, end=video.frames: r.core_start < end, split_requests(item, window))
        items += [item, *windows, SplitDone(item)]
    return items


def steps_alone(config: PipelineConfig, config_dir: Path, source: Source, scratch: Path, alone: Alone,
                media: dict[str, StageConfig]) -> tuple[list[Timed], list[Timed]]:
    """The pipeline's steps in its order, one at a time: plan, decode, split, cut into scenes, read each clip's
    frames, the clip stages and filters, encode."""
    split, *rest = config.stages
    handle, declared, start_s = alone.worker(split)
    videos, _ = expand_inputs(config.inputs, config_dir)
    planned = planned_windows(videos, declared.split_window)
    decode, items = alone.run(media[DECODE], SplitDecodeLogic(split, config.strict, alone.frames), planned,
                              source.frames)
    split_timed, items = alone.through_pool(split, SplitLogic(split, declared.split_window, alone.frames), items,
                                            source.frames, handle, start_s)
    (scratch / "clips").mkdir()
    items = collected(cut_clips, scratch / "clips", items=items)
    clip_stages = [s for s in rest if s.model]
    reading = ClipFramesLogic(clip_stages, config.clips.encode == "all", config.clip_codec, alone.frames)
    cut, items = alone.run(media[CUT], reading, items, source.frames)
    clips = [c for c in items if isinstance(c, Clip)]
    if len(clips) != source.clips or any(c.errors for c in clips):
        raise RuntimeError(f"cutting gave {len(clips)} clips of {source.clips} true shots "
                           f"({next((c.errors for c in clips if c.errors), 'no error')})")
    timed = [split_timed]
    for stage in rest:
        if stage.model:
            step, items = alone.run(stage, ClipModelLogic(stage, alone.frames), items, source.frames)
            timed.append(step)
        elif stage.filter:
            items = collected(run_filter, stage, StageStats(stage.name), alone.frames, items=items)
    media_steps = [decode, cut]
    if ENCODE in media:
        media_steps.append(alone.run(media[ENCODE], EncodeLogic(config.clip_codec), items, source.frames)[0])
    return timed, media_steps


# --- report -------------------------------------------------------------------------------------
COLUMNS = ("start s", "run s", "items", "frames/s", "clips/s")


def row(name: str, *cells: str) -> str:
    return f"{name:<50}" + "".join(f"{cell:>10}" for cell in cells)


def pipeline_rows(run: PipelineRun) -> list[str]:
    frames, clips = run.source.frames, run.clips
    return [
        row(f"pipeline, {run.source.describe()}, incl. start-up", f"{run.startup_s:.1f}", f"{run.wall_s:.1f}",
            f"{clips}", f"{frames / run.wall_s:.1f}", f"{clips / run.wall_s:.3f}"),
        row(f"pipeline, {run.source.describe()}, excl. start-up", "", f"{run.run_s:.1f}", f"{clips}",
            f"{frames / run.run_s:.1f}", f"{clips / run.run_s:.3f}"),
    ]


def timed_row(step: Timed, clips: int) -> str:
    return row(step.label, f"{step.start_s:.1f}", f"{step.run_s:.2f}", f"{step.items}",
               f"{step.frames / step.run_s:.1f}", f"{clips / step.run_s:.3f}")


def where_the_time_goes(run: PipelineRun) -> list[str]:
    """Each stage's worker-seconds busy, its share of the run (per replica), and the CPU seconds used."""
    lines = []
    for name, stats in run.stages.items():
        busy = sum(s.seconds for s in stats.served_since(run.ready_at))
        if stats.replicas and busy:
            lines.append(f"  {name}: busy {busy:.1f} worker-s = {busy / run.run_s / stats.replicas:.0%} of the run "
                         f"per replica ({stats.replicas}), {stats.done} items, {busy / max(stats.done, 1):.3f} s/item")
    usage = run.usage
    lines.append(f"  CPU seconds, whole run: this process {usage.parent_cpu_s:.1f} (the steps' threads, the "
                 f"pools, the writer), workers {usage.workers_cpu_s:.1f}; {available_cores()} cores x "
                 f"{run.wall_s:.1f} s wall = {available_cores() * run.wall_s:.1f}")
    return lines


def report(main: PipelineRun, memory: list[PipelineRun], models: list[Timed], media_steps: list[Timed],
           load: tuple[float, float]) -> None:
    source = main.source
    (width, height), at = source.size, "" if source.size == DEFAULT_SIZE else f" at {source.size[1]}p"
    print(f"throughput input: {source.describe()} at {width}x{height}, {FPS} fps = {source.frames} frames, "
          f"{source.clips} true shots; {os.cpu_count()} CPUs ({available_cores()} for the run), load average "
          f"{load[0]:.1f} before, {load[1]:.1f} after (other work on the machine skews every number)")
    print("start-up ends when every worker has finished setup(); a stage alone runs one worker with every core")
    print(row("", *COLUMNS))
    print("\n".join(pipeline_rows(main)))
    for step in [*models, *media_steps]:
        print(timed_row(step, source.clips))
    serial = sum(m.run_s for m in models)
    print(row("model stages alone, one after another (sum)", "", f"{serial:.2f}", "", f"{source.frames / serial:.1f}",
              f"{source.clips / serial:.3f}"))
    print()
    print(f"where the time goes in the pipeline ({run_label(main)}):")
    print("\n".join(where_the_time_goes(main)))
    print(f"clips written: {main.clips} of {source.clips} true shots; failures: {len(main.summary['failures'])}")
    print()
    for run in memory:
        print(f"peak RSS, {run.source.describe()}: process tree {run.usage.peak_tree / MiB:.0f} MiB, this process "
              f"{run.usage.peak_parent / MiB:.0f} MiB ({run.clips} clips in {run.wall_s:.0f} s)")
    end_to_end = main.clips / main.run_s
    bottleneck = max(models, key=lambda m: m.run_s)
    print(f"RATIO end-to-end / serial sum{at} = {end_to_end / (source.clips / serial):.2f}   (target >= 1.0)")
    print(f"RATIO end-to-end / bottleneck{at} = {end_to_end / (source.clips / bottleneck.run_s):.2f}   (target >= 0.9 "
          f"where stages do not share cores; bottleneck: {bottleneck.label})")
    if len(memory) == 2:
        short, long = memory
        print(f"RATIO peak memory {long.source.minutes:g} min / {short.source.minutes:g} min{at} = "
              f"{long.usage.peak_tree / short.usage.peak_tree:.2f}   (target <= 1.1)")


def run_label(run: PipelineRun) -> str:
    return f"{run.source.describe()}, {run.run_s:.1f} s after start-up"


@contextlib.contextmanager
def s3_server() -> Iterator[tuple[str, int]]:
    """moto_server (an S3-compatible server) in its own process on a free port of 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    binary = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)  # waits for the server's port to open
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(10)


def aws_environ(endpoint: str) -> dict[str, str]:
    """boto3's standard variables pointing at `endpoint` alone (no profile, no instance metadata)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def progress(line: str) -> None:
    print(f"... {line}", file=sys.stderr, flush=True)


def run(videos: int, minutes: float, long_minutes: float, size: tuple[int, int]) -> None:
    load_before = os.getloadavg()[0]
    with scratch_dir() as scratch:
        progress(f"generating {videos} videos of {minutes:g} min at {size[0]}x{size[1]}")
        source = make_source(scratch / "many", minutes, videos, size)
        progress("running the pipeline over them")
        main = run_pipeline(source, scratch / "out-many")
        progress("running each step alone over the same items")
        models, media_steps = stages_alone(source, scratch)
        memory = []
        for length in [1.0, long_minutes] if long_minutes else []:
            progress(f"generating and running {length:g} min for peak memory")
            memory.append(run_pipeline(make_source(scratch / f"mem-{length:g}", length, size=size),
                                       scratch / f"out-{length:g}"))
    report(main, memory, models, media_steps, (load_before, os.getloadavg()[0]))


def positive_minutes(text: str) -> float:
    minutes = float(text)
    if minutes * 60 < 3:
        raise argparse.ArgumentTypeError("must be at least 0.05 (3 seconds)")
    return minutes


def frame_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) >= 64 and int(height) >= 48):
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, at least 64x48 (got {text!r})")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8, help="input videos for throughput (default 8)")
    parser.add_argument("--minutes", type=positive_minutes, default=1.0, help="length of each (default 1.0)")
    parser.add_argument("--long-minutes", type=float, default=60.0,
                        help="the long input whose peak memory is compared with 1 minute's (default 60; 0 skips "
                             "both; 60 minutes take about half an hour to generate and run on 2 cores)")
    parser.add_argument("--size", type=frame_size, default=DEFAULT_SIZE,
                        help="frame size of every input, e.g. 1920x1080 (default 320x240)")
    args = parser.parse_args()
    if args.videos < 1:
        parser.error("--videos must be at least 1")
    if args.long_minutes and args.long_minutes * 60 < 3:
        parser.error("--long-minutes must be 0 (skip) or at least 0.05")
    try:
        run(args.videos, args.minutes, args.long_minutes, args.size)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
