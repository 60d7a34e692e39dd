"""Replicas sized by measurement: which stage gets one more replica, decided from what the run measured.

    per stage: answered requests (when, items, worker seconds) ─▶ speed: items per worker-second, recent window
               input frames its items cover                    ─▶ frames per item (its share of the input)
        throughput = replicas x speed x frames per item        (input frames per second it keeps up with)

    the slowest stage with work waiting ─▶ may it grow? (replicas: auto, below max_replicas, its threads fit
        the free cores, its GPU share fits a GPU) ─▶ one more replica, or the reason it cannot

Every `auto` stage starts with one replica; a decision adds at most one, and none is made while a replica is
still starting, so each is taken on speeds measured with the replicas that are running. Only the slowest
stage ever grows: a replica anywhere else would leave the pipeline as slow and take cores from it. A stage
with nothing waiting keeps up with its input already (it is not what the pipeline waits for), however
slow it measures, so it is never the slowest.

Speed is items over the seconds workers spent on them, not over wall time, so a stage that waits for input
does not look slow. Stages are compared in input frames per second, because their items differ: a split
window covers 200 frames, a clip tens; counting items per video instead would be known only once a video
has gone all the way through, frames per item from the first item on.

Xenna's autoscaler measures over 180 s and wants at least 5 task times; runs here last minutes, so the
window is 60 s (a decision still sees what the replicas running now do) with the same 5 answers at least
(a worker's first answers carry its warm-up, and fewer would let one slow request decide).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.pipeline.scaling.gpus import GpuAssignment, place_replica
from orchestrator.pipeline.stats import Served


@dataclass(frozen=True)
class AutoscalePolicy:
    """How often and on what measurements `replicas: auto` stages grow."""

    window_s: float = 60.0
    """Answers older than this no longer count towards a stage's speed."""
    min_answers: int = 5
    """A stage's speed is known once this many of its requests were answered within the window."""
    interval_s: float = 2.0
    """Time between decisions (none is made anyway until the replicas added before are up)."""


def speed(served: Sequence[Served], now: float, policy: AutoscalePolicy) -> float | None:
    """Items per worker-second over the policy's window; None until enough answers were seen."""
    recent = [s for s in served if s.at >= now - policy.window_s]
    seconds = sum(s.seconds for s in recent)
    if len(recent) < policy.min_answers or seconds <= 0:
        return None
    return sum(s.items for s in recent) / seconds


@dataclass(frozen=True)
class StageLoad:
    """What the policy knows of one model stage at a decision."""

    name: str
    replicas: int
    """Replicas it runs, those still starting included."""
    starting: int
    """Replicas not yet answering: starting, loading their model, or restarting."""
    threads: int
    """Intra-op threads each replica uses."""
    num_gpus: float
    max_replicas: int | None
    """None: a fixed number of replicas (`replicas: N`)."""
    speed: float | None
    """Items per worker-second (`speed`); None until measured."""
    frames_per_item: float | None
    """Input frames its items cover, on average; None before its first item."""
    waiting: int
    """Items waiting for a worker."""

    @property
    def throughput(self) -> float | None:
        """Input frames per second the stage keeps up with, with all its replicas busy."""
        if self.speed is None or self.frames_per_item is None:
            return None
        return self.replicas * self.speed * self.frames_per_item


@dataclass(frozen=True)
class Capacity:
    """What a new replica must fit in: the cores a run may use, and the GPUs beside the shares placed."""

    cores: int
    n_gpus: int = 0
    gpus: tuple[GpuAssignment, ...] = ()


@dataclass(frozen=True)
class Choice:
    """A decision: `grow` names the stage that gets one more replica (None: none does) and `reason` says why.
    When the slowest stage cannot grow, `held` names it and what holds it ("ocr: cores")."""

    grow: str | None
    reason: str
    held: str = ""


@dataclass(frozen=True)
class StageMeasure:
    """One stage as a decision saw it (speeds over the policy's window; None: not measured yet)."""

    replicas: int
    items_per_s_per_replica: float | None
    frames_per_item: float | None
    frames_per_s: float | None
    waiting: int


@dataclass(frozen=True)
class ScalingDecision:
    """A replica added (`grow`), or what held the slowest stage back (`held`), as run.json lists them."""

    at_s: float
    grow: str | None
    held: str | None
    reason: str
    stages: dict[str, StageMeasure]


def choose(stages: Sequence[StageLoad], capacity: Capacity) -> Choice:
    """One more replica for the slowest stage when it may grow and it fits; otherwise why not."""
    if starting := [s.name for s in stages if s.starting]:
        return Choice(None, f"waiting for replicas of {', '.join(starting)} to start")
    if unmeasured := [s.name for s in stages if s.waiting and s.throughput is None]:
        return Choice(None, f"measuring {', '.join(unmeasured)}")
    loaded = [s for s in stages if s.waiting and s.throughput is not None]
    if not loaded:
        return Choice(None, "no stage has work waiting: each keeps up with its input (the parent's decoding or "
                            "cutting sets the pace, or the input is all read)")
    slowest = min(loaded, key=lambda s: s.throughput or 0.0)
    rates = ", ".join(f"{s.name} {s.throughput:.1f}" for s in loaded)
    why = f"{slowest.name} is the slowest stage with work waiting (input frames/s: {rates})"
    if (blocked := _why_not(slowest, stages, capacity)) is not None:
        limit, explained = blocked
        return Choice(None, f"{why} but {explained}", held=f"{slowest.name}: {limit}")
    return Choice(slowest.name, f"{why}: replica {slowest.replicas + 1} of at most {slowest.max_replicas}")


def _why_not(stage: StageLoad, stages: Sequence[StageLoad], capacity: Capacity) -> tuple[str, str] | None:
    """(what holds the stage, the sentence saying so), or None when it may grow."""
    if stage.max_replicas is None:
        return "fixed", f"has a fixed number of replicas ({stage.replicas}); replicas: auto lets it grow"
    if stage.replicas >= stage.max_replicas:
        return "max_replicas", f"has max_replicas ({stage.max_replicas})"
    used = sum(s.replicas * s.threads for s in stages)
    if used + stage.threads > capacity.cores:
        return "cores", (f"another replica's {stage.threads} thread(s) do not fit: {used} of {capacity.cores} cores "
                         f"are taken (ORCHESTRATOR_CPUS sets the cores a run may use)")
    if place_replica(capacity.gpus, stage.num_gpus, capacity.n_gpus) is None:
        return "gpus", f"no GPU has room for another num_gpus {stage.num_gpus:g} replica"
    return None
