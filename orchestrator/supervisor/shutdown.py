"""Stop many workers at once: ask them all, wait, SIGTERM the rest, wait, SIGKILL; always reap.

Escalating all workers together bounds a whole run's stop by one grace period, not one per worker.
"""

from __future__ import annotations

import select
import time
from collections.abc import Sequence
from typing import Protocol


class Stoppable(Protocol):
    """What stopping needs of a worker: its process (through a pidfd, so an exit wakes the wait) and a way
    to ask, terminate and finally release it."""

    @property
    def pidfd(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def ask_to_stop(self) -> None: ...
    def terminate(self) -> None: ...
    def release(self) -> None: ...


def close_all(handles: Sequence[Stoppable], grace_s: float, term_grace_s: float) -> None:
    """Ask, wait `grace_s`, SIGTERM, wait `term_grace_s`, then kill and release whatever is left."""
    try:
        running = [h for h in handles if h.pidfd is not None and h.poll() is None]
        for handle in running:
            handle.ask_to_stop()
        running = _wait_exited(running, grace_s)
        for handle in running:
            handle.terminate()
        _wait_exited(running, term_grace_s)
    finally:
        for handle in handles:
            handle.release()


def _wait_exited(handles: list[Stoppable], seconds: float) -> list[Stoppable]:
    """Those of `handles` still running after up to `seconds`, woken by each exit rather than polling."""
    limit = time.monotonic() + seconds
    poller = select.poll()
    for handle in handles:
        if handle.pidfd is not None:
            poller.register(handle.pidfd, select.POLLIN)
    while (running := [h for h in handles if h.poll() is None]) and (left := limit - time.monotonic()) > 0:
        poller.poll(int(left * 1000) + 1)
    return running
