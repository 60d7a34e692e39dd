"""Counters each step updates and the progress display and run.json read."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

SERVICE_SAMPLES = 1000
"""Answered requests remembered per stage for measuring its speed (the autoscaler reads a recent window)."""


@dataclass(frozen=True)
class Served:
    """One answered request: when, how many items it carried, and the seconds its worker spent on it."""

    at: float
    items: int
    seconds: float


@dataclass
class StageStats:
    name: str
    replicas: int = 0
    done: int = 0
    failed: int = 0
    restarts: int = 0
    retried: int = 0
    """Items sent again because their worker died or hung while they were in flight."""
    poisoned: int = 0
    """Items that failed alone after losing their worker `max_attempts` times."""
    queued: int = 0
    ring_fallbacks: int = 0
    bytes_moved: int = 0
    """Bytes this process sent and received for the stage's requests (shared memory it wrote included)."""
    """Workers started without the shared-memory ring they were meant to have (their arrays went as frames)."""
    states: list[str] = field(default_factory=list)
    first_at: float | None = None
    """When the first item was handed to a worker: throughput excludes model loading."""
    last_at: float | None = None
    ready_at: float | None = None
    """When every replica had finished setup() (its model loaded): the end of this stage's start-up."""
    nodes: collections.Counter[str] = field(default_factory=collections.Counter)
    """Replica starts per node, where a replica reports the node it runs on (on Ray)."""
    _served: collections.deque[Served] = field(default_factory=lambda: collections.deque(maxlen=SERVICE_SAMPLES),
                                               repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def mark_served(self, items: int, seconds: float) -> None:
        """A worker answered a request of `items` after `seconds` on it (the pool's thread)."""
        with self._lock:
            self._served.append(Served(time.monotonic(), items, seconds))

    def served_since(self, since: float) -> list[Served]:
        """The answered requests since `since` (any thread)."""
        with self._lock:
            return [s for s in self._served if s.at >= since]

    def mark_started(self) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()

    def mark_done(self, count: int = 1) -> None:
        self.done += count
        self.last_at = time.monotonic()

    def items_per_s(self) -> float:
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return 0.0
        return self.done / (self.last_at - self.first_at)

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        return {"items": self.done, "failed": self.failed, "items_per_s": round(self.items_per_s(), 3),
                "replicas": self.replicas, "worker_restarts": self.restarts, "retried": self.retried,
                "poisoned": self.poisoned, "ring_fallbacks": self.ring_fallbacks,
                "bytes_moved": self.bytes_moved,
                **({"nodes": dict(self.nodes)} if self.nodes else {})}


TIMELINE_SAMPLES = 512
"""The most samples a run's timeline holds: a long run keeps every other one and samples half as often."""


@dataclass
class Timeline:
    """Per-stage items done and live replicas over the run, sampled about every `interval_s`, for the
    report's plots. Its size is bounded: when `TIMELINE_SAMPLES` are held, every other one is dropped and
    the interval doubles, so a day-long run keeps evenly spaced samples as a minute-long one does. Items done
    are cumulative, so throughput between any two kept samples stays exact."""

    interval_s: float = 1.0
    t: list[float] = field(default_factory=list)
    """Seconds since the run started."""
    done: dict[str, list[int]] = field(default_factory=dict)
    replicas: dict[str, list[int]] = field(default_factory=dict)
    """Replicas whose worker was up (its model loaded) at each sample."""

    def sample(self, t: float, stages: dict[str, StageStats], force: bool = False) -> None:
        """Record the stages at `t` if `interval_s` has passed since the last sample (or `force`)."""
        if not force and self.t and t - self.t[-1] < self.interval_s:
            return
        for name, stats in stages.items():
            self.done.setdefault(name, [0] * len(self.t)).append(stats.done)
            self.replicas.setdefault(name, [0] * len(self.t)).append(stats.states.count("ready"))
        self.t.append(round(t, 3))
        if len(self.t) >= TIMELINE_SAMPLES:
            self._halve()

    def _halve(self) -> None:
        """Keep every other sample, from the first, and sample half as often: the spacing stays even."""
        keep = range(0, len(self.t), 2)
        self.t = [self.t[i] for i in keep]
        self.done = {name: [values[i] for i in keep] for name, values in self.done.items()}
        self.replicas = {name: [values[i] for i in keep] for name, values in self.replicas.items()}
        self.interval_s *= 2
