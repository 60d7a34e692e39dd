"""Stop many workers at once: ask them all, wait, SIGTERM the rest, wait, SIGKILL; always reap.

Escalating all workers together bounds a whole run's stop by one grace period, not one per worker.
"""

from __future__ import annotations

import select
import time
from collections.abc import Sequence

from orchestrator.supervisor.interface import Stoppable
from orchestrator.supervisor.policy import StopGrace


def close_all(handles: Sequence[Stoppable], grace: StopGrace) -> None:
    """Ask, wait `grace.ask_s`, SIGTERM, wait `grace.term_s`, then kill and release whatever is left."""
    try:
        running = [h for h in handles if h.pidfd is not None and h.poll() is None]
        for handle in running:
            handle.ask_to_stop()
        running = _wait_exited(running, grace.ask_s)
        for handle in running:
            handle.terminate()
        _wait_exited(running, grace.term_s)
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
