"""Blocking calls on a worker, for simple callers and tests: built on the same `events()` a stage pool drives.

    start()  launch ─▶ Hello ─▶ (describe ─▶ Declared) ─▶ setup ─▶ SetUp      raises SetupFailed's error
    call()   submit ─▶ Answer                                                 raises Failed's or Died's error
    ping()   a heartbeat through the worker's main loop, behind its queued batches
"""

from __future__ import annotations

import collections
import select
import time
from collections.abc import Callable
from typing import Any

import zmq

from orchestrator.supervisor.events import Answer, Beat, Declared, Died, Event, Failed, Hello, SetUp, SetupFailed
from workers.headers import WorkerInfo


class BlockingCalls:
    """Mixed into `WorkerHandle`, whose non-blocking calls below it waits on."""

    info: WorkerInfo | None
    label: str
    death: Died | None
    wait_targets: tuple[Any, ...]
    launch: Callable[[], None]
    describe: Callable[[], None]
    setup: Callable[[], None]
    submit: Callable[..., int]
    probe: Callable[[], int]
    events: Callable[[], list[Event]]
    next_deadline: Callable[[], float | None]

    def __init__(self) -> None:
        self._backlog: collections.deque[Event] = collections.deque()
        """Events taken while waiting for another, handed out by later calls."""

    def start(self, describe: bool = False) -> WorkerInfo | None:
        """Spawn, handshake and set the model up; returns the worker's READY info."""
        self.launch()
        return self.handshake(describe)

    def handshake(self, describe: bool = False) -> WorkerInfo | None:
        """Wait for READY, optionally DESCRIBE, then set the model up; raises what went wrong."""
        if describe:
            self.read_declarations()
        else:
            self._wait_for(lambda e: isinstance(e, Hello), None)
        self.setup()
        _raise_setup_failure(self._wait_for(lambda e: isinstance(e, (SetUp, SetupFailed)), None))
        return self.info

    def read_declarations(self) -> dict[str, Any]:
        """Wait for READY, then have the worker describe its model in its env; it then waits for `setup()`."""
        self._wait_for(lambda e: isinstance(e, Hello), None)
        self.describe()
        event = self._wait_for(lambda e: isinstance(e, (Declared, SetupFailed)), None)
        _raise_setup_failure(event)
        assert isinstance(event, Declared)
        return event.declarations

    def receive(self, timeout: float | None = None) -> Answer:
        """The next answered batch. Raises WorkerError for a failed batch, WorkerDied if the process exited
        or hung past a deadline, TimeoutError if nothing came within `timeout`."""
        event = self._wait_for(lambda e: isinstance(e, (Answer, Failed)), timeout, "a batch result")
        if isinstance(event, Failed):
            raise event.error
        assert isinstance(event, Answer)
        return event

    def call(self, payload: Any, timeout: float | None = None) -> Any:
        """Submit one batch and wait for its result."""
        self.submit(payload)
        return self.receive(timeout).payload

    def ping(self, timeout: float) -> float:
        """Round trip of a heartbeat through the worker's main loop; seconds taken."""
        started = time.monotonic()
        request_id = self.probe()
        self._wait_for(lambda e: isinstance(e, Beat) and e.request_id == request_id, timeout, "heartbeat reply")
        return time.monotonic() - started

    def _wait_for(self, wanted: Callable[[Event], bool], timeout: float | None, what: str = "") -> Event:
        """The first event `wanted` picks, keeping the others for later calls; raises on death."""
        limit = None if timeout is None else time.monotonic() + timeout
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
            if self.death is not None:  # its Died was handed out before: nothing more will come
                raise self.death.error
            if limit is not None and time.monotonic() >= limit:
                raise TimeoutError(f"worker {self.label}: no {what} within {timeout:.1f}s")
            self._sleep_until(min((t for t in (limit, self.next_deadline()) if t is not None), default=None))

    def _sleep_until(self, wake: float | None) -> None:
        """Until the worker sends something, exits, or `wake` (None: no limit)."""
        poller = zmq.Poller()
        for target in self.wait_targets:
            poller.register(target, zmq.POLLIN if isinstance(target, zmq.Socket) else select.POLLIN)
        poller.poll(None if wake is None else max(0, int((wake - time.monotonic()) * 1000) + 1))


def _raise_setup_failure(event: Event) -> None:
    if isinstance(event, SetupFailed):
        raise event.error
