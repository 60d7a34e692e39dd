"""A stage's replicas: feed them, keep them alive, retry what a death interrupted, emit results in input order.

    in channel ─▶ pending ─▶ replica 0..n   (≤ max_in_flight requests each, ≤ batch_size items a request)
                     ▲           │ Answer / Failed ─▶ absorbed or failed, item by item
                     │           │ Died ─▶ its items go back to the front (one more attempt each) and the
                     └───────────┘         replica restarts after a backoff, without stalling the others
                                 ▼
                 reorder buffer (seq) ─▶ out queue, in input order

One thread runs the loop and waits on every worker's socket and pidfd and on the input channel at once, so a
death, a reply or new input is seen at once, and every deadline (start-up, request, heartbeat) is the handle's.
An item in flight when its worker died is retried up to `max_attempts` times, alone, then fails by itself (a
poison item). A replica that dies `max_restarts + 1` times in a row without answering anything is broken; when
every replica is, the stage's items fail at once with the reason. Nothing is lost or emitted twice.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import queue
import select
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq

from orchestrator.errors import OrchestratorError, PipelineError, ProtocolMismatch, WorkerDied
from orchestrator.pipeline.channel import Channel
from orchestrator.pipeline.items import END
from orchestrator.pipeline.stats import StageStats
from orchestrator.supervisor.events import Answer, Died, Event, Failed, Hello, Phase, SetUp, SetupFailed
from orchestrator.supervisor.interface import Worker
from orchestrator.supervisor.policy import StopGrace
from orchestrator.supervisor.shutdown import close_all
from workers.protocol import ProtocolError

MAX_WAIT_S = 0.1
"""Longest wait without news, so a stop is noticed promptly."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a stage copes with workers that die or hang."""

    max_attempts: int = 3
    """Times an item may be in flight on a worker that died or hung before it fails alone."""
    max_restarts: int = 3
    """Deaths in a row, with no request answered in between, that a replica survives; one more breaks it.
    One poison item costs at most `max_attempts` of them, so it never breaks a replica by itself."""
    backoff_s: float = 0.5
    """Wait before the n-th restart in a row: backoff_s * 2**(n-1), at most max_backoff_s."""
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

    def affinity(self, item: Any) -> Hashable | None:
        """Items of one key go, one at a time and in order, to the replica that took the first of them (a
        media worker keeps its place in a video); None: any replica, batched."""
        return None

    def node_of(self, item: Any) -> str | None:
        """The cluster node holding the item's input frames, whose replicas the item prefers (None: any)."""
        return None


@dataclass
class _Work:
    seq: int
    item: Any
    attempts: int = 0
    """Times a worker died or hung while this item was in flight."""
    last_death: str = ""


@dataclass
class _Replica:
    index: int
    worker: Worker | None = None
    outstanding: dict[int, list[_Work]] = field(default_factory=dict)
    deaths_in_a_row: int = 0
    restart_at: float | None = None
    broken: str | None = None
    sent_at: dict[int, float] = field(default_factory=dict)
    """When each outstanding request was sent, to time how long the worker spent on it."""
    answered_at: float | None = None
    bytes_counted: int = 0
    """Of its worker's `bytes_moved`, what the stage's stats have counted."""


class StagePool:
    def __init__(self, logic: StepLogic, make_worker: Callable[[int], Worker], replicas: int, batch_size: int,
                 stats: StageStats, stop: threading.Event, retry: RetryPolicy | None = None,
                 adopt: Mapping[int, Worker] | None = None) -> None:
        self.logic = logic
        self.make_worker = make_worker
        self.batch_size = batch_size
        self.stats = stats
        self.stop = stop
        self.retry = retry or RetryPolicy()
        self.replicas = [_Replica(i) for i in range(replicas)]
        self._adopt = dict(adopt or {})
        self._ever_up = False
        self._lock = threading.Lock()
        self._pending: collections.deque[_Work] = collections.deque()
        self._bound: dict[Hashable, int] = {}
        """The replica each affinity key's items go to, until it dies."""
        self._ready: dict[int, Any] = {}
        self._next_in = self._next_out = 0
        self._input_done = False
        stats.replicas = replicas
        self._update_states()

    # --- outside the loop's thread ----------------------------------------------------------------
    def add_replica(self) -> None:
        """Grow the stage by one replica (the loop starts it); safe from any thread."""
        with self._lock:
            self.replicas.append(_Replica(len(self.replicas)))
            self.stats.replicas = len(self.replicas)

    def workers(self) -> list[Worker]:
        """Every worker the pool holds, those handed to it but not yet started included."""
        with self._lock:
            return [*(r.worker for r in self.replicas if r.worker is not None), *self._adopt.values()]

    def close(self, grace: StopGrace) -> None:
        close_all(self.workers(), grace)

    # --- the loop -------------------------------------------------------------------------------
    def run(self, inq: queue.Queue, outq: queue.Queue) -> None:
        """Move every item from `inq` to `outq` in order, sending the wanted ones through the replicas.

        Raises PipelineError when the stage cannot run at all (its model fails to set up)."""
        while not self.stop.is_set():
            self._start_due()
            self._take(inq)
            self._dispatch()
            self._wait(inq)
            for replica in list(self.replicas):
                if replica.worker is not None:
                    for event in replica.worker.events():
                        self._on_event(replica, event)
                    self._count_bytes(replica)
            self._emit(outq)
            self.stats.queued = inq.qsize() + len(self._pending)
            if self._input_done and self._next_out == self._next_in:
                if self._put_end(outq):
                    return

    def _take(self, inq: queue.Queue) -> None:
        if isinstance(inq, Channel):
            inq.clear_wakeup()
        while not self._input_done and self._next_in - self._next_out < self._window():
            try:
                item = inq.get_nowait()
            except queue.Empty:
                return
            if item is END:
                self._input_done = True
                return
            seq, self._next_in = self._next_in, self._next_in + 1
            if not self.logic.wants(item):
                self._ready[seq] = item
            elif self._usable():
                self._pending.append(_Work(seq, item))
            else:
                self._fail(_Work(seq, item), self._broken_reason())

    def _window(self) -> int:
        """Items taken but not yet emitted: enough to keep every replica full, and no more (backpressure)."""
        return len(self.replicas) * 2 * self.batch_size + 2 * self.batch_size

    def _wait(self, inq: queue.Queue) -> None:
        poller = zmq.Poller()
        deadlines = [time.monotonic() + MAX_WAIT_S]
        for replica in self.replicas:
            if replica.worker is not None and replica.worker.phase is not Phase.DEAD:
                for target in replica.worker.wait_targets:
                    poller.register(target, zmq.POLLIN if isinstance(target, zmq.Socket) else select.POLLIN)
                if (deadline := replica.worker.next_deadline()) is not None:
                    deadlines.append(deadline)
            if replica.restart_at is not None:
                deadlines.append(replica.restart_at)
        if isinstance(inq, Channel) and not self._input_done and self._next_in - self._next_out < self._window():
            poller.register(inq.fileno(), select.POLLIN)
        timeout_ms = max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)
        poller.poll(timeout_ms)

    # --- starting and restarting ------------------------------------------------------------------
    def _start_due(self) -> None:
        now = time.monotonic()
        for replica in self.replicas:
            if replica.broken or replica.worker is not None:
                continue
            if replica.restart_at is None or replica.restart_at <= now:
                self._start(replica)

    def _start(self, replica: _Replica) -> None:
        replica.restart_at = None
        with self._lock:
            adopted = self._adopt.pop(replica.index, None)
        try:
            worker = adopted or self.make_worker(replica.index)
            with self._lock:
                replica.worker = worker
            if worker.pidfd is None:
                worker.launch()
            if worker.phase is Phase.HELLO:
                worker.setup()
        except (OrchestratorError, OSError, zmq.ZMQError) as exc:
            self._on_death(replica, f"could not start: {type(exc).__name__}: {exc}")
        self._update_states()

    # --- events -----------------------------------------------------------------------------------
    def _on_event(self, replica: _Replica, event: Event) -> None:
        if isinstance(event, Hello):
            if event.node:  # a replica hosted on a cluster node
                self.stats.nodes[event.node] += 1
            with contextlib.suppress(WorkerDied):  # it died just after READY: its Died event comes next
                replica.worker.setup()  # type: ignore[union-attr]
        elif isinstance(event, SetUp):
            self._ever_up = True
            self.stats.ring_fallbacks += bool(event.ring_unavailable)
        elif isinstance(event, SetupFailed):
            if not self._ever_up:
                raise PipelineError(f"stage {self.stats.name!r}: {event.error}") from event.error
            self._on_death(replica, str(event.error))
        elif isinstance(event, Answer):
            replica.deaths_in_a_row = 0
            self._served(replica, event.request_id)
            self._answered(replica.outstanding.pop(event.request_id), event)
        elif isinstance(event, Failed):
            replica.deaths_in_a_row = 0
            self._served(replica, event.request_id)
            for work in replica.outstanding.pop(event.request_id):
                self._fail(work, str(event.error))
        elif isinstance(event, Died):
            if isinstance(event.error, ProtocolMismatch):
                raise PipelineError(f"stage {self.stats.name!r}: {event.error}") from event.error
            self._on_death(replica, str(event.error))
        self._update_states()

    def _count_bytes(self, replica: _Replica) -> None:
        if replica.worker is not None:
            moved = replica.worker.bytes_moved
            self.stats.bytes_moved += moved - replica.bytes_counted
            replica.bytes_counted = moved

    def _served(self, replica: _Replica, request_id: int) -> None:
        """Record the worker's time on an answered request: from its sending, or from the worker's previous
        answer when it waited behind that one (a worker takes its requests one at a time)."""
        now = time.monotonic()
        sent = replica.sent_at.pop(request_id)
        began = sent if replica.answered_at is None else max(sent, replica.answered_at)
        replica.answered_at = now
        self.stats.mark_served(len(replica.outstanding[request_id]), now - began)

    def _answered(self, batch: list[_Work], answer: Answer) -> None:
        results = answer.payload if self.batch_size > 1 else [answer.payload]
        if not isinstance(results, list) or len(results) != len(batch):
            for work in batch:
                self._fail(work, f"the worker answered {type(results).__name__} for {len(batch)} items")
            return
        for index, (work, result) in enumerate(zip(batch, results, strict=True)):
            if index in answer.failed:
                self._fail(work, str(answer.failed[index]))
                continue
            self.logic.absorb(work.item, result)
            self.stats.mark_done()
            self._ready[work.seq] = work.item

    def _on_death(self, replica: _Replica, reason: str) -> None:
        """Give the dead worker's items another attempt (or fail the poisonous), then restart it later."""
        self._count_bytes(replica)
        worker, replica.worker = replica.worker, None
        replica.bytes_counted = 0
        if worker is not None:
            worker.release()
        self._bound = {key: index for key, index in self._bound.items() if index != replica.index}
        retry: list[_Work] = []
        for batch in replica.outstanding.values():
            for work in batch:
                work.attempts += 1
                work.last_death = reason
                if work.attempts >= self.retry.max_attempts:
                    self.stats.poisoned += 1
                    self._fail(work, f"failed on {work.attempts} attempts, each time losing its worker; "
                                     f"last: {reason}")
                else:
                    retry.append(work)
        replica.outstanding.clear()
        replica.sent_at.clear()
        replica.answered_at = None
        self.stats.retried += len(retry)
        self._pending.extendleft(sorted(retry, key=lambda w: w.seq, reverse=True))
        replica.deaths_in_a_row += 1
        if replica.deaths_in_a_row > self.retry.max_restarts:
            replica.broken = f"{reason} (gave up after {self.retry.max_restarts} restarts in a row)"
        else:
            delay = min(self.retry.backoff_s * 2 ** (replica.deaths_in_a_row - 1), self.retry.max_backoff_s)
            replica.restart_at = time.monotonic() + delay
            self.stats.restarts += 1
        if not self._usable():
            while self._pending:
                self._fail(self._pending.popleft(), self._broken_reason())

    # --- sending ------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Fill every replica that can take a request, least loaded first. An item that lost its worker
        before goes alone to an idle replica and nothing joins it there, so a poison item takes no bystander
        down with it. Items with an affinity key wait for their replica; items behind them need not."""
        self._pass_unwanted()
        while (picked := self._next_sendable()) is not None:
            position, replica, key = picked
            if key is None:  # the first pending item, with the items that may join it
                self._send(replica, self._next_batch())
                continue
            work = self._pending[position]
            del self._pending[position]
            self._bound[key] = replica.index
            self._send(replica, [work])

    def _pass_unwanted(self) -> None:
        """Pass on, unsent, the pending items the stage no longer wants (their video failed meanwhile), so one
        bad video costs its replica no more deaths than its first poison item."""
        wanted = collections.deque()
        for work in self._pending:
            if not self.logic.wants(work.item):
                self._ready[work.seq] = work.item
            else:
                wanted.append(work)
        self._pending = wanted

    def _next_sendable(self) -> tuple[int, _Replica, Hashable | None] | None:
        """The first pending item a replica can take now, that replica (the least loaded that may take it),
        and the item's affinity key. Items without a key keep their order: only the first may go."""
        waiting: set[Hashable] = set()
        for position, work in enumerate(self._pending):
            key = self.logic.affinity(work.item)
            if key is None and position:
                return None
            if key is not None and key in waiting:
                continue
            bound = self._bound.get(key) if key is not None else None
            free = [r for r in self.replicas if r.worker is not None and r.worker.free_slots > 0
                    and not self._quarantined(r) and not (work.attempts > 0 and r.outstanding)
                    and bound in (None, r.index)]
            if free:
                near = self.logic.node_of(work.item)
                return position, max(free, key=lambda r: (near is not None and r.worker.node == near,  # type: ignore[union-attr]
                                                          r.worker.free_slots, -len(r.outstanding))), key  # type: ignore[union-attr]
            if key is None:
                return None
            waiting.add(key)
        return None

    @staticmethod
    def _quarantined(replica: _Replica) -> bool:
        return any(work.attempts > 0 for batch in replica.outstanding.values() for work in batch)

    def _next_batch(self) -> list[_Work]:
        first = self._pending.popleft()
        batch = [first]
        if first.attempts == 0:
            while len(batch) < self.batch_size and self._pending and self._pending[0].attempts == 0:
                batch.append(self._pending.popleft())
        return batch

    def _send(self, replica: _Replica, batch: list[_Work]) -> None:
        payloads = [self.logic.payload(work.item) for work in batch]
        worker = replica.worker
        assert worker is not None
        try:
            if self.batch_size > 1:
                request_id = worker.submit(payloads, items=True)
            else:
                request_id = worker.submit(payloads[0])
        except ProtocolError as exc:
            for work in batch:
                self._fail(work, f"its input cannot be sent to the worker: {exc}")
            return
        except WorkerDied:  # its Died event follows; this batch was never sent, so it costs no attempt
            self._pending.extendleft(reversed(batch))
            return
        replica.outstanding[request_id] = batch
        replica.sent_at[request_id] = time.monotonic()
        self.stats.mark_started()

    # --- results --------------------------------------------------------------------------------------
    def _fail(self, work: _Work, reason: str) -> None:
        self.logic.fail(work.item, reason)
        self.stats.failed += 1
        self._ready[work.seq] = work.item

    def _emit(self, outq: queue.Queue) -> None:
        while self._next_out in self._ready:
            try:
                outq.put_nowait(self._ready[self._next_out])
            except queue.Full:
                return
            del self._ready[self._next_out]
            self._next_out += 1

    def _put_end(self, outq: queue.Queue) -> bool:
        try:
            outq.put_nowait(END)
        except queue.Full:
            return False
        return True

    def _usable(self) -> bool:
        return any(r.broken is None for r in self.replicas)

    def _broken_reason(self) -> str:
        reason = next((r.broken for r in self.replicas if r.broken), "no worker")
        return f"every worker of stage {self.stats.name!r} is broken: {reason}"

    def _update_states(self) -> None:
        self.stats.states = [
            "broken" if r.broken else "restarting" if r.worker is None
            else {Phase.UP: "ready", Phase.DEAD: "restarting"}.get(r.worker.phase, "starting")
            for r in self.replicas
        ]
        if self.stats.ready_at is None and all(state == "ready" for state in self.stats.states):
            self.stats.ready_at = time.monotonic()
