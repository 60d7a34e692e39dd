"""Run a pipeline: one thread per step, bounded channels between them, workers per stage.

    plan windows ─▶ decode (media) ─▶ split pool ─▶ cut (scenes into clips) ─▶ cut (media: each clip's
        frames) ─▶ clip stage pools / filters ─▶ encode (media: the kept clips) ─▶ writer (the calling thread)
    or, over clips already cut (`--redo-stage`):
    a ClipSource ─▶ the clip stage pools / filters it names ─▶ the source records each video

Channels are bounded, so a long input never piles up in memory (backpressure). Each model stage's pool owns
its workers, and so does each media step's (orchestrator.pipeline.media.steps): this process moves
requests and names of shared frames, never pixels; every segment is freed once its last reader is done.
A step that raises stops the run with its error (never a silent hang); finished videos stay written, and
every worker is stopped and reaped on return, on error and on Ctrl-C.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.dataset.table import is_kept
from orchestrator.declarations import ModelDeclarations
from orchestrator.errors import PipelineError
from orchestrator.pipeline.channel import Channel
from orchestrator.pipeline.clip_model import ClipModelLogic
from orchestrator.pipeline.config import PipelineConfig, StageConfig
from orchestrator.pipeline.filters import run_filter
from orchestrator.pipeline.items import END, Clip, VideoDone, VideoItem
from orchestrator.pipeline.media.cutting import cut_clips
from orchestrator.pipeline.media.feed import InputFeed
from orchestrator.pipeline.media.logic import ClipFramesLogic, EncodeLogic, SplitDecodeLogic
from orchestrator.pipeline.media.steps import CUT, DECODE, ENCODE, MEDIA_DECLARATIONS, media_stages
from orchestrator.pipeline.media.video import VideoInput
from orchestrator.pipeline.output.writer import OutputWriter
from orchestrator.pipeline.pool import RetryPolicy, StagePool
from orchestrator.pipeline.scaling.autoscaler import Autoscaler, Metered, Resources
from orchestrator.pipeline.scaling.policy import ScalingDecision
from orchestrator.pipeline.split.decode import SplitLogic, plan_split
from orchestrator.pipeline.stats import StageStats, Timeline
from orchestrator.pipeline.summary import Failure
from orchestrator.supervisor.interface import Worker
from orchestrator.supervisor.policy import StopGrace
from orchestrator.supervisor.shutdown import close_all
from workers.shared_frames import SharedFramesDir

QUEUE_DEPTH = 8
JOIN_TIMEOUT_S = 10.0

WorkerFactory = Callable[[StageConfig, int], Worker]


class ClipSource(Protocol):
    """Clips already in an output folder, run through some clip stages instead of decode, split and cut."""

    stage_names: frozenset[str]
    """The clip stages (models and filters) to run, in the config's order."""

    def read(self, outq: queue.Queue, stop: threading.Event) -> None:
        """Put each video's VideoItem, its clips (with the frames those stages sample) and VideoDone, then END."""

    def finish_video(self, video: VideoItem, clips: list[Clip]) -> list[dict[str, Any]]:
        """Record what the stages found for a video; its rows as they now are."""


@dataclass
class RunState:
    """What the progress display reads while the run goes on, and what its summary is made of."""

    videos_total: int
    """Input videos found so far (all of them once `listing` is over)."""
    videos_done: int = 0
    resumed: int = 0
    clips: int = 0
    kept: int = 0
    failures: list[Failure] = field(default_factory=list)
    stages: dict[str, StageStats] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    autoscale: list[ScalingDecision] = field(default_factory=list)
    """Each replica `replicas: auto` added, and what held a stage back, with the speeds measured."""
    warnings: list[dict[str, Any]] = field(default_factory=list)
    """Videos that decoded short of what their container declares: kept with a note (failed too, when strict)."""
    videos_unreadable: int = 0
    """Of those, the ones found unreadable when opened: the run skips them."""
    listing: bool = False
    """The inputs are still being listed: `videos_total` will grow."""
    videos_planned: int = 0
    """Videos the run has started on (resumed ones included)."""
    frames_total: int = 0
    """Frames (as the containers declare them) of the videos started on so far; resumed ones are not counted."""
    frames_done: int = 0
    """Frames of those videos that every step is through with: finished videos, and the current one so far."""
    current: VideoProgress | None = None
    work_started: float | None = None
    """When the first clip reached the writer: the ETA does not count the start-up before it."""
    frames_at_start: int = 0
    timeline: Timeline = field(default_factory=Timeline)

    def inputs_found(self, found: int, unreadable: int, listing: bool) -> None:
        self.videos_total, self.videos_unreadable, self.listing = found, unreadable, listing

    def video_planned(self, video: VideoItem) -> None:
        """A video the run starts on: its declared frames count towards the total, unless it was resumed."""
        self.videos_planned += 1
        if video.resumed is None:
            self.frames_total += video.video.frames

    def frames_expected(self) -> float:
        """Frames the run is expected to work on: those of the videos started on, and as many again per
        video for the ones found but not started yet (their containers are read as the run reaches them)."""
        to_do = self.videos_total - self.videos_unreadable
        if not self.videos_planned or self.videos_planned >= to_do:
            return self.frames_total
        return self.frames_total * to_do / self.videos_planned

    def sample(self, force: bool = False) -> None:
        """Add the stages' progress to the timeline, about once per its interval (and at the end, `force`)."""
        self.timeline.sample(time.monotonic() - self.started, self.stages, force)

    def clip_written(self, clip: Clip) -> None:
        """Every step is through with the frames up to this clip's end; the first one starts the ETA's clock."""
        video = clip.video.video
        if self.current is None or self.current.video_id != video.video_id:
            self.current = VideoProgress(video.video_id, 0, video.frames)
        gained = clip.end + 1 - self.current.done
        self.current.done = clip.end + 1
        self.frames_done += max(gained, 0)
        if self.work_started is None:
            self.work_started, self.frames_at_start = time.monotonic(), self.frames_done

    def video_finished(self, video: VideoItem) -> None:
        """A video is written: all its declared frames count as done (none for one resumed from a part)."""
        if video.resumed is None and self.current is not None and self.current.video_id == video.video.video_id:
            self.frames_done += max(video.video.frames - self.current.done, 0)
        elif video.resumed is None:
            self.frames_done += video.video.frames
        self.current = None

    def eta_s(self, now: float) -> float | None:
        """Seconds left at the speed measured since the first clip, over the frames still to do."""
        expected = self.frames_expected()
        if self.work_started is None or now <= self.work_started or self.frames_done >= expected:
            return None
        speed = (self.frames_done - self.frames_at_start) / (now - self.work_started)
        return (expected - self.frames_done) / speed if speed > 0 else None


@dataclass
class VideoProgress:
    """How far every step is through the video being written: frames done of the frames it declares."""

    video_id: str
    done: int
    total: int


class PipelineExecutor:
    """Streams videos through the steps: decode, split pool, cut, model pools and filters, writer. Where a
    replica runs is the `make_worker` factory's business (local processes, or Ray actors), so both executors
    share these pools, their retry rules and the writer."""

    def __init__(self, config: PipelineConfig, videos: Sequence[VideoInput] | InputFeed, writer: OutputWriter,
                 make_worker: WorkerFactory, state: RunState, declarations: Mapping[str, ModelDeclarations],
                 adopt: Mapping[str, Mapping[int, Worker]] | None = None, resources: Resources | None = None,
                 source: ClipSource | None = None, frames: SharedFramesDir | None = None,
                 hardware: bool = False) -> None:
        """`resources` (cores, threads, GPU shares) let `replicas: auto` stages grow; without, they keep one.
        With a `source`, its clips go through the stages it names and it records them; the writer only the run.
        `frames`: the run's frames folder, which `make_worker` hands its workers (made here, and removed at
        the end, when not given). `hardware`: media workers decode and encode on the GPU's video engines."""
        self.config = config
        self._own_frames = frames is None
        self.frames = frames or SharedFramesDir.make()
        self.media = {stage.name: stage for stage in media_stages(config, self.frames.path, hardware)}
        self.declarations = {**{name: MEDIA_DECLARATIONS for name in self.media}, **declarations}
        self.videos = videos
        self.writer = writer
        self.make_worker = make_worker
        self.state = state
        self.adopt = adopt or {}
        self.source = source
        self.stop = threading.Event()
        self.pools: dict[str, StagePool] = {}
        self.threads: list[threading.Thread] = []
        self._failed: list[tuple[str, BaseException]] = []
        self.autoscaler: Autoscaler | None = None
        if resources is not None and any(s.auto_replicas for s in [*config.stages, *self.media.values()]
                                         if s.class_path):
            self.autoscaler = Autoscaler(resources, state.autoscale, state.started)

    def run(self, on_tick: Callable[[], None] = lambda: None) -> None:
        """Stream all videos through every step and write outputs; always stops every worker."""
        try:
            final = self._start_steps()
            self._write(final, on_tick)
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join(JOIN_TIMEOUT_S)
            self.state.sample(force=True)
            close_all([w for pool in self.pools.values() for w in pool.workers()], StopGrace())
            if self._own_frames:
                self.frames.remove()

    def _pool(self, stage: StageConfig, logic: Any) -> StagePool:
        stats = self.state.stages.setdefault(stage.name, StageStats(stage.name))
        retry = RetryPolicy(max_attempts=stage.max_attempts, max_restarts=stage.max_restarts)
        if self.autoscaler is not None:
            logic = Metered(logic)
        pool = StagePool(logic, lambda i, s=stage: self.make_worker(s, i), stage.start_replicas, stage.batch_size,
                         stats, self.stop, retry, self.adopt.get(stage.name))
        if self.autoscaler is not None:
            self.autoscaler.watch(stage, pool, logic, self.declarations[stage.name].num_gpus)
        self.pools[stage.name] = pool
        return pool

    def _start_steps(self) -> queue.Queue:
        current = Channel(QUEUE_DEPTH)
        if self.source is not None:
            rest = [s for s in self.config.stages if s.name in self.source.stage_names]
            self._spawn("clips", self.source.read, current, self.stop)
        else:
            rest = self._start_cutting(current)
        for stage in rest:
            following = Channel(QUEUE_DEPTH)
            if stage.model:
                self._spawn(stage.name, self._pool(stage, ClipModelLogic(stage, self.frames)).run, current, following)
            else:
                stats = self.state.stages.setdefault(stage.name, StageStats(stage.name))
                self._spawn(stage.name, run_filter, stage, stats, self.frames, current, following, self.stop)
            current = following
        if ENCODE in self.media and self.source is None:
            encoded = Channel(QUEUE_DEPTH)
            self._spawn(ENCODE, self._pool(self.media[ENCODE], EncodeLogic(self.config.clip_codec)).run, current,
                        encoded)
            current = encoded
        if self.autoscaler is not None:
            self._spawn("autoscale", self.autoscaler.run, self.stop)
        return current

    def _start_cutting(self, cut: Channel) -> list[StageConfig]:
        """Plan windows, decode them, split, cut into clips and read each clip's frames, putting the clips into
        `cut`; the clip stages that follow."""
        split, *rest = self.config.stages
        window = self.declarations[split.name].split_window
        planned, decoded, answered, clips = (Channel(QUEUE_DEPTH) for _ in range(4))
        self._spawn("plan", plan_split, self.videos, window, self.writer.resumable, planned, self.stop,
                    self.state.video_planned)
        decoding = SplitDecodeLogic(split, self.config.strict, self.frames)
        self._spawn(DECODE, self._pool(self.media[DECODE], decoding).run, planned, decoded)
        self._spawn(split.name, self._pool(split, SplitLogic(split, window, self.frames)).run, decoded, answered)
        encoding = self.config.clips.encode != "none"
        self._spawn("cut-scenes", cut_clips, self.writer.clips_tmp if encoding else None, answered, clips, self.stop)
        reading = ClipFramesLogic([s for s in rest if s.model], self.config.clips.encode == "all",
                                  self.config.clip_codec, self.frames)
        self._spawn(CUT, self._pool(self.media[CUT], reading).run, clips, cut)
        return rest

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        def guarded() -> None:
            try:
                target(*args)
            except BaseException as exc:  # any step's failure ends the run with its error, never a hang
                self._failed.append((name, exc))
                self.stop.set()

        thread = threading.Thread(target=guarded, name=f"step-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def _write(self, final: queue.Queue, on_tick: Callable[[], None]) -> None:
        clips: list[Clip] = []
        while True:
            self._raise_failure()
            self.state.sample()
            try:
                item = final.get(timeout=0.2)
            except queue.Empty:
                on_tick()
                continue
            if item is END:
                return
            if isinstance(item, VideoItem):
                clips = []
            elif isinstance(item, Clip):
                clips.append(item)
                self.state.clip_written(item)
            elif isinstance(item, VideoDone):
                self._finish(item.video, clips)
            on_tick()

    def _raise_failure(self) -> None:
        if not self._failed:
            return
        step, exc = self._failed[0]
        if isinstance(exc, PipelineError):
            raise exc
        raise PipelineError(f"step {step!r} failed: {type(exc).__name__}: {exc}") from exc

    def _finish(self, video: VideoItem, clips: list[Clip]) -> None:
        for clip in clips:  # frames a filtered clip's later stages never read
            clip.release_frames(self.frames)
        if self.source is not None:  # its clips were read from the output folder, not from the video
            rows = self.source.finish_video(video, clips)
        else:
            rows = self._write_video(video, clips)
        self.state.videos_done += 1
        self.state.resumed += video.resumed is not None
        self.state.clips += len(rows)
        self.state.kept += sum(1 for r in rows if is_kept(r))
        self.state.video_finished(video)
        path = str(video.video.path)
        if video.error:
            self.state.failures.append(Failure(path, video.error))
        if video.truncated:
            self.state.warnings.append({"video": str(video.video.path), **video.notes})
        for clip in clips:
            for stage, reason in clip.errors.items():
                self.state.failures.append(Failure(path, reason, clip.index, stage))

    def _write_video(self, video: VideoItem, clips: list[Clip]) -> list[dict[str, Any]]:
        if video.resumed is None and video.error is None and video.video.changed():
            video.error = (f"{video.video.path}: the file changed while the run read it; rerun the same command "
                           f"to redo it")
        return self.writer.finish_video(video, clips)
