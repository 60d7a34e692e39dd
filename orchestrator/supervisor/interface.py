"""What the rest of the orchestrator needs of a worker, whoever hosts it: `WorkerHandle` locally, a Ray actor's
proxy on a cluster. Stopping needs less of it than running a stage does."""

from __future__ import annotations

from typing import Any, Protocol

from orchestrator.supervisor.events import Event, Phase


class Stoppable(Protocol):
    """What stopping needs of a worker: its process (through a pidfd, so an exit wakes the wait) and a way
    to ask, terminate and finally release it."""

    @property
    def pidfd(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def ask_to_stop(self) -> None: ...
    def terminate(self) -> None: ...
    def release(self) -> None: ...


class Worker(Stoppable, Protocol):
    """What a stage pool needs of a worker: start it, feed it, and hear what happened (`events()`), waiting on
    its `wait_targets` (sockets and file descriptors) until `next_deadline`."""

    phase: Phase
    label: str

    @property
    def free_slots(self) -> int: ...
    @property
    def wait_targets(self) -> tuple[Any, ...]: ...
    @property
    def bytes_moved(self) -> int:
        """Bytes of requests and replies this process has sent and received for the worker, shared memory
        it wrote included: what a stage costs the orchestrator to feed."""
        ...
    @property
    def node(self) -> str | None:
        """The cluster node the worker runs on (None: this host), which the pool matches against the node
        holding an item's frames."""
        ...
    def launch(self) -> None: ...
    def setup(self) -> None: ...
    def submit(self, payload: Any, request_id: int | None = None, items: bool = False) -> int: ...
    def events(self) -> list[Event]: ...
    def next_deadline(self) -> float | None: ...
