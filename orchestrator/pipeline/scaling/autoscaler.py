"""The running side of `replicas: auto`: measure every model stage, ask the policy, grow a pool.

    every interval: stats (answers, states, queue) + Metered (frames per item) ─▶ policy.choose
        ─▶ GPU share placed beside the run's others ─▶ StagePool.add_replica() ─▶ decision in run.json

Runs on its own thread beside the steps, so measuring never slows a stage's loop; the pools it grows start
the new worker themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.items import Clip, SplitRequest
from orchestrator.pipeline.pool import StagePool, StepLogic
from orchestrator.pipeline.scaling.gpus import GpuAssignment, place_replica
from orchestrator.pipeline.scaling.policy import (
    AutoscalePolicy,
    Capacity,
    Choice,
    ScalingDecision,
    StageLoad,
    StageMeasure,
    choose,
    speed,
)

STARTING = ("starting", "restarting")
"""Replica states (`StageStats.states`) that will answer soon; a broken replica never will."""


@dataclass
class Resources:
    """What replicas may use: cores, each model stage's threads per replica, GPUs and the shares placed
    on them (the run's own assignment, which a new replica's share joins)."""

    cores: int
    threads: Mapping[str, int]
    n_gpus: int
    gpu_of: dict[tuple[str, int], GpuAssignment]


class Metered(StepLogic):
    """A stage's logic, counting the input frames its items cover and the items it works on."""

    def __init__(self, inner: StepLogic) -> None:
        self.inner = inner
        self.frames = 0
        self.items = 0

    def wants(self, item: Any) -> bool:
        return self.inner.wants(item)

    def affinity(self, item: Any) -> Hashable | None:
        return self.inner.affinity(item)

    def node_of(self, item: Any) -> str | None:
        return self.inner.node_of(item)

    def payload(self, item: Any) -> Any:
        """Count the item as it is sent (a window not decoded yet counts the core it asks for)."""
        if isinstance(item, SplitRequest):
            self.frames += item.real or item.core or 0
        elif isinstance(item, Clip):
            self.frames += item.end - item.start + 1
        self.items += 1
        return self.inner.payload(item)

    def absorb(self, item: Any, result: Any) -> None:
        self.inner.absorb(item, result)

    def fail(self, item: Any, reason: str) -> None:
        self.inner.fail(item, reason)

    @property
    def frames_per_item(self) -> float | None:
        return self.frames / self.items if self.items else None


@dataclass
class _Watched:
    stage: StageConfig
    pool: StagePool
    logic: Metered
    num_gpus: float


class Autoscaler:
    """Grows `replicas: auto` stages while the run goes on; every decision lands in `decisions`."""

    def __init__(self, resources: Resources, decisions: list[ScalingDecision], started: float,
                 policy: AutoscalePolicy | None = None) -> None:
        self.resources = resources
        self.decisions = decisions
        self.started = started
        self.policy = policy or AutoscalePolicy()
        self._stages: list[_Watched] = []
        self._held: set[str] = set()

    def watch(self, stage: StageConfig, pool: StagePool, logic: Metered, num_gpus: float) -> None:
        """Measure a model stage (every one counts: the slowest may be a fixed one) and grow it if auto."""
        self._stages.append(_Watched(stage, pool, logic, num_gpus))

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.policy.interval_s):
            self.tick()

    def tick(self) -> Choice:
        now = time.monotonic()
        loads = [self._load(w, now) for w in self._stages]
        capacity = Capacity(self.resources.cores, self.resources.n_gpus, tuple(self.resources.gpu_of.values()))
        choice = choose(loads, capacity)
        if choice.grow is not None:
            self._grow(next(w for w in self._stages if w.stage.name == choice.grow))
            self._record(now, choice, loads)
        elif choice.held and choice.held not in self._held:  # each hold once: a long run's list stays short
            self._held.add(choice.held)
            self._record(now, choice, loads)
        return choice

    def _load(self, watched: _Watched, now: float) -> StageLoad:
        stats = watched.pool.stats
        stage = watched.stage
        return StageLoad(
            name=stage.name, replicas=stats.replicas, starting=sum(s in STARTING for s in stats.states),
            threads=self.resources.threads[stage.name], num_gpus=watched.num_gpus,
            max_replicas=stage.max_replicas if stage.auto_replicas else None,
            speed=speed(stats.served_since(now - self.policy.window_s), now, self.policy),
            frames_per_item=watched.logic.frames_per_item, waiting=stats.queued,
        )

    def _grow(self, watched: _Watched) -> None:
        """Place the new replica's GPU share first: the pool may start its worker at once."""
        name, index = watched.stage.name, watched.pool.stats.replicas
        placed = place_replica(self.resources.gpu_of.values(), watched.num_gpus, self.resources.n_gpus)
        assert placed is not None, "choose() grows only a stage whose share fits"
        self.resources.gpu_of[(name, index)] = placed
        watched.pool.add_replica()

    def _record(self, now: float, choice: Choice, loads: list[StageLoad]) -> None:
        stages = {load.name: StageMeasure(load.replicas + (load.name == choice.grow), _rounded(load.speed),
                                          _rounded(load.frames_per_item), _rounded(load.throughput), load.waiting)
                  for load in loads}
        self.decisions.append(ScalingDecision(round(now - self.started, 1), choice.grow, choice.held or None,
                                              choice.reason, stages))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
