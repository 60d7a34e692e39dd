"""A stage's replicas: feed them from a queue, restart the dead, emit results in input order.

    in queue ─▶ pending ─▶ replica 0..n (≤ max_in_flight requests each, batch_size items a request)
                   ▲            │ reply              │ WorkerDied: restart with backoff,
                   └────────────┼────────────────────┘ its requests go back to the front of pending
                                ▼
                reorder buffer (seq) ─▶ out queue, in input order

A request that a dead worker never answered is re-sent to another replica and nothing is emitted twice,
so losing a worker loses and duplicates no item. The thread owns its handles' sockets.
"""

from __future__ import annotations

import abc
import collections
import queue
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from orchestrator.errors import OrchestratorError, WorkerDied, WorkerError
from orchestrator.pipeline.items import END, put
from orchestrator.pipeline.stats import StageStats
from orchestrator.supervisor.handle import WorkerHandle

IDLE_WAIT_S = 0.1


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a dead worker up to `max_restarts` times per `window_s`, waiting `backoff_s * 2**n` first."""

    max_restarts: int = 3
    window_s: float = 300.0
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0


class StepLogic(abc.ABC):
    """What a model stage does with an item: whether to send it, what to send, what to keep."""

    @abc.abstractmethod
    def wants(self, item: Any) -> bool: ...

    @abc.abstractmethod
    def payload(self, item: Any) -> Any: ...

    @abc.abstractmethod
    def absorb(self, item: Any, result: Any) -> None: ...

    @abc.abstractmethod
    def fail(self, item: Any, reason: str) -> None: ...


@dataclass
class _Replica:
    handle: WorkerHandle
    make: Callable[[], WorkerHandle]
    outstanding: dict[int, list[tuple[int, Any]]]
    deaths: collections.deque[float]
    broken: str | None = None


class StagePool:
    def __init__(self, logic: StepLogic, handles: list[Callable[[], WorkerHandle]], batch_size: int,
                 stats: StageStats, stop: threading.Event, restart: RestartPolicy | None = None) -> None:
        self.logic = logic
        self.batch_size = batch_size
        self.stats = stats
        self.stop = stop
        self.restart = restart or RestartPolicy()
        self._factories = handles
        self.replicas: list[_Replica] = []
        stats.replicas, stats.states = len(handles), ["starting"] * len(handles)
        self._starting: list[WorkerHandle] = []
        self._turn = 0

    def start(self) -> None:
        """Launch every replica first, then wait for each: models load in parallel."""
        handles = [make() for make in self._factories]
        self._starting = handles
        try:
            for handle in handles:
                handle.launch()
            for handle in handles:
                handle.handshake()
        except BaseException:
            for handle in handles:
                handle.close()
            raise
        self.replicas = [_Replica(h, m, {}, collections.deque()) for h, m in zip(handles, self._factories, strict=True)]
        self._update_states()

    def kill_starting(self) -> None:
        """Kill workers still starting (safe from another thread: it only signals the processes); the
        starting thread then sees them die and cleans up."""
        for handle in self._starting:
            handle.kill()

    def close(self) -> None:
        for replica in self.replicas:
            replica.handle.close()

    def run(self, inq: queue.Queue, outq: queue.Queue) -> None:
        """Move every item from `inq` to `outq` (in order), sending the wanted ones through the replicas."""
        pending: collections.deque[tuple[int, Any]] = collections.deque()
        ready: dict[int, Any] = {}
        next_in, next_out, input_done = 0, 0, False
        while not self.stop.is_set():
            busy = bool(pending) or any(r.outstanding for r in self.replicas)
            if not input_done and len(pending) < self._capacity():
                input_done, next_in = self._take(inq, pending, ready, next_in, wait=not busy)
            self._dispatch(pending)
            self._collect(pending, ready)
            next_out = self._emit(ready, next_out, outq)
            self.stats.queued = inq.qsize() + len(pending)
            if input_done and not pending and not any(r.outstanding for r in self.replicas) and not ready:
                put(outq, END, self.stop)
                return

    def _capacity(self) -> int:
        return max(1, len(self.replicas)) * self.batch_size * 2

    def _take(self, inq: queue.Queue, pending: collections.deque, ready: dict[int, Any], seq: int,
              wait: bool) -> tuple[bool, int]:
        try:
            item = inq.get(timeout=IDLE_WAIT_S) if wait else inq.get_nowait()
        except queue.Empty:
            return False, seq
        if item is END:
            return True, seq
        if self.logic.wants(item) and self._usable():
            pending.append((seq, item))
        else:
            if self.logic.wants(item):
                self.logic.fail(item, self._broken_reason())
            ready[seq] = item
        return False, seq + 1

    def _usable(self) -> bool:
        return any(r.broken is None for r in self.replicas)

    def _broken_reason(self) -> str:
        return next((r.broken for r in self.replicas if r.broken), "no worker")

    def _dispatch(self, pending: collections.deque) -> None:
        """Send pending items to the least-loaded replica, rotating among equals so all replicas work."""
        while pending:
            free = [i for i, r in enumerate(self.replicas)
                    if r.broken is None and len(r.handle.in_flight) < r.handle.policy.max_in_flight]
            if not free:
                return
            self._turn += 1
            index = min(free, key=lambda i: (len(self.replicas[i].handle.in_flight),
                                             (i - self._turn) % len(self.replicas)))
            self._send(self.replicas[index], pending)

    def _send(self, replica: _Replica, pending: collections.deque) -> None:
        batch = [pending.popleft() for _ in range(min(self.batch_size, len(pending)))]
        items = [self.logic.payload(item) for _, item in batch]
        try:
            if self.batch_size > 1:
                request_id = replica.handle.submit(items, items=True)
            else:
                request_id = replica.handle.submit(items[0])
        except OrchestratorError as exc:
            pending.extendleft(reversed(batch))
            self._on_death(replica, exc, pending)
            return
        replica.outstanding[request_id] = batch
        self.stats.mark_started()

    def _collect(self, pending: collections.deque, ready: dict[int, Any]) -> None:
        waiting = [r for r in self.replicas if r.outstanding]
        if not waiting:
            return
        poller = zmq.Poller()
        for replica in waiting:
            sock, pidfd = replica.handle.wait_targets
            poller.register(sock, zmq.POLLIN)
            poller.register(pidfd, select.POLLIN)
        poller.poll(int(IDLE_WAIT_S * 1000))
        for replica in waiting:
            self._drain(replica, pending, ready)

    def _drain(self, replica: _Replica, pending: collections.deque, ready: dict[int, Any]) -> None:
        while replica.outstanding:
            try:
                reply = replica.handle.receive(timeout=0)
            except TimeoutError:
                return
            except WorkerError as exc:
                for seq, item in replica.outstanding.pop(exc.request_id, []):
                    self.logic.fail(item, str(exc))
                    self.stats.failed += 1
                    ready[seq] = item
                continue
            except (WorkerDied, OrchestratorError) as exc:
                self._on_death(replica, exc, pending)
                return
            batch = replica.outstanding.pop(reply.request_id)
            results = reply.payload if self.batch_size > 1 else [reply.payload]
            for (seq, item), result in zip(batch, results, strict=True):
                self.logic.absorb(item, result)
                self.stats.mark_done()
                ready[seq] = item

    def _emit(self, ready: dict[int, Any], next_out: int, outq: queue.Queue) -> int:
        while next_out in ready and put(outq, ready[next_out], self.stop):
            del ready[next_out]
            next_out += 1
        return next_out

    def _on_death(self, replica: _Replica, exc: Exception, pending: collections.deque) -> None:
        """Requeue what the dead worker held (front of the line), then restart it within the policy."""
        for request_id in sorted(replica.outstanding, reverse=True):
            for seq_item in reversed(replica.outstanding[request_id]):
                pending.appendleft(seq_item)
        replica.outstanding.clear()
        replica.handle.close()
        now = time.monotonic()
        replica.deaths.append(now)
        while replica.deaths and now - replica.deaths[0] > self.restart.window_s:
            replica.deaths.popleft()
        if len(replica.deaths) > self.restart.max_restarts:
            limit = f"{self.restart.max_restarts} restarts in {self.restart.window_s:.0f}s"
            replica.broken = f"{exc} (gave up after {limit})"
        else:
            self._restart(replica, len(replica.deaths))
        if not self._usable():
            while pending:
                _, item = pending.popleft()
                self.logic.fail(item, self._broken_reason())
        self._update_states()

    def _restart(self, replica: _Replica, attempt: int) -> None:
        delay = min(self.restart.backoff_s * 2 ** (attempt - 1), self.restart.max_backoff_s)
        if self.stop.wait(delay):
            replica.broken = "stopped"
            return
        replica.handle = replica.make()
        self.stats.restarts += 1
        try:
            replica.handle.start()
        except OrchestratorError as exc:
            replica.handle.close()
            replica.broken = f"restart failed: {exc}"

    def _update_states(self) -> None:
        self.stats.states = ["broken" if r.broken else "ready" if r.handle.ready else "starting" for r in self.replicas]
