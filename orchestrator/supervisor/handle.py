"""One worker process: start it in its env, handshake, stream batches, notice its death, stop it for sure.

    launch()    bind sockets ─▶ spawn `<env python> -m workers`                  Phase.STARTING
    events()    READY ─▶ Ready                                                   Phase.HELLO
    describe()  DESCRIBE ─▶ Described (optional: the model's declarations, read in its env)
    setup()     SETUP ─▶ SetUp | SetupFailed                                     Phase.LOADING ─▶ UP
    submit()    BATCH ─▶ Answer | Failed, at most `max_in_flight` outstanding
    close()     SHUTDOWN on the control socket ─▶ SIGTERM ─▶ SIGKILL, always reaped

Nothing here blocks on the worker. A send never waits on a dead peer (it watches the process's pidfd and
is bounded), and `events()` turns the process's exit, a missed READY/setup/request/heartbeat deadline or a
garbled message into one final `Died`. `start`, `receive`, `call` and `ping` are blocking conveniences
over the same events, for simple callers and tests.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import select
import signal
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from orchestrator.envs import Env
from orchestrator.errors import HandshakeTimeout, OrchestratorError, ProtocolMismatch, WorkerDied, WorkerError
from orchestrator.supervisor.endpoints import bind_ipc, bind_tcp
from orchestrator.supervisor.events import (
    Answer,
    Beat,
    Described,
    Died,
    Event,
    Failed,
    Phase,
    Ready,
    SetUp,
    SetupFailed,
    describe_exit,
)
from orchestrator.supervisor.launch import worker_argv, worker_environ
from orchestrator.supervisor.output import LogSink, OutputPump, log_to_logger
from orchestrator.supervisor.policy import WorkerPolicy
from orchestrator.supervisor.process import WorkerProcess
from orchestrator.supervisor.shutdown import close_all
from workers.protocol import Decoder, Encoder, Kind, Message, ProtocolError, peek_request_id
from workers.shm_ring import ShmRingWriter, ShmUnavailable

logger = logging.getLogger(__name__)
_ids = itertools.count(1)
_DRAIN_AFTER_EXIT_S = 0.05
"""After the process exits, how long to keep collecting replies it sent just before."""


@dataclass(frozen=True)
class ModelRef:
    """A model class path (`module.Class` or `file.py:Class`) and its constructor params."""

    class_path: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerSpec:
    label: str
    env: Env
    model: ModelRef
    user_code_dirs: tuple[Path, ...] = ()
    extra_environ: Mapping[str, str] = field(default_factory=dict)
    setup_options: Mapping[str, Any] = field(default_factory=dict)
    """Extra SETUP header fields for the worker (how to hand the model its input, thread budget)."""


@dataclass(frozen=True)
class Reply:
    request_id: int
    payload: Any
    failed: dict[int, WorkerError] = field(default_factory=dict)
    """For a request of items: the positions that failed, with why (their results are None)."""


@dataclass(frozen=True)
class RingUse:
    """A worker's shared-memory ring: its slots, those free now, arrays written to it since launch; or, when
    the ring was wanted but could not be made, why (its arrays then travel as frames)."""

    slots: int = 0
    free: int = 0
    writes: int = 0
    unavailable: str = ""


@dataclass
class _Request:
    slots: list[int]
    items: bool


class _Resources:
    """Everything a worker holds, released by one idempotent call (also run by weakref.finalize)."""

    def __init__(self) -> None:
        self.sockets: list[zmq.Socket] = []
        self.process: WorkerProcess | None = None
        self.ring: ShmRingWriter | None = None
        self.endpoints: list[Path] = []

    def release(self) -> None:
        if self.process is not None:
            self.process.reap()  # the worker's whole process group goes with it
        for sock in self.sockets:
            sock.close(linger=0)
        if self.ring is not None:
            self.ring.close()
        for path in self.endpoints:
            path.unlink(missing_ok=True)


class WorkerHandle:
    """A worker process mirroring `Popen` (poll/wait/send_signal/terminate/kill), plus its sockets."""

    def __init__(self, spec: WorkerSpec, runtime_dir: Path, policy: WorkerPolicy | None = None,
                 on_log: LogSink = log_to_logger) -> None:
        self.spec = spec
        self.policy = policy or WorkerPolicy()
        self.runtime_dir = runtime_dir
        self.on_log = on_log
        self.phase = Phase.STARTING
        self.info: dict[str, Any] = {}
        self.declarations: dict[str, Any] | None = None
        self.in_flight: dict[int, _Request] = {}
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        self._pump: OutputPump | None = None
        self._last_words: Message | None = None
        """The worker's DEAD message, if its loop crashed and it managed to say why."""
        self._queued: list[Event] = []
        """Events found outside `events()` (a death noticed while sending), handed out by it next."""
        self._backlog: collections.deque[Event] = collections.deque()
        """Events the blocking conveniences took but did not want yet."""
        self._control: dict[int, str] = {}
        """Request ids of DESCRIBE and SETUP messages, and which they were."""
        self._phase_deadline: tuple[float, str, str] | None = None
        self._busy_since: float | None = None
        self._heartbeat: tuple[int, float] | None = None
        """The heartbeat waiting for its answer on the control socket: its id and when it was sent."""
        self._last_heard = time.monotonic()
        self._died: Died | None = None
        self._ring_unavailable = ""
        self._ring_writes = 0

    # --- Popen mirror -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._res.process.pid if self._res.process else None

    def poll(self) -> int | None:
        return self._res.process.poll() if self._res.process else None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the worker to exit, then reap it and kill what is left of its process group."""
        if self._res.process is None:
            raise RuntimeError(f"worker {self.spec.label} was never started")
        if self._res.process.wait_exit(timeout) is None:
            raise TimeoutError(f"worker {self.spec.label} still runs after {timeout}s")
        return self._res.process.reap()

    def send_signal(self, sig: int) -> None:
        if self._res.process is not None:
            self._res.process.send_signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the worker and whatever it started."""
        if self._res.process is not None:
            self._res.process.kill_group()

    @property
    def pidfd(self) -> int | None:
        """Readable once the process has exited: wait on it with the data socket."""
        return self._res.process.pidfd if self._res.process else None

    @property
    def ready(self) -> bool:
        return self.phase is Phase.UP

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def ring(self) -> RingUse:
        """What the worker's shared-memory ring has carried, and how much of it is free now."""
        ring = self._res.ring
        if ring is None:
            return RingUse(unavailable=self._ring_unavailable)
        return RingUse(ring.n_slots, ring.free_slots, self._ring_writes)

    @property
    def free_slots(self) -> int:
        """Batches `submit` takes now: none unless the model is set up."""
        return self.policy.max_in_flight - len(self.in_flight) if self.phase is Phase.UP else 0

    # --- lifecycle ----------------------------------------------------------------------------
    def launch(self) -> None:
        """Spawn the process without waiting, so many workers can load their models at once."""
        context = zmq.Context.instance()
        limit = self.policy.max_message_bytes
        if self.policy.transport == "tcp":
            bound = bind_tcp(context, self.policy.tcp_host, limit)
        else:
            bound = bind_ipc(context, self.runtime_dir, f"w{next(_ids)}-{os.getpid()}", limit)
        self._res.sockets += [bound.data, bound.control]
        self._res.endpoints += bound.ipc_paths
        self._data, self._control_socket = bound.data, bound.control
        args = ["--data", bound.data_url, "--control", bound.control_url, "--name", self.spec.label,
                "--max-message-bytes", str(self.policy.max_message_bytes)]
        args += self._ring_args() if self.policy.transport == "ipc" else []
        self._encoder = Encoder(self.policy.inline_threshold, self._res.ring, self.policy.shm_threshold)
        self._decoder = Decoder()
        self._control_encoder, self._control_decoder = Encoder(), Decoder()
        environ = worker_environ(self.spec.env, self.runtime_dir, self.spec.user_code_dirs,
                                 {**self.spec.extra_environ, **bound.worker_environ})
        process = WorkerProcess(worker_argv(self.spec.env, *args), environ)
        self._res.process = process
        self._pump = OutputPump(self.spec.label, process.stdout, process.stderr, self.on_log,
                                self.policy.stderr_tail_lines)
        self._set_deadline(self.policy.ready_timeout_s, "READY handshake", "ready_timeout_s")

    def describe(self) -> None:
        """Ask for the model's declarations, read inside its env (answered by `Described`)."""
        self._control_request(Kind.DESCRIBE, "describe", {}, "the model's description", "setup_timeout_s")

    def setup(self) -> None:
        """Import the model and run its `setup()` (answered by `SetUp` or `SetupFailed`)."""
        self._control_request(Kind.SETUP, "setup", dict(self.spec.setup_options),
                              f"setup of {self.spec.model.class_path}", "setup_timeout_s")
        self.phase = Phase.LOADING

    def _control_request(self, kind: Kind, purpose: str, header: dict[str, Any], what: str, setting: str) -> None:
        self._raise_if_dead()
        if self.phase is not Phase.HELLO:
            raise RuntimeError(f"worker {self.spec.label}: cannot {purpose} while {self.phase.value}")
        request_id = next(_ids)
        header = {"class_path": self.spec.model.class_path, **header}
        self._control[request_id] = purpose
        self._send(Message(kind, request_id, header, dict(self.spec.model.params)))
        self._set_deadline(self.policy.setup_timeout_s, what, setting)

    def _ring_args(self) -> list[str]:
        if not self.policy.use_shared_memory:
            return []
        try:
            self._res.ring = ShmRingWriter(self.policy.shm_slots, self.policy.shm_slot_bytes)
        except ShmUnavailable as exc:
            self._ring_unavailable = str(exc)
            logger.warning("worker %s: no shared-memory ring (%s); its arrays travel as frames over its socket, "
                           "slower", self.spec.label, exc)
            return []
        ring = self._res.ring
        return ["--ring", ring.name, "--ring-slots", str(ring.n_slots), "--ring-slot-bytes", str(ring.slot_bytes)]

    # --- data path ----------------------------------------------------------------------------
    def submit(self, payload: Any, request_id: int | None = None, items: bool = False) -> int:
        """Send one batch. With `items`, `payload` is a list the worker answers item by item.

        Raises ProtocolError if the payload cannot be encoded (nothing was sent), WorkerDied if the worker is
        gone or stopped reading (its `Died` event still follows from `events()`)."""
        self._raise_if_dead()
        if self.phase is not Phase.UP:
            raise RuntimeError(f"worker {self.spec.label} takes no batches while {self.phase.value}")
        if len(self.in_flight) >= self.policy.max_in_flight:
            raise RuntimeError(f"worker {self.spec.label}: {len(self.in_flight)} batches in flight; receive first")
        request_id = next(_ids) if request_id is None else request_id
        slots = self._send(Message(Kind.BATCH, request_id, {"items": True} if items else {}, payload))
        if not self.in_flight:
            self._busy_since = time.monotonic()
        self.in_flight[request_id] = _Request(slots, items)
        return request_id

    def events(self) -> list[Event]:
        """Everything that happened since the last call, without blocking; a `Died` is always last."""
        found, self._queued = self._queued, []
        if self.phase is Phase.DEAD:
            return found
        while self.phase is not Phase.DEAD and (message := self._next_message()) is not None:
            found += self._interpret(message)
        found += self._take_queued()  # what a garbled message led to
        if self.phase is Phase.DEAD:
            return found
        found += self._control_replies()
        if self.poll() is not None:
            found += self._drain_after_exit()
            found.append(self._death("", hung=False))
        elif (overdue := self._overdue()) is not None:
            found.append(self._kill_for(overdue))
        elif self._heartbeat_due():
            self._send_heartbeat()
            found, self._queued = found + self._queued, []
        return found

    def next_deadline(self) -> float | None:
        """When `events()` must next be called even if nothing arrives (a deadline or a heartbeat)."""
        times = []
        if self._phase_deadline is not None:
            times.append(self._phase_deadline[0])
        if self._busy_since is not None and self.policy.request_timeout_s is not None:
            times.append(self._busy_since + self.policy.request_timeout_s)
        if self._heartbeat is not None:
            times.append(self._heartbeat[1] + self.policy.heartbeat_timeout_s)
        elif self.phase is Phase.UP and self.policy.heartbeat_interval_s is not None:
            times.append(self._last_heard + self.policy.heartbeat_interval_s)
        return min(times, default=None)

    @property
    def wait_targets(self) -> tuple[zmq.Socket, zmq.Socket, int]:
        """The data and control sockets and the process's pidfd, for callers waiting on many workers at once."""
        if self.pidfd is None:
            raise RuntimeError(f"worker {self.spec.label} is not running")
        return self._data, self._control_socket, self.pidfd

    # --- blocking conveniences ----------------------------------------------------------------
    def start(self, describe: bool = False) -> dict[str, Any]:
        """Spawn, handshake and set the model up; returns the worker's READY info."""
        self.launch()
        return self.handshake(describe)

    def handshake(self, describe: bool = False) -> dict[str, Any]:
        """Wait for READY, optionally DESCRIBE, then set the model up; raises what went wrong."""
        if describe:
            self.read_declarations()
        else:
            self._wait_for(lambda e: isinstance(e, Ready), None)
        self.setup()
        self._expect_setup(self._wait_for(lambda e: isinstance(e, (SetUp, SetupFailed)), None))
        return self.info

    def read_declarations(self) -> dict[str, Any]:
        """Wait for READY, then have the worker describe its model in its env; it then waits for `setup()`."""
        self._wait_for(lambda e: isinstance(e, Ready), None)
        self.describe()
        event = self._wait_for(lambda e: isinstance(e, (Described, SetupFailed)), None)
        self._expect_setup(event)
        assert isinstance(event, Described)
        return event.declarations

    @staticmethod
    def _expect_setup(event: Event) -> None:
        if isinstance(event, SetupFailed):
            raise event.error

    def receive(self, timeout: float | None = None) -> Reply:
        """The next answered batch. Raises WorkerError for a failed batch, WorkerDied if the process exited
        or hung past a deadline, TimeoutError if nothing came within `timeout`."""
        event = self._wait_for(lambda e: isinstance(e, (Answer, Failed)), timeout, "a batch result")
        if isinstance(event, Failed):
            raise event.error
        assert isinstance(event, Answer)
        return Reply(event.request_id, event.payload, event.failed)

    def call(self, payload: Any, timeout: float | None = None) -> Any:
        """Submit one batch and wait for its result."""
        self.submit(payload)
        return self.receive(timeout).payload

    def ping(self, timeout: float) -> float:
        """Round trip of a heartbeat through the worker's main loop; seconds taken."""
        started = time.monotonic()
        request_id = next(_ids)
        self._send(Message(Kind.HEARTBEAT, request_id))
        self._wait_for(lambda e: isinstance(e, Beat) and e.request_id == request_id, timeout, "a heartbeat reply")
        return time.monotonic() - started

    def _wait_for(self, wanted: Callable[[Event], bool], timeout: float | None, what: str = "") -> Event:
        """The first event `wanted` picks, keeping the others for later calls; raises on death."""
        limit = None if timeout is None else time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(self._data, zmq.POLLIN)
        poller.register(self._control_socket, zmq.POLLIN)
        poller.register(self.pidfd, select.POLLIN)
        while True:
            for event in list(self._backlog):
                if wanted(event):
                    self._backlog.remove(event)
                    return event
                if isinstance(event, Died):
                    raise event.error
            new = self.events()
            self._backlog.extend(new)
            if new:
                continue
            wake = [t for t in (limit, self.next_deadline()) if t is not None]
            if limit is not None and time.monotonic() >= limit:
                raise TimeoutError(f"worker {self.spec.label}: no {what} within {timeout:.1f}s")
            wait_ms = None if not wake else max(0, int((min(wake) - time.monotonic()) * 1000) + 1)
            poller.poll(wait_ms)

    def _raise_if_dead(self) -> None:
        """A worker found dead (its `Died` already reported, or about to be) raises its death's error."""
        if self._died is not None:
            raise self._died.error
        if self.phase is Phase.DEAD:
            raise WorkerDied(f"worker {self.spec.label} ({self.spec.env.name}) was stopped")

    # --- receiving ----------------------------------------------------------------------------
    def _next_message(self) -> Message | None:
        """A message already queued on the socket, without a poll system call (the fast path)."""
        while True:
            try:
                frames = self._data.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return None
            self._last_heard = time.monotonic()
            try:
                message = self._decoder.decode(frames)
            except ProtocolError as exc:
                self._garbled(frames, exc)
                return None
            if message.kind is Kind.DEAD:
                self._last_words = message
                continue
            return message

    def _garbled(self, frames: list[zmq.Frame], exc: ProtocolError) -> None:
        """A reply we cannot decode fails its request when we can tell which; otherwise the worker is unusable."""
        if "protocol version" in str(exc):
            self._queued.append(self._kill_for(ProtocolMismatch(
                f"worker {self.spec.label} ({self.spec.env.python}): {exc}; rebuild or update the env so both "
                f"sides run the same orchestrator")))
            return
        request_id = peek_request_id(frames[0].buffer)
        if request_id in self.in_flight:
            self._finish(request_id)
            self._queued.append(Failed(request_id, WorkerError(
                f"worker {self.spec.label} ({self.spec.env.name}): its reply could not be decoded: {exc}",
                request_id, "result")))
            return
        self._queued.append(self._kill_for(f"it sent a message that could not be decoded ({exc})"))

    def _interpret(self, message: Message) -> list[Event]:
        purpose = self._control.pop(message.request_id, None)
        if message.kind is Kind.READY and self.phase is Phase.STARTING:
            self.info = message.header
            self.phase = Phase.HELLO
            self._phase_deadline = None
            return [*self._take_queued(), Ready(self.info)]
        if purpose is not None:
            return [*self._take_queued(), self._control_reply(purpose, message)]
        if message.kind in (Kind.RESULT, Kind.ERROR) and message.request_id in self.in_flight:
            return [*self._take_queued(), self._batch_reply(message)]
        if message.kind is Kind.HEARTBEAT:
            return [Beat(message.request_id)]
        if message.kind is Kind.ERROR:  # the worker could not decode something we sent and cannot say what
            return [self._kill_for(f"it could not read a request ({message.header.get('message')})")]
        self.on_log(self.spec.label, f"dropped a {message.kind.value!r} message for unknown request "
                                     f"{message.request_id}")
        return self._take_queued()

    def _take_queued(self) -> list[Event]:
        taken, self._queued = self._queued, []
        return taken

    def _control_reply(self, purpose: str, message: Message) -> Event:
        self._phase_deadline = None
        if message.kind is Kind.ERROR:
            self.phase = Phase.HELLO
            what = "could not describe" if purpose == "describe" else "could not set up"
            return SetupFailed(self._worker_error(message, f"{what} {self.spec.model.class_path}"))
        if purpose == "describe":
            self.declarations = message.payload
            return Described(message.payload)
        self.phase = Phase.UP
        self._last_heard = time.monotonic()
        return SetUp(str(message.header.get("model", "")), self._ring_unavailable)

    def _batch_reply(self, message: Message) -> Event:
        request = self._finish(message.request_id)
        if message.kind is Kind.ERROR:
            return Failed(message.request_id, self._worker_error(message, "batch failed"))
        failed = {}
        if request.items:
            for index, header in message.header.get("failed", []):
                failed[int(index)] = self._worker_error(Message(Kind.ERROR, message.request_id, header),
                                                        f"item {index} failed")
        return Answer(message.request_id, message.payload, failed)

    def _finish(self, request_id: int) -> _Request:
        request = self.in_flight.pop(request_id)
        if self._res.ring is not None:
            self._res.ring.release(request.slots)
        self._busy_since = time.monotonic() if self.in_flight else None
        return request

    def _drain_after_exit(self) -> list[Event]:
        """Replies the worker sent just before it exited are still good: collect them."""
        found: list[Event] = []
        with contextlib.suppress(zmq.ZMQError):
            while self._data.poll(int(_DRAIN_AFTER_EXIT_S * 1000)):
                while self.phase is not Phase.DEAD and (message := self._next_message()) is not None:
                    found += self._interpret(message)
                if self.phase is Phase.DEAD:
                    break
        return found + self._take_queued()

    # --- deadlines and heartbeats -------------------------------------------------------------
    def _set_deadline(self, seconds: float, what: str, setting: str) -> None:
        self._phase_deadline = (time.monotonic() + seconds, what, setting)

    def _overdue(self) -> OrchestratorError | str | None:
        """What the worker is late with: a start-up error, or why a hung worker must be killed."""
        now = time.monotonic()
        if self._phase_deadline is not None and now >= self._phase_deadline[0]:
            _, what, setting = self._phase_deadline
            seconds = getattr(self.policy, setting)
            return HandshakeTimeout(
                f"worker {self.spec.label} ({self.spec.env.name}): no {what} within {seconds:.0f}s; raise "
                f"WorkerPolicy.{setting} if it needs longer; last stderr:\n{self.stderr_tail()}")
        timeout = self.policy.request_timeout_s
        if self._busy_since is not None and timeout is not None and now >= self._busy_since + timeout:
            oldest = next(iter(self.in_flight))
            return f"request {oldest} exceeded request_timeout_s={timeout}s"
        if self._heartbeat is not None and now >= self._heartbeat[1] + self.policy.heartbeat_timeout_s:
            return (f"it answered no heartbeat within heartbeat_timeout_s={self.policy.heartbeat_timeout_s}s "
                    f"{'while busy' if self.in_flight else 'while idle'} (its process is frozen or stopped)")
        return None

    def _heartbeat_due(self) -> bool:
        interval = self.policy.heartbeat_interval_s
        return (interval is not None and self.phase is Phase.UP and self._heartbeat is None
                and time.monotonic() >= self._last_heard + interval)

    def _send_heartbeat(self) -> None:
        """Ask on the control socket: the worker's control thread answers even while its model runs."""
        request_id = next(_ids)
        self._heartbeat = (request_id, time.monotonic())
        frames, _ = self._control_encoder.encode(Message(Kind.HEARTBEAT, request_id))
        with contextlib.suppress(zmq.Again):  # not taken: it goes unanswered, and the deadline tells
            self._control_socket.send_multipart(frames, zmq.NOBLOCK)

    def _control_replies(self) -> list[Event]:
        """Heartbeats the control thread answered; anything else there is dropped."""
        found: list[Event] = []
        while True:
            try:
                frames = self._control_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return found
            self._last_heard = time.monotonic()
            with contextlib.suppress(ProtocolError):
                message = self._control_decoder.decode(frames)
                if self._heartbeat is not None and message.request_id == self._heartbeat[0]:
                    self._heartbeat = None
                    found.append(Beat(message.request_id))

    # --- sending ------------------------------------------------------------------------------
    def _send(self, message: Message) -> list[int]:
        frames, slots = self._encoder.encode(message)
        self._ring_writes += len(slots)
        try:
            self._send_frames(frames)
        except BaseException:
            if self._res.ring is not None:
                self._res.ring.release(slots)
            raise
        return slots

    def _send_frames(self, frames: list[Any]) -> None:
        """Send without ever blocking on a worker that died or stopped reading."""
        limit = time.monotonic() + self.policy.send_timeout_s
        poller: zmq.Poller | None = None
        while True:
            try:
                self._data.send_multipart(frames, zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                pass
            if poller is None:
                poller = zmq.Poller()
                poller.register(self._data, zmq.POLLOUT)
                poller.register(self.pidfd, select.POLLIN)
            remaining = limit - time.monotonic()
            if self.poll() is None and remaining > 0:
                poller.poll(int(remaining * 1000) + 1)
                continue
            raise self._died_while_sending().error

    def _died_while_sending(self) -> Died:
        """The worker exited, or took no request for `send_timeout_s` (it is killed). Its replies that arrived
        before are still good: they are handed out by `events()` before its `Died`."""
        context, hung = "while a request was being sent", False
        if self.poll() is None:
            self.kill()
            context, hung = f"because it took no request for send_timeout_s={self.policy.send_timeout_s}s", True
        self._res.process.wait_exit(None)  # type: ignore[union-attr]
        self._queued = self._drain_after_exit()
        if self._died is None:  # (a garbled reply among them may have killed it already)
            self._queued.append(self._death(context, hung))
        return self._died  # type: ignore[return-value]

    # --- death --------------------------------------------------------------------------------
    def _kill_for(self, reason: OrchestratorError | str) -> Died:
        """Kill a worker that hangs or misbehaves: `reason` is its error, or says why it was killed."""
        self.kill()
        if isinstance(reason, str):
            return self._death(f"because {reason}", hung=True)
        self.wait()
        self._died = Died(reason, self._death("", hung=True).requests, hung=True)
        return self._died

    def _death(self, context: str, hung: bool) -> Died:
        returncode = self.wait()
        if self._pump:
            self._pump.join(self.policy.output_drain_s)
        requests = tuple(self.in_flight)
        for request_id in requests:
            self._finish(request_id)
        self.phase = Phase.DEAD
        self._phase_deadline, self._busy_since, self._heartbeat = None, None, None
        if not context:
            context = f"while {_WAITING[self._activity(requests)]}"
        error = WorkerDied(f"worker {self.spec.label} ({self.spec.env.name}) {describe_exit(returncode)} {context}; "
                           f"last stderr:\n{self.stderr_tail()}", returncode)
        if self._last_words is not None:
            error.__cause__ = WorkerError(self._last_words.header.get("traceback", ""))
        self._died = Died(error, requests, hung)
        return self._died

    def _activity(self, requests: tuple[int, ...]) -> str:
        """What the worker was doing, for the message that reports its death."""
        if requests:
            return "batch"
        return {"describe": "describe", "setup": "setup"}.get(
            next(iter(self._control.values()), ""), "idle" if self.info else "ready")

    def stderr_tail(self) -> str:
        """The last lines the worker wrote to stderr."""
        return self._pump.tail() if self._pump else ""

    def _worker_error(self, message: Message, what: str) -> WorkerError:
        header = message.header
        return WorkerError(f"worker {self.spec.label} ({self.spec.env.name}): {what}: "
                           f"[{header.get('stage')}] {header.get('type')}: {header.get('message')}",
                           message.request_id, str(header.get("stage", "")), str(header.get("traceback", "")))

    # --- shutdown -----------------------------------------------------------------------------
    def ask_to_stop(self) -> None:
        """Ask the worker to exit on its control socket (never waits behind queued batches)."""
        if self.poll() is None and self._res.process is not None:
            frames, _ = self._control_encoder.encode(Message(Kind.SHUTDOWN, next(_ids)))
            with contextlib.suppress(zmq.ZMQError):
                self._control_socket.send_multipart(frames, zmq.NOBLOCK)

    def release(self) -> None:
        """Free sockets, shared memory and the process (killed if still running)."""
        self._finalizer()
        if self._pump:
            self._pump.join(self.policy.output_drain_s)
        self.phase = Phase.DEAD

    def close(self) -> int | None:
        """Stop the worker for sure: ask, wait, SIGTERM, wait, SIGKILL; then free sockets and memory."""
        close_all([self], self.policy.shutdown_grace_s, self.policy.term_grace_s)
        return self.poll()

    def __enter__(self) -> WorkerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_WAITING = {"batch": "waiting for a batch result", "idle": "idle", "describe": "waiting for the model's description",
            "setup": "waiting for setup", "ready": "waiting for READY handshake"}
