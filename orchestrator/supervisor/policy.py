"""Timeouts, limits and transport sizes for workers, and how long a stop waits, with documented defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StopGrace:
    """How a worker is stopped: asked on its control socket, given `ask_s` to exit, then SIGTERM and `term_s`,
    then SIGKILL to its whole process group. Many workers stopped together share one grace period."""

    ask_s: float = 2.0
    term_s: float = 1.0

    @property
    def total_s(self) -> float:
        """The longest a stop takes before the SIGKILL."""
        return self.ask_s + self.term_s


STOP_AT_ONCE = StopGrace(0.0, 0.0)
"""Ask, SIGTERM and SIGKILL without waiting in between: for workers that hold nothing worth a clean exit (they
only described a model)."""


@dataclass(frozen=True)
class WorkerPolicy:
    """How long to wait for what, and how much data may be in flight to one worker."""

    ready_timeout_s: float = 60.0
    """Spawn to READY: interpreter start plus importing zmq, msgpack and numpy."""
    setup_timeout_s: float = 600.0
    """Importing the model's packages and loading its weights."""
    request_timeout_s: float | None = None
    """A batch the worker has been on for this long means it hangs: it is killed and reported. The clock of a
    batch queued behind another starts when the one before it is answered."""
    heartbeat_interval_s: float | None = None
    """After this long without news from the worker, idle or busy, send it a heartbeat (None: never). Its control
    thread answers while the model runs, so a long batch is no silence."""
    heartbeat_timeout_s: float = 30.0
    """A heartbeat unanswered for this long means the worker's process is frozen (stopped, or stuck in native code
    that holds the GIL): it is killed and reported, long before `request_timeout_s`."""
    send_timeout_s: float = 30.0
    """A request the worker's socket will not take for this long (it stopped reading) means it hangs."""
    max_in_flight: int = 2
    """Batches sent but not answered; `submit` waits beyond this (backpressure)."""
    stop: StopGrace = StopGrace()
    use_shared_memory: bool = True
    """Send big arrays through a shared-memory ring (one host only); frames otherwise."""
    shm_slots: int = 8
    shm_slot_bytes: int = 16 * 1024 * 1024
    shm_threshold: int = 64 * 1024
    """Arrays at least this big use the ring."""
    inline_threshold: int = 4096
    """Arrays at most this big travel inside the message header."""
    max_message_bytes: int = 1024**3
    """The largest message either side accepts (ZMQ_MAXMSGSIZE on both sockets); a worker whose result is
    bigger answers with an error instead."""
    stderr_tail_lines: int = 30
    output_drain_s: float = 2.0
    """After a worker exits, how long to wait in all for the last lines of its stdout and stderr."""
    transport: Literal["ipc", "tcp"] = "ipc"
    """ipc in the run's private folder (one host), or tcp with CURVE authentication (for other hosts)."""
    tcp_host: str = "127.0.0.1"
    """Address the parent binds for tcp workers."""

