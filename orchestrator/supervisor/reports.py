"""The errors a worker handle reports, worded once: what happened, to which worker, and what to do next."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import HandshakeTimeout, ProtocolMismatch, WorkerDied, WorkerError
from orchestrator.supervisor.deadlines import Deadline
from orchestrator.supervisor.events import describe_exit
from orchestrator.supervisor.policy import WorkerPolicy
from orchestrator.supervisor.spec import WorkerSpec

_WAITING = {"batch": "waiting for a batch result", "idle": "idle", "describe": "waiting for the model's description",
            "setup": "waiting for setup", "ready": "waiting for READY handshake"}


def _who(spec: WorkerSpec) -> str:
    return f"worker {spec.label} ({spec.env.name})"


def worker_error(spec: WorkerSpec, request_id: int, header: dict[str, Any], what: str) -> WorkerError:
    """An error the worker reported (`header`: where it happened, its type, message and traceback)."""
    return WorkerError(f"{_who(spec)}: {what}: [{header.get('stage')}] {header.get('type')}: {header.get('message')}",
                       request_id, str(header.get("stage", "")), str(header.get("traceback", "")))


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
         last_words: dict[str, Any] | None) -> WorkerDied:
    """The worker exited or was killed: how, `context` (why it was killed; empty: what it was doing, one of
    `activity`'s batch, idle, describe, setup, ready), its stderr tail, and its own traceback as the cause."""
    context = context or f"while {_WAITING[activity]}"
    error = WorkerDied(f"{_who(spec)} {describe_exit(returncode)} {context}; last stderr:\n{stderr_tail}", returncode)
    if last_words is not None:
        error.__cause__ = WorkerError(last_words.get("traceback", ""))
    return error


def stopped(spec: WorkerSpec) -> WorkerDied:
    return WorkerDied(f"{_who(spec)} was stopped")
