"""One worker: start it in its env, handshake, stream batches, notice its death, stop it for sure.

    launch()    bind sockets ─▶ spawn `<env python> -m workers`                  Phase.STARTING
    events()    READY ─▶ Hello                                                   Phase.HELLO
    describe()  DESCRIBE ─▶ Declared (optional: the model's declarations, read in its env)
    setup()     SETUP ─▶ SetUp | SetupFailed                                     Phase.LOADING ─▶ UP
    submit()    BATCH ─▶ Answer | Failed, at most `max_in_flight` outstanding
    close()     shutdown on the control socket ─▶ SIGTERM ─▶ SIGKILL to its process group, always reaped

This module is the message state machine. Nothing here blocks on the worker: a send never waits on a dead
peer (it watches the process's pidfd and is bounded), and `events()` turns the process's exit, a missed
deadline (`deadlines`) or a garbled message into one final `Died`. The process and its group are `process`,
the sockets `channels`, and `start`, `receive`, `call` and `ping` are blocking calls over the same events
(`blocking`).
"""

from __future__ import annotations

import itertools
import os
import signal
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from orchestrator.errors import OrchestratorError
from orchestrator.supervisor import reports
from orchestrator.supervisor.blocking import BlockingCalls
from orchestrator.supervisor.channels import ControlChannel, DataChannel, SendFailed
from orchestrator.supervisor.deadlines import Clocks, Deadline
from orchestrator.supervisor.endpoints import bind_ipc, bind_tcp
from orchestrator.supervisor.events import Answer, Beat, Declared, Died, Event, Failed, Hello, Phase, SetUp, SetupFailed
from orchestrator.supervisor.launch import worker_argv, worker_environ
from orchestrator.supervisor.output import LogSink, OutputPump, log_to_logger
from orchestrator.supervisor.policy import WorkerPolicy
from orchestrator.supervisor.process import WorkerResources
from orchestrator.supervisor.ring import RingUse
from orchestrator.supervisor.shutdown import close_all
from orchestrator.supervisor.spec import ModelRef, WorkerSpec
from workers.headers import WorkerInfo
from workers.protocol import Kind, Message, ProtocolError, peek_request_id

__all__ = ["ModelRef", "RingUse", "WorkerHandle", "WorkerSpec"]

_ids = itertools.count(1)
_DRAIN_AFTER_EXIT_S = 0.05
"""After the process exits, how long to keep collecting replies it sent just before."""


@dataclass
class _Request:
    slots: list[int]
    items: bool


class WorkerHandle(BlockingCalls):
    """A worker process mirroring `Popen` (poll/wait/send_signal/terminate/kill), plus its sockets."""

    def __init__(self, spec: WorkerSpec, runtime_dir: Path, policy: WorkerPolicy | None = None,
                 on_log: LogSink = log_to_logger) -> None:
        super().__init__()
        self.spec = spec
        self.policy = policy or WorkerPolicy()
        self.runtime_dir = runtime_dir
        self.on_log = on_log
        self.phase = Phase.STARTING
        self.info: WorkerInfo | None = None
        self.declarations: dict[str, Any] | None = None
        self.in_flight: dict[int, _Request] = {}
        self._res = WorkerResources()
        self._finalizer = weakref.finalize(self, self._res.release)
        self._clocks = Clocks(self.policy)
        self._pump: OutputPump | None = None
        self._last_words: Message | None = None
        """The worker's DEAD message, if its loop crashed and it managed to say why."""
        self._queued: list[Event] = []
        """Events found outside `events()` (a death noticed while sending), handed out by it next."""
        self._control: dict[int, str] = {}
        """Request ids of DESCRIBE and SETUP messages, and which they were."""
        self._died: Died | None = None

    # --- Popen mirror -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._res.process.pid if self._res.process else None

    def poll(self) -> int | None:
        """The exit status, or None while the worker runs; never reaps it."""
        return self._res.process.poll() if self._res.process else None

    def wait_exit(self, timeout: float | None) -> int | None:
        """Wait up to `timeout` seconds for the worker to exit, without reaping it; its exit status, or None."""
        return self._res.process.wait_exit(timeout) if self._res.process else None

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
        """Readable once the process has exited: wait on it with the sockets."""
        return self._res.process.pidfd if self._res.process else None

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def death(self) -> Died | None:
        """The worker's death, once `events()` has found it."""
        return self._died

    @property
    def ring(self) -> RingUse:
        """What the worker's shared-memory ring has carried, and how much of it is free now."""
        return self._res.ring.use()

    @property
    def node(self) -> str | None:
        """A local worker runs on this host."""
        return None

    @property
    def bytes_moved(self) -> int:
        """Bytes sent and received on the data socket and copied into the ring since launch."""
        data: DataChannel | None = self.__dict__.get("_data")
        return data.bytes_moved if data is not None else 0

    @property
    def free_slots(self) -> int:
        """Batches `submit` takes now: none unless the model is set up."""
        return self.policy.max_in_flight - len(self.in_flight) if self.phase is Phase.UP else 0

    @property
    def wait_targets(self) -> tuple[zmq.Socket, zmq.Socket, int]:
        """The data and control sockets and the process's pidfd, for callers waiting on many workers at once."""
        if self.pidfd is None:
            raise RuntimeError(f"worker {self.spec.label} is not running")
        return self._data.socket, self._control_channel.socket, self.pidfd

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
        args = ["--data", bound.data_url, "--control", bound.control_url, "--name", self.spec.label,
                "--parent-pid", str(os.getpid()), "--max-message-bytes", str(self.policy.max_message_bytes)]
        args += self._res.ring.make(self.policy, self.spec.label)
        if self.spec.frames_dir is not None:
            args += ["--frames-dir", str(self.spec.frames_dir)]
        self._data = DataChannel(bound.data, self._res.ring, self.policy.inline_threshold, self.policy.shm_threshold)
        self._control_channel = ControlChannel(bound.control)
        environ = worker_environ(self.spec.env, self.runtime_dir, self.spec.user_code_dirs,
                                 {**self.spec.extra_environ, **bound.worker_environ})
        process = self._res.spawn(worker_argv(self.spec.env, *args), environ)
        self._pump = OutputPump(self.spec.label, process.stdout, process.stderr, self.on_log,
                                self.policy.stderr_tail_lines)
        self._clocks.start_phase(self.policy.ready_timeout_s, "READY handshake", "ready_timeout_s")

    def describe(self) -> None:
        """Ask for the model's declarations, read inside its env (answered by `Declared`)."""
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
        self._clocks.start_phase(self.policy.setup_timeout_s, what, setting)

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
        self.in_flight[request_id] = _Request(slots, items)
        self._clocks.batches_changed(len(self.in_flight), answered=False)
        return request_id

    def probe(self) -> int:
        """Send a heartbeat through the worker's main loop, behind its queued batches; its `Beat` carries the
        id returned."""
        self._raise_if_dead()
        request_id = next(_ids)
        self._send(Message(Kind.HEARTBEAT, request_id))
        return request_id

    def events(self) -> list[Event]:
        """Everything that happened since the last call, without blocking; a `Died` is always last."""
        found = self._take_queued()
        if self.phase is Phase.DEAD:
            return found
        while self.phase is not Phase.DEAD and (message := self._next_message()) is not None:
            found += self._interpret(message)
        found += self._take_queued()  # what a garbled message led to
        if self.phase is Phase.DEAD:
            return found
        found += self._heartbeat_answers()
        if self.poll() is not None:
            found += self._drain_after_exit()
            found.append(self._death("", hung=False))
        elif (overdue := self._clocks.overdue(next(iter(self.in_flight), None))) is not None:
            if isinstance(overdue, Deadline):
                overdue = reports.missed(self.spec, self.policy, overdue, self.stderr_tail())
            found.append(self._kill_for(overdue))
        elif self._clocks.heartbeat_due(self.phase is Phase.UP):
            request_id = next(_ids)
            self._clocks.heartbeat_sent(request_id)
            self._control_channel.heartbeat(request_id)
        return found

    def next_deadline(self) -> float | None:
        """When `events()` must next be called even if nothing arrives (a deadline or a heartbeat)."""
        return self._clocks.next(self.phase is Phase.UP)

    def _heartbeat_answers(self) -> list[Event]:
        answers = self._control_channel.answers()
        if answers:
            self._clocks.heard()
        return [Beat(request_id) for request_id in answers if self._clocks.heartbeat_answered(request_id)]

    def _raise_if_dead(self) -> None:
        """A worker found dead (its `Died` already reported, or about to be) raises its death's error."""
        if self._died is not None:
            raise self._died.error
        if self.phase is Phase.DEAD:
            raise reports.stopped(self.spec)

    # --- receiving ----------------------------------------------------------------------------
    def _next_message(self) -> Message | None:
        """A message already queued on the socket, without a poll system call (the fast path)."""
        while (frames := self._data.receive()) is not None:
            self._clocks.heard()
            try:
                message = self._data.decode(frames)
            except ProtocolError as exc:
                self._garbled(frames, exc)
                return None
            if message.kind is Kind.DEAD:
                self._last_words = message
                continue
            return message
        return None

    def _garbled(self, frames: list[zmq.Frame], exc: ProtocolError) -> None:
        """A reply we cannot decode fails its request when we can tell which; otherwise the worker is unusable."""
        if "protocol version" in str(exc):
            self._queued.append(self._kill_for(reports.protocol_mismatch(self.spec, exc)))
            return
        request_id = peek_request_id(frames[0].buffer)
        if request_id in self.in_flight:
            self._finish(request_id)
            self._queued.append(Failed(request_id, reports.undecodable_reply(self.spec, request_id, exc)))
            return
        self._queued.append(self._kill_for(f"it sent a message that could not be decoded ({exc})"))

    def _interpret(self, message: Message) -> list[Event]:
        purpose = self._control.pop(message.request_id, None)
        if message.kind is Kind.READY and self.phase is Phase.STARTING:
            self.info = message.worker_info()
            self.phase = Phase.HELLO
            self._clocks.end_phase()
            return [*self._take_queued(), Hello(self.info)]
        if purpose is not None:
            return [*self._take_queued(), self._control_reply(purpose, message)]
        if message.kind in (Kind.RESULT, Kind.ERROR) and message.request_id in self.in_flight:
            return [*self._take_queued(), self._batch_reply(message)]
        if message.kind is Kind.HEARTBEAT:
            return [Beat(message.request_id)]
        if message.kind is Kind.ERROR:  # the worker could not decode something we sent and cannot say what
            return [self._kill_for(f"it could not read a request ({message.error_report().message})")]
        self.on_log(self.spec.label, f"dropped a {message.kind.value!r} message for unknown request "
                                     f"{message.request_id}")
        return self._take_queued()

    def _take_queued(self) -> list[Event]:
        taken, self._queued = self._queued, []
        return taken

    def _control_reply(self, purpose: str, message: Message) -> Event:
        self._clocks.end_phase()
        if message.kind is Kind.ERROR:
            self.phase = Phase.HELLO
            what = "could not describe" if purpose == "describe" else "could not set up"
            return SetupFailed(reports.worker_error(self.spec, message.request_id, message.error_report(),
                                                    f"{what} {self.spec.model.class_path}"))
        if purpose == "describe":
            self.declarations = message.payload
            return Declared(message.payload)
        self.phase = Phase.UP
        return SetUp(str(message.header.get("model", "")), self._res.ring.unavailable)

    def _batch_reply(self, message: Message) -> Event:
        request = self._finish(message.request_id)
        if message.kind is Kind.ERROR:
            return Failed(message.request_id,
                          reports.worker_error(self.spec, message.request_id, message.error_report(), "batch failed"))
        failed = {index: reports.worker_error(self.spec, message.request_id, report, f"item {index} failed")
                  for index, report in message.item_errors().items()} if request.items else {}
        return Answer(message.request_id, message.payload, failed)

    def _finish(self, request_id: int) -> _Request:
        request = self.in_flight.pop(request_id)
        self._res.ring.release(request.slots)
        self._clocks.batches_changed(len(self.in_flight), answered=True)
        return request

    def _drain_after_exit(self) -> list[Event]:
        """Replies the worker sent just before it exited are still good: collect them."""
        found: list[Event] = []
        while self.phase is not Phase.DEAD and self._data.wait(_DRAIN_AFTER_EXIT_S):
            while self.phase is not Phase.DEAD and (message := self._next_message()) is not None:
                found += self._interpret(message)
        return found + self._take_queued()

    # --- sending ------------------------------------------------------------------------------
    def _send(self, message: Message) -> list[int]:
        """Send without ever blocking on a worker that died or stopped reading; returns its ring slots."""
        try:
            return self._data.send(message, self.pidfd, lambda: self.poll() is not None,  # type: ignore[arg-type]
                                   self.policy.send_timeout_s)
        except SendFailed:
            raise self._died_while_sending().error from None

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
        self._clocks.stop()
        last_words = self._last_words.error_report().traceback if self._last_words is not None else None
        error = reports.died(self.spec, returncode, context, self._activity(requests), self.stderr_tail(), last_words)
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

    # --- shutdown -----------------------------------------------------------------------------
    def ask_to_stop(self) -> None:
        """Ask the worker to exit on its control socket (never waits behind queued batches)."""
        if self.poll() is None and self._res.process is not None:
            self._control_channel.ask_to_stop()

    def release(self) -> None:
        """Free sockets, shared memory and the process (its group killed if still running)."""
        self._finalizer()
        if self._pump:
            self._pump.join(self.policy.output_drain_s)
        self.phase = Phase.DEAD

    def close(self) -> int | None:
        """Stop the worker for sure: ask, wait, SIGTERM, wait, SIGKILL; then free sockets and memory."""
        close_all([self], self.policy.stop)
        return self.poll()

    def __enter__(self) -> WorkerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
