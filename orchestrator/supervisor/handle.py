"""One worker process: start it in its env, handshake, stream batches, detect death, stop it for sure.

    WorkerHandle.start()   bind ipc sockets (0700 dir) ─▶ spawn `<env python> -m workers`
                           ─▶ READY (or exit, whichever first) ─▶ SETUP ─▶ RESULT/ERROR
    submit()/receive()     BATCH ─▶ RESULT/ERROR, at most `max_in_flight` outstanding
    close()                SHUTDOWN on the control socket ─▶ SIGTERM ─▶ SIGKILL, always reaped

`receive` waits on the data socket and the process's pidfd together, so a death is seen at once.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import select
import signal
import subprocess
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from orchestrator.envs import Env
from orchestrator.errors import HandshakeTimeout, ProtocolMismatch, WorkerDied, WorkerError
from orchestrator.supervisor.endpoints import bind_ipc, bind_tcp
from orchestrator.supervisor.launch import worker_argv, worker_environ
from orchestrator.supervisor.output import LogSink, OutputPump, log_to_logger
from orchestrator.supervisor.policy import WorkerPolicy
from workers.protocol import Decoder, Encoder, Kind, Message, ProtocolError
from workers.shm_ring import ShmRingWriter, ShmUnavailable

_ids = itertools.count(1)


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


@dataclass(frozen=True)
class Reply:
    request_id: int
    payload: Any
    header: dict[str, Any]


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


class _Resources:
    """Everything a worker holds, released by one idempotent call (also run by weakref.finalize)."""

    def __init__(self) -> None:
        self.sockets: list[zmq.Socket] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.ring: ShmRingWriter | None = None
        self.pidfd: int | None = None
        self.endpoints: list[Path] = []

    def release(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for sock in self.sockets:
            sock.close(linger=0)
        if self.ring is not None:
            self.ring.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
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
        self.info: dict[str, Any] = {}
        self.ready = False
        self.in_flight: dict[int, list[int]] = {}
        self.deadlines: dict[int, float] = {}
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.release)
        self._pump: OutputPump | None = None
        self._last_words: Message | None = None
        """The worker's DEAD message, if its loop crashed and it managed to say why."""
        self._kept: collections.deque[Message] = collections.deque()
        """Replies that arrived while a ping waited for its heartbeat, handed out by `receive` next."""

    # --- Popen mirror -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._res.process.pid if self._res.process else None

    def poll(self) -> int | None:
        return self._res.process.poll() if self._res.process else None

    def wait(self, timeout: float | None = None) -> int:
        if self._res.process is None:
            raise RuntimeError(f"worker {self.spec.label} was never started")
        return self._res.process.wait(timeout)

    def send_signal(self, sig: int) -> None:
        if self._res.process is not None and self._res.process.poll() is None:
            self._res.process.send_signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Spawn, handshake and set up the model; returns the worker's READY info."""
        self.launch()
        return self.handshake()

    def launch(self) -> None:
        """Spawn the process without waiting, so many workers can load their models at once."""
        self._spawn()

    def handshake(self) -> dict[str, Any]:
        """Wait for READY (or the process's exit), then set the model up."""
        hello = self._await(self.policy.ready_timeout_s, "READY handshake", "ready_timeout_s")
        if hello.kind is not Kind.READY:
            raise ProtocolMismatch(f"worker {self.spec.label}: expected READY first, got {hello.kind.value!r}")
        self.info = hello.header
        self._send(Message(Kind.SETUP, next(_ids), {"class_path": self.spec.model.class_path},
                           dict(self.spec.model.params)))
        reply = self._await(self.policy.setup_timeout_s, f"setup of {self.spec.model.class_path}", "setup_timeout_s")
        if reply.kind is Kind.ERROR:
            raise self._worker_error(reply, f"could not set up {self.spec.model.class_path}")
        self.ready = True
        return self.info

    def _spawn(self) -> None:
        context = zmq.Context.instance()
        if self.policy.transport == "tcp":
            bound = bind_tcp(context, self.policy.tcp_host)
        else:
            bound = bind_ipc(context, self.runtime_dir, f"w{next(_ids)}-{os.getpid()}")
        self._res.sockets += [bound.data, bound.control]
        self._res.endpoints += bound.ipc_paths
        self._data, self._control = bound.data, bound.control
        args = ["--data", bound.data_url, "--control", bound.control_url, "--name", self.spec.label]
        args += self._ring_args() if self.policy.transport == "ipc" else []
        self._encoder = Encoder(self.policy.inline_threshold, self._res.ring, self.policy.shm_threshold)
        self._decoder = Decoder()
        environ = worker_environ(self.spec.env, self.runtime_dir, self.spec.user_code_dirs,
                                 {**self.spec.extra_environ, **bound.worker_environ})
        process = subprocess.Popen(worker_argv(self.spec.env, *args), env=environ, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self._res.process = process
        self._res.pidfd = os.pidfd_open(process.pid)
        self._poller = zmq.Poller()
        self._poller.register(self._data, zmq.POLLIN)
        self._poller.register(self._res.pidfd, select.POLLIN)
        self._pump = OutputPump(self.spec.label, process.stdout, process.stderr, self.on_log,  # type: ignore[arg-type]
                                self.policy.stderr_tail_lines)

    def _ring_args(self) -> list[str]:
        if not self.policy.use_shared_memory:
            return []
        try:
            self._res.ring = ShmRingWriter(self.policy.shm_slots, self.policy.shm_slot_bytes)
        except ShmUnavailable as exc:
            self.on_log(self.spec.label, f"shared memory unavailable, sending frames instead: {exc}")
            return []
        ring = self._res.ring
        return ["--ring", ring.name, "--ring-slots", str(ring.n_slots), "--ring-slot-bytes", str(ring.slot_bytes)]

    # --- data path ----------------------------------------------------------------------------
    def submit(self, payload: Any, request_id: int | None = None, items: bool = False) -> int:
        """Send one batch; the caller must `receive` when `in_flight` is at `max_in_flight`.

        With `items`, `payload` is a list the worker hands to the model one element at a time, and the
        reply is the list of their results."""
        if len(self.in_flight) >= self.policy.max_in_flight:
            raise RuntimeError(f"worker {self.spec.label}: {len(self.in_flight)} batches in flight; receive first")
        request_id = next(_ids) if request_id is None else request_id
        slots = self._send(Message(Kind.BATCH, request_id, {"items": True} if items else {}, payload))
        self.in_flight[request_id] = slots
        if self.policy.request_timeout_s is not None:
            self.deadlines[request_id] = time.monotonic() + self.policy.request_timeout_s
        return request_id

    def receive(self, timeout: float | None = None) -> Reply:
        """The next answered batch. Raises WorkerError for a failed batch, WorkerDied if the process
        exited or hung past its request deadline, TimeoutError if nothing came within `timeout`."""
        message = self._await(timeout, "a batch result", None)
        self._finish(message.request_id)
        if message.kind is Kind.ERROR:
            raise self._worker_error(message, "batch failed")
        return Reply(message.request_id, message.payload, message.header)

    def call(self, payload: Any, timeout: float | None = None) -> Any:
        """Submit one batch and wait for its result (for simple callers and tests)."""
        self.submit(payload)
        return self.receive(timeout).payload

    def ping(self, timeout: float) -> float:
        """Round trip of a heartbeat through the worker's main loop; seconds taken."""
        started = time.monotonic()
        request_id = next(_ids)
        self._send(Message(Kind.HEARTBEAT, request_id))
        self._await(timeout, "a heartbeat reply", None, want_heartbeat=request_id)
        return time.monotonic() - started

    @property
    def wait_targets(self) -> tuple[zmq.Socket, int]:
        """The data socket and the process's pidfd, for callers waiting on many workers at once."""
        if self._res.pidfd is None:
            raise RuntimeError(f"worker {self.spec.label} is not running")
        return self._data, self._res.pidfd

    def _finish(self, request_id: int) -> None:
        slots = self.in_flight.pop(request_id, [])
        self.deadlines.pop(request_id, None)
        if self._res.ring is not None:
            self._res.ring.release(slots)

    def _send(self, message: Message) -> list[int]:
        frames, slots = self._encoder.encode(message)
        self._data.send_multipart(frames, copy=False)
        return slots

    def _await(self, timeout: float | None, what: str, setting: str | None, want_heartbeat: int = 0) -> Message:
        """Next message for us, watching the socket, the process and any request deadline together.

        Waiting for heartbeat `want_heartbeat`, replies that arrive first are kept for `receive`; otherwise
        stray heartbeat replies are dropped."""
        limit = None if timeout is None else time.monotonic() + timeout
        while True:
            kept = self._kept if not want_heartbeat else None
            message = kept.popleft() if kept else self._receive_ready_message()
            if message is not None:
                if message.kind is Kind.HEARTBEAT:
                    if message.request_id == want_heartbeat:
                        return message
                elif want_heartbeat:
                    self._kept.append(message)
                else:
                    return message
                continue
            deadline = limit
            if self.deadlines:
                deadline = min([d for d in (limit, *self.deadlines.values()) if d is not None])
            wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            events = dict(self._poller.poll(wait_ms))
            if events.get(self._data):
                continue
            if events.get(self._res.pidfd):
                raise self._died(f"while waiting for {what}")
            self._check_deadlines(what)
            if limit is not None and time.monotonic() >= limit:
                if setting is None:
                    raise TimeoutError(f"worker {self.spec.label}: no {what} within {timeout:.1f}s")
                raise HandshakeTimeout(
                    f"worker {self.spec.label} ({self.spec.env.name}): no {what} within {timeout:.0f}s; raise "
                    f"WorkerPolicy.{setting} if it needs longer; last stderr:\n{self.stderr_tail()}"
                )

    def _receive_ready_message(self) -> Message | None:
        """A message already queued on the socket, without a poll system call (the fast path)."""
        try:
            frames = self._data.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        return self._decode(frames)

    def _decode(self, frames: list[zmq.Frame]) -> Message | None:
        size = sum(len(f.buffer) for f in frames)
        if size > self.policy.max_message_bytes:
            self.on_log(self.spec.label, f"dropped a {size}-byte message (limit {self.policy.max_message_bytes})")
            return None
        try:
            message = self._decoder.decode(frames)
        except ProtocolError as exc:
            if "protocol version" in str(exc):
                raise ProtocolMismatch(f"worker {self.spec.label} ({self.spec.env.python}): {exc}; rebuild or "
                                       f"update the env so both sides run the same orchestrator") from None
            self.on_log(self.spec.label, f"dropped a malformed message: {exc}")
            return None
        if message.kind is Kind.DEAD:
            self._last_words = message
            return None
        return message

    def _check_deadlines(self, what: str) -> None:
        now = time.monotonic()
        late = [rid for rid, d in self.deadlines.items() if d <= now]
        if late:
            self.kill()
            self.wait()
            raise self._died(f"request {late[0]} exceeded request_timeout_s={self.policy.request_timeout_s}s; "
                             f"the worker was killed")

    # --- errors -------------------------------------------------------------------------------
    def stderr_tail(self) -> str:
        """The last lines the worker wrote to stderr."""
        return self._pump.tail() if self._pump else ""

    def _died(self, context: str) -> WorkerDied:
        returncode = self.wait()
        with contextlib.suppress(zmq.ZMQError):
            while self._data.poll(50):
                self._receive_ready_message()
        if self._pump:
            self._pump.join(timeout=2)
        self.ready = False
        error = WorkerDied(f"worker {self.spec.label} ({self.spec.env.name}) {describe_exit(returncode)} {context}; "
                           f"last stderr:\n{self.stderr_tail()}", returncode)
        if self._last_words is not None:
            error.__cause__ = WorkerError(self._last_words.header.get("traceback", ""))
        return error

    def _worker_error(self, message: Message, what: str) -> WorkerError:
        header = message.header
        return WorkerError(f"worker {self.spec.label} ({self.spec.env.name}): {what}: "
                           f"[{header.get('stage')}] {header.get('type')}: {header.get('message')}",
                           message.request_id, str(header.get("stage", "")), str(header.get("traceback", "")))

    # --- shutdown -----------------------------------------------------------------------------
    def close(self) -> int | None:
        """Stop the worker for sure: ask, wait, SIGTERM, wait, SIGKILL; then free sockets and memory."""
        process = self._res.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(zmq.ZMQError):
                self._control.send(b"shutdown", zmq.NOBLOCK)
            for escalate, grace in ((None, self.policy.shutdown_grace_s), (signal.SIGTERM, self.policy.term_grace_s)):
                if escalate is not None:
                    self.send_signal(escalate)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(grace)
                    break
        self._finalizer()
        if self._pump:
            self._pump.join(timeout=2)
        self.ready = False
        return process.returncode if process else None

    def __enter__(self) -> WorkerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
