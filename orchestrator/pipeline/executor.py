"""Run a pipeline on this machine: one thread per step, bounded queues between them, workers per stage.

    decode ─q─▶ split pool ─q─▶ extract clips ─q─▶ clip stage pools / filters ─q─▶ writer (this thread)

Queues are bounded, so a long input never piles up in memory (backpressure). Each model stage's pool
owns its workers; everything is stopped and reaped on return, on error and on Ctrl-C.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.pipeline.config import PipelineConfig, StageConfig
from orchestrator.pipeline.items import END, Clip, VideoItem
from orchestrator.pipeline.pool import StagePool
from orchestrator.pipeline.stats import StageStats
from orchestrator.pipeline.steps import ClipModelLogic, SplitLogic, decode_videos, extract_clips, run_filter
from orchestrator.pipeline.video import VideoInput
from orchestrator.pipeline.writer import OutputWriter
from orchestrator.supervisor.handle import WorkerHandle

QUEUE_DEPTH = 8

HandleFactory = Callable[[StageConfig, int], WorkerHandle]


@dataclass
class RunState:
    """What the progress display reads while the run goes on."""

    videos_total: int
    videos_done: int = 0
    clips: int = 0
    kept: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    stages: dict[str, StageStats] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


class LocalExecutor:
    def __init__(self, config: PipelineConfig, videos: list[VideoInput], writer: OutputWriter,
                 make_handle: HandleFactory, state: RunState) -> None:
        self.config = config
        self.videos = videos
        self.writer = writer
        self.make_handle = make_handle
        self.state = state
        self.stop = threading.Event()
        self.pools: list[StagePool] = []
        self.threads: list[threading.Thread] = []

    def run(self, on_tick: Callable[[], None] = lambda: None) -> None:
        """Start every stage's workers, stream all videos through, write outputs; always stops workers."""
        try:
            final = self._start_steps(on_tick)
            self._write(final, on_tick)
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join()
            for pool in self.pools:
                pool.close()

    def _queue(self) -> queue.Queue:
        return queue.Queue(maxsize=QUEUE_DEPTH)

    def _pool(self, stage: StageConfig, logic: Any) -> StagePool:
        stats = self.state.stages.setdefault(stage.name, StageStats(stage.name))
        factories = [lambda s=stage, i=i: self.make_handle(s, i) for i in range(stage.replicas)]
        pool = StagePool(logic, factories, stage.batch_size, stats, self.stop)
        self.pools.append(pool)
        return pool

    def _start_steps(self, on_tick: Callable[[], None]) -> queue.Queue:
        split, *rest = self.config.stages
        model_stages = [s for s in rest if s.model]
        split_pool = self._pool(split, SplitLogic(split))
        pool_of = {s.name: self._pool(s, ClipModelLogic(s)) for s in model_stages}
        for stage in rest:
            if stage.filter:
                self.state.stages.setdefault(stage.name, StageStats(stage.name))
        errors = self._start_all(on_tick)
        if errors:
            raise errors[0]
        decoded, split_out = self._queue(), self._queue()
        self._spawn(decode_videos, self.videos, split, decoded, self.stop)
        self._spawn(split_pool.run, decoded, split_out)
        current = self._queue()
        self._spawn(extract_clips, model_stages, self.writer.clips_tmp, self.config.clip_codec, split_out, current,
                    self.stop)
        for stage in rest:
            following = self._queue()
            if stage.model:
                self._spawn(pool_of[stage.name].run, current, following)
            else:
                self._spawn(run_filter, stage, self.state.stages[stage.name], current, following, self.stop)
            current = following
        return current

    def _start_all(self, on_tick: Callable[[], None]) -> list[BaseException]:
        """Start every stage's workers at once: model loading overlaps across stages."""
        errors: list[BaseException] = []

        def start(pool: StagePool) -> None:
            try:
                pool.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(pool,), daemon=True) for pool in self.pools]
        for thread in threads:
            thread.start()
        try:
            while alive := [thread for thread in threads if thread.is_alive()]:
                alive[0].join(0.2)
                on_tick()  # the display shows workers starting while models load
        except BaseException:  # Ctrl-C while models load: stop them now rather than after setup
            for pool in self.pools:
                pool.kill_starting()
            for thread in threads:
                thread.join()
            raise
        return errors

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _write(self, final: queue.Queue, on_tick: Callable[[], None]) -> None:
        video: VideoItem | None = None
        clips: list[Clip] = []
        while True:
            try:
                item = final.get(timeout=0.2)
            except queue.Empty:
                on_tick()
                continue
            if item is END or isinstance(item, VideoItem):
                if video is not None:
                    self._finish(video, clips)
                if item is END:
                    return
                video, clips = item, []
                if not item.scenes or item.error:
                    self._finish(item, [])
                    video = None
            else:
                clips.append(item)
            on_tick()

    def _finish(self, video: VideoItem, clips: list[Clip]) -> None:
        rows = self.writer.finish_video(video, clips)
        self.state.videos_done += 1
        self.state.clips += len(rows)
        self.state.kept += sum(1 for r in rows if r["path"])
        if video.error:
            self.state.failures.append({"video": str(video.video.path), "reason": video.error})
        for clip in clips:
            for stage, reason in clip.errors.items():
                self.state.failures.append({"video": str(video.video.path), "clip_index": str(clip.index),
                                            "stage": stage, "reason": reason})
