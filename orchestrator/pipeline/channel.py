"""A bounded queue a consumer can wait on together with sockets and process handles.

A stage pool waits for worker replies, worker deaths and new input at once: the queue carries an eventfd
that becomes readable when an item is put (loky's wake-up pipe, for a queue). Without it the pool would
either block on the queue and miss a death, or poll the queue on a timer and add latency to every item.
"""

from __future__ import annotations

import contextlib
import os
import queue
import weakref
from typing import Any


class Channel(queue.Queue):
    """`queue.Queue` plus `fileno()`: readable once something was put since the last `clear_wakeup()`."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        weakref.finalize(self, os.close, self._wakeup)

    def _put(self, item: Any) -> None:  # runs under the queue's own lock
        super()._put(item)
        os.eventfd_write(self._wakeup, 1)

    def fileno(self) -> int:
        return self._wakeup

    def clear_wakeup(self) -> None:
        """Call before draining: a put that races the drain leaves the fd readable again, never lost."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wakeup)
