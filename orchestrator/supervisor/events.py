"""What a worker handle reports while it runs, one small dataclass per kind of news.

`WorkerHandle.events()` drains them without blocking; a caller that drives many workers (a stage pool)
reacts to each, and the blocking conveniences (`start`, `receive`, `ping`) are built on the same stream.
"""

from __future__ import annotations

import contextlib
import enum
import signal
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import OrchestratorError, WorkerError
from workers.headers import WorkerInfo


class Phase(enum.Enum):
    """Where a worker is in its life; only UP takes batches."""

    STARTING = "starting"
    """Spawned, waiting for READY."""
    HELLO = "hello"
    """READY received (`Hello`): the owner may DESCRIBE the model and must send SETUP."""
    LOADING = "loading"
    """SETUP sent: importing the model and loading its weights."""
    UP = "up"
    """The model is set up (`SetUp`): the worker is ready."""
    DEAD = "dead"


@dataclass(frozen=True)
class Hello:
    """The worker's READY handshake: its process runs and speaks our protocol (its model is not loaded yet)."""

    info: WorkerInfo
    """The worker's READY header."""
    node: str = ""
    """Where the worker runs, when its host is on a cluster node (a Ray replica): `host (Ray node id)`."""


@dataclass(frozen=True)
class Declared:
    """The model's declarations, read in its env (the answer to DESCRIBE)."""

    declarations: dict[str, Any]


@dataclass(frozen=True)
class SetUp:
    """The model is loaded: the worker is ready, and takes batches."""

    model: str
    ring_unavailable: str = ""
    """Why the worker has no shared-memory ring although one was wanted (its arrays travel as frames)."""


@dataclass(frozen=True)
class SetupFailed:
    """The model's import, constructor or `setup()` raised: the worker is alive but has no model."""

    error: WorkerError


@dataclass(frozen=True)
class Answer:
    """A batch's reply. `failed` maps item positions to errors when the request carried items."""

    request_id: int
    payload: Any
    failed: dict[int, WorkerError] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """A whole batch failed (the model raised on a single-payload request, or the reply was unusable)."""

    request_id: int
    error: WorkerError


@dataclass(frozen=True)
class Beat:
    request_id: int


@dataclass(frozen=True)
class Died:
    """The worker is gone (it exited, or was killed for hanging or misbehaving); always the last event.

    `requests` are the batches it never answered; `hung` is True when the handle killed it for silence."""

    error: OrchestratorError
    requests: tuple[int, ...]
    hung: bool = False


Event = Hello | Declared | SetUp | SetupFailed | Answer | Failed | Beat | Died


def describe_exit(returncode: int | None) -> str:
    """`exit code 7`, `killed by SIGKILL`, or `still running`."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"
