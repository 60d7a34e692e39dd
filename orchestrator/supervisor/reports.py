"""The errors a worker handle reports, worded once: what happened, to which worker, and what to do next."""

from __future__ import annotations

from orchestrator.errors import HandshakeTimeout, ProtocolMismatch, WorkerDied, WorkerError
from orchestrator.supervisor.deadlines import Deadline
from orchestrator.supervisor.events import describe_exit
from orchestrator.supervisor.policy import WorkerPolicy
from orchestrator.supervisor.spec import WorkerSpec
from workers.headers import ErrorReport

_WAITING = {"batch": "waiting for a batch result", "idle": "idle", "describe": "waiting for the model's description",
            "setup": "waiting for setup", "ready": "waiting for READY handshake"}


def _who(spec: WorkerSpec) -> str:
    return f"worker {spec.label} ({spec.env.name})"


def worker_error(spec: WorkerSpec, request_id: int, report: ErrorReport, what: str) -> WorkerError:
    """An error the worker reported: where it happened, its type, message and traceback."""
    return WorkerError(f"{_who(spec)}: {what}: [{report.stage}] {report.type_name}: {report.message}",
                       request_id, report.stage, report.traceback)


def undecodable_reply(spec: WorkerSpec, request_id: int, exc: Exception) -> WorkerError:
    return WorkerError(f"{_who(spec)}: its reply could not be decoded: {exc}", request_id, "result")


def protocol_mismatch(spec: WorkerSpec, exc: Exception) -> ProtocolMismatch:
    return ProtocolMismatch(f"worker {spec.label} ({spec.env.python}): {exc}; rebuild or update the env so both "
                            f"sides run the same orchestrator")


def missed(spec: WorkerSpec, policy: WorkerPolicy, deadline: Deadline, stderr_tail: str) -> HandshakeTimeout:
    """A start-up deadline (READY, DESCRIBE, SETUP) passed."""
    seconds = getattr(policy, deadline.setting)
    return HandshakeTimeout(f"{_who(spec)}: no {deadline.what} within {seconds:.0f}s; raise "
                            f"WorkerPolicy.{deadline.setting} if it needs longer; last stderr:\n{stderr_tail}")


def died(spec: WorkerSpec, returncode: int | None, context: str, activity: str, stderr_tail: str,
         last_traceback: str | None) -> WorkerDied:
    """The worker exited or was killed: how, `context` (why it was killed; empty: what it was doing, one of
    `activity`'s batch, idle, describe, setup, ready), its stderr tail, and the traceback of its last words
    (when it sent any) as the cause."""
    context = context or f"while {_WAITING[activity]}"
    tail = f"; last stderr:\n{stderr_tail}" if stderr_tail.strip() else ""
    error = WorkerDied(f"{_who(spec)} {describe_exit(returncode)} {context}{tail}", returncode)
    if last_traceback is not None:
        error.__cause__ = WorkerError(last_traceback)
    return error


def stopped(spec: WorkerSpec) -> WorkerDied:
    return WorkerDied(f"{_who(spec)} was stopped")
