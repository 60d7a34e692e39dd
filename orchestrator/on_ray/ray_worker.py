"""The driver's side of a replica hosted by a Ray actor: the stage pool's `Worker`, with Ray futures as events.

    StagePool ─ submit ─▶ RayWorker ─ ray.put(payload) ─▶ WorkerHost.call(ref) on its node ─▶ env worker
        ▲ eventfd: a future completed                  ◀── result, or WorkerError / WorkerDied / actor lost
        └─ events(): Hello, SetUp, Answer, Failed, Died (the same events a local WorkerHandle gives)

A media replica's call returns its frames as extra values (`num_returns`, as many as the request may
fill): the driver keeps their object refs without fetching them and hands them on in the answer as
RayFrames, so pixels go from the media replica's node straight to the model replica's.

Because a lost actor, a lost node and a dead env worker all end in `Died` with the requests in flight, the
pool's retry, poison and restart rules apply unchanged, and the writer's order and exactly-once hold. A
replica Ray cannot place is never waited on forever: while it waits, it checks that an alive node could still
hold it, and gives up after the placement timeout when no replica of its stage is placed.

Stopping asks every replica's host at once (`close_all` calls `ask_to_stop` on all before it waits), each host
stops its worker on its own control thread, and each `release` waits only until that stop's deadline, so
closing many busy replicas takes one grace period, not one each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from orchestrator.errors import (
    ConfigError,
    HandshakeTimeout,
    OrchestratorError,
    PipelineError,
    WorkerDied,
    WorkerError,
)
from orchestrator.on_ray.frames import filled, unreffed
from orchestrator.on_ray.host import CONTROL, HostRequest, WorkerHost
from orchestrator.on_ray.placement import RayPolicy, StagePlacement, alive_nodes, amounts, free_nodes, lacking
from orchestrator.supervisor.events import Answer, Died, Event, Failed, Hello, Phase, SetUp, SetupFailed
from workers.headers import WorkerInfo
from workers.shared_frames import payload_bytes

_ids = itertools.count(1)
WORKER_INFO_FIELDS = {item.name for item in dataclasses.fields(WorkerInfo)}
"""What of a host's answer to `start` is the env worker's own READY header."""
_WATCH_S = 0.2
"""How long the watcher waits on Ray per round, so it notices new futures and its own closing."""
CONNECT_TIMEOUT_S = 5.0


def connect(address: str | None) -> Any:
    """Join the Ray cluster at `address` ("auto": the one this machine belongs to; None: start one here)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray, the locked `ray` extra: run `bash scripts/setup.sh` (or "
                          "`uv sync --frozen --extra ray`) in the orchestrator's checkout") from None
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a Ray cluster"
            raise ConfigError(f"cannot join {where}: {_first_line(exc)}; check --address (host:port of the "
                              f"head, or auto on a node of the cluster)") from None
    return ray


def _check_reachable(address: str | None) -> None:
    """A head that cannot be reached is an error now: Ray itself retries it for minutes."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:  # type: ignore[operator]
        return  # auto, a new local cluster, or a client address: Ray resolves those
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster's head at {address}: {exc.strerror or exc}; check "
                          f"--address (host:port of the head, or auto on a node of the cluster)") from None


class _Watch:
    """Signals an eventfd when one of the worker's Ray futures completes, so the pool's wait wakes for it."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._pending: set[Any] = set()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="ray-watch")
        self._thread.start()

    def add(self, ref: Any) -> None:
        with self._changed:
            self._pending.add(ref)
            self._changed.notify()

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                refs = list(self._pending)
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=_WATCH_S)
            if ready:
                with self._changed:
                    self._pending.difference_update(ready)
                os.eventfd_write(self.fd, 1)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(timeout=2 * _WATCH_S + 1)
        os.close(self.fd)


class RayWorker:
    """A replica whose env worker runs in a Ray actor placed by Ray (CPUs, fractional GPUs, resources)."""

    def __init__(self, request: HostRequest, placement: StagePlacement, max_in_flight: int,
                 policy: RayPolicy | None = None, frame_outputs: Callable[[Any], int] | None = None) -> None:
        """`frame_outputs`: for a media replica, how many arrays of frames the answer to a request may hold
        (the call's extra return values)."""
        self.request = request
        self.frame_outputs = frame_outputs
        self.bytes_moved = 0
        """Bytes of the arrays this process has put in Ray for the replica and got back from it (frames it
        forwards as object refs weigh nothing: it never fetches them)."""
        self.label = request.label
        self.placement = placement
        self.max_in_flight = max_in_flight
        self.policy = policy or RayPolicy()
        self.phase = Phase.STARTING
        self.info: dict[str, Any] = {}
        self._ray: Any = None
        self._actor: Any = None
        self._watch: _Watch | None = None
        self._where_ref: Any = None
        self._start_ref: Any = None
        self._launched_at = self._next_check = 0.0
        self._placed = self._killed = False
        self._calls: dict[int, tuple[Any, bool]] = {}
        self._frames_of: dict[int, list[Any]] = {}
        """The object refs of each media call's extra return values (its frames), by request."""
        self._sent_at: dict[int, float] = {}
        self._answered_at: float | None = None
        self._queued: list[Event] = []
        self._stop_ref: Any = None
        self._stop_by: float | None = None

    @property
    def pidfd(self) -> int | None:
        """Readable when one of the replica's Ray futures completes, its stop included (None before launch):
        what the pool and `close_all` wait on."""
        return self._watch.fd if self._watch is not None else None

    @property
    def node(self) -> str | None:
        """The Ray node id the replica was placed on (None until placed)."""
        return self.info.get("node_id")

    @property
    def free_slots(self) -> int:
        return self.max_in_flight - len(self._calls) if self.phase is Phase.UP else 0

    @property
    def wait_targets(self) -> tuple[int, ...]:
        return (self._watch.fd,) if self._watch is not None else ()

    def launch(self) -> None:
        import ray

        self._ray = ray
        self._watch = _Watch(ray)
        self._actor = _host_class().options(**self.placement.options).remote(self.request)
        self._where_ref = self._actor.where.remote()
        self._start_ref = self._actor.start.remote()
        self._launched_at = self._next_check = time.monotonic()
        self._watch.add(self._where_ref)
        self._watch.add(self._start_ref)

    def setup(self) -> None:
        """The host sets the model up as it starts: nothing left to do but say so."""
        self.phase = Phase.UP
        self._queued.append(SetUp(self.request.model.class_path))

    def submit(self, payload: Any, request_id: int | None = None, items: bool = False) -> int:
        if self.phase is not Phase.UP:
            raise WorkerDied(f"worker {self.label} takes no batches while {self.phase.value}")
        request_id = next(_ids) if request_id is None else request_id
        self.bytes_moved += payload_bytes(payload)
        n_frames = self.frame_outputs(payload) if self.frame_outputs is not None else 0
        frames: list[Any] = []
        payload = unreffed(payload, frames)  # the frames' refs go as the call's own arguments
        refs = self._actor.call.options(num_returns=1 + n_frames).remote(self._ray.put(payload), items, n_frames,
                                                                         *frames)
        ref = refs[0] if n_frames else refs
        if n_frames:
            self._frames_of[request_id] = list(refs[1:])
        self._calls[request_id] = (ref, items)
        self._sent_at[request_id] = time.monotonic()
        self._watch.add(ref)  # type: ignore[union-attr]
        return request_id

    def events(self) -> list[Event]:
        """What happened since the last call. Raises PipelineError when the replica can never be placed: no
        alive node could hold it, or Ray placed no replica of its stage within the placement timeout."""
        found, self._queued = self._queued, []
        if self.phase is Phase.DEAD or self._watch is None:
            return found
        self._watch.clear()
        if not self._placed:
            self._check_placement()
        if self._start_ref is not None and self._done(self._start_ref):
            found.append(self._started())
        for request_id, (ref, items) in list(self._calls.items()):
            if self.phase is not Phase.DEAD and self._done(ref):
                found.append(self._answered(request_id, ref, items))
        if self.phase is not Phase.DEAD and (deadline := self._host_deadline()) is not None \
                and time.monotonic() >= deadline:
            self.terminate()
            found.append(self._died(WorkerDied(f"worker {self.label}{self._on_node()}: its Ray actor gave no "
                                               f"answer within {self._host_deadline_s()} s of beginning a "
                                               f"request; killed it"), hung=True))
        return found

    def _done(self, ref: Any) -> bool:
        ready, _ = self._ray.wait([ref], timeout=0)
        return bool(ready)

    def _check_placement(self) -> None:
        """Note the node once Ray placed the actor; until then, end the run if it can never be placed."""
        if self._done(self._where_ref):
            self._placed = True
            self.placement.placed.add(self)
            with contextlib.suppress(Exception):  # an actor that died as it was made: its start says why
                self.info.update(self._ray.get(self._where_ref))
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.policy.placement_check_s
        stage, bundle = self.placement.stage, self.placement.bundle
        nodes = alive_nodes(self._ray)
        if (missing := lacking(bundle, nodes)) is not None:
            raise PipelineError(f"stage {stage!r}: no alive node of the Ray cluster can hold a replica any more: "
                                f"{missing}; add such a node and rerun (finished videos are kept)")
        waited = now - self._launched_at
        if waited < self.policy.placement_timeout_s or self.placement.placed:
            return
        if lacking(bundle, free_nodes(self._ray)) is not None:
            free = ", ".join(f"{k}={v:g}" for k, v in sorted(self._ray.available_resources().items())
                             if k in bundle)
            raise PipelineError(f"stage {stage!r}: Ray placed none of its replicas within "
                                f"{self.policy.placement_timeout_s:g} s (one needs {amounts(bundle)}; free "
                                f"now: {free or 'none'}): other work holds the cluster's resources; free them "
                                f"or add nodes and rerun (finished videos are kept)")
        if waited >= self.policy.start_timeout_s:  # a node has room, yet Ray has not started it there
            raise PipelineError(f"stage {stage!r}: Ray started none of its replicas within "
                                f"{self.policy.start_timeout_s:g} s though a node has room for one "
                                f"({amounts(bundle)}): its nodes are failing to start Ray workers; see `ray "
                                f"status` and the nodes' Ray logs, then rerun (finished videos are kept)")

    def _started(self) -> Event:
        ref, self._start_ref = self._start_ref, None
        try:
            self.info.update(self._ray.get(ref))
        except Exception as exc:  # the host's start raised, or the actor or its node is gone
            cause = _cause(exc)
            if isinstance(cause, OrchestratorError) and not isinstance(cause, (WorkerDied, HandshakeTimeout)):
                self.phase = Phase.HELLO  # the model, its env or its weights cannot be set up on that node
                return SetupFailed(cause if isinstance(cause, WorkerError) else WorkerError(str(cause)))
            return self._died(cause)
        self.phase = Phase.HELLO
        worker = {name: value for name, value in self.info.items() if name in WORKER_INFO_FIELDS}
        return Hello(WorkerInfo.from_header(worker), node=str(self.info.get("node", "")))

    def _answered(self, request_id: int, ref: Any, items: bool) -> Event:
        del self._calls[request_id]
        self._sent_at.pop(request_id, None)
        frame_refs = self._frames_of.pop(request_id, [])
        self._answered_at = time.monotonic()
        try:
            payload, failed = self._ray.get(ref)
        except Exception as exc:  # the model raised, its worker died, its frames or the actor or node are gone
            cause = _cause(exc)
            if isinstance(cause, WorkerError):
                return Failed(request_id, WorkerError(str(cause), request_id, "batch"))
            if isinstance(exc, self._ray.exceptions.ObjectLostError) or isinstance(
                    cause, self._ray.exceptions.ObjectLostError):  # the replica is fine: its input is gone
                return Failed(request_id, WorkerError(f"its frames were lost with the node that read them "
                                                      f"({type(cause).__name__}); rerun to redo the video",
                                                      request_id, "batch"))
            self._calls[request_id] = (ref, items)
            return self._died(cause)
        self.bytes_moved += payload_bytes(payload)
        payload = filled(payload, frame_refs, self.node)
        errors = {int(i): WorkerError(f"worker {self.label}: item {i} failed: {message}", request_id, "batch")
                  for i, message in failed.items()}
        return Answer(request_id, payload, errors)

    def _died(self, cause: BaseException, hung: bool = False) -> Died:
        self.phase = Phase.DEAD
        error = cause if isinstance(cause, WorkerDied) else WorkerDied(
            f"worker {self.label}{self._on_node()}: its Ray actor is gone ({type(cause).__name__}: "
            f"{_first_line(cause)})")
        requests, self._calls, self._sent_at, self._frames_of = tuple(self._calls), {}, {}, {}
        return Died(error, requests, hung)

    def _on_node(self) -> str:
        return f" on {self.info['node']}" if self.info.get("node") else ""

    def _host_deadline_s(self) -> float | None:
        limit = self.request.policy.request_timeout_s
        return None if limit is None else limit + self.policy.host_margin_s

    def _host_deadline(self) -> float | None:
        """When the host of the oldest call is overdue. The host takes calls one at a time, in the order
        sent, so the oldest began when it was sent or when the one before it was answered, if later: a
        call queued behind a long one gets its own full deadline."""
        if not self._sent_at or (limit := self._host_deadline_s()) is None:
            return None
        sent = next(iter(self._sent_at.values()))
        return max(sent, self._answered_at or sent) + limit

    def next_deadline(self) -> float | None:
        """When `events()` must run even if no future completes: a hung host, or a placement check."""
        times = [t for t in (self._host_deadline(), None if self._placed else self._next_check) if t is not None]
        return min(times) if times and self.phase is not Phase.DEAD else None

    # --- stopping: ask every host at once (close_all), then each release waits until one common deadline ---
    def poll(self) -> int | None:
        """0 once the replica is stopped (its host stopped its worker) or dead; None while it runs."""
        if self.phase is Phase.DEAD or self._actor is None or self._killed:
            return 0
        if self._stop_by is None:
            return None
        if self._watch is not None:
            self._watch.clear()
        return 0 if self._stop_ref is None or self._done(self._stop_ref) else None

    def ask_to_stop(self) -> None:
        """Have the host stop its worker's process group now, on its control thread, even while a call runs;
        `release` waits for that, bounded by the host's graces."""
        if self._actor is None or self._stop_by is not None:
            return
        self._stop_by = time.monotonic()
        if self._killed or not (self._placed or self._done(self._where_ref)):
            return  # nothing on a node to stop
        policy = self.request.policy
        self._stop_by += policy.stop.total_s + self.policy.stop_margin_s
        self._stop_ref = self._actor.stop.options(concurrency_group=CONTROL).remote()
        self._watch.add(self._stop_ref)  # type: ignore[union-attr]

    def terminate(self) -> None:
        """End the actor at once, unless its host is stopping its worker (then `release` ends it)."""
        if self._actor is not None and self._stop_ref is None and not self._killed:
            self._killed = True
            self._ray.kill(self._actor, no_restart=True)

    def release(self) -> None:
        """Stop the host (it stops its worker's process group) unless asked already, wait for that until
        the stop's deadline, then end the actor."""
        if self._actor is not None:
            self.ask_to_stop()
            if self._stop_ref is not None:
                with contextlib.suppress(Exception):  # a host already gone has nothing left to stop
                    self._ray.wait([self._stop_ref], timeout=max(0.0, self._stop_by - time.monotonic()))
            with contextlib.suppress(Exception):
                self._ray.kill(self._actor, no_restart=True)
            self._actor = None
        self.placement.placed.discard(self)
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self.phase = Phase.DEAD


@functools.cache
def _host_class() -> Any:
    """WorkerHost as a Ray actor class with its control group, made once per process."""
    import ray

    return ray.remote(concurrency_groups={CONTROL: 1})(WorkerHost)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _cause(exc: BaseException) -> BaseException:
    """The exception a Ray task raised inside its actor, or the Ray error itself (actor or node lost)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


