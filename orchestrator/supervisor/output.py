"""Forward a worker's stdout/stderr lines to the parent's log, prefixed by its label, keeping a tail."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import IO

LogSink = Callable[[str, str], None]
logger = logging.getLogger("orchestrator.worker")


def log_to_logger(label: str, line: str) -> None:
    logger.info("[%s] %s", label, line)


class OutputPump:
    """Reads a worker's pipes on two threads; `tail()` gives the last stderr lines for error reports."""

    def __init__(self, label: str, stdout: IO[bytes], stderr: IO[bytes], sink: LogSink, tail_lines: int) -> None:
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._limit: float | None = None
        self._threads = [
            threading.Thread(target=self._pump, args=(label, stream, sink, keep), daemon=True, name=f"{label}-{what}")
            for stream, keep, what in ((stdout, False, "stdout"), (stderr, True, "stderr"))
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, label: str, stream: IO[bytes], sink: LogSink, keep: bool) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace").rstrip()
                if keep:
                    self._tail.append(line)
                sink(label, line)

    def join(self, timeout: float) -> None:
        """Wait for both pipes to end, `timeout` seconds at most from the first call on: they end when the
        worker's process group is gone, but a process that left the group may hold them open for ever, and
        is waited for once, not at every step of the worker's end (its death, then its release)."""
        if self._limit is None:
            self._limit = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, self._limit - time.monotonic()))

    def tail(self) -> str:
        return "\n".join(self._tail)
