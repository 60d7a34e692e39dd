"""The clocks a worker runs against, and which one it has missed.

    launch ──ready_timeout_s──▶ READY ──setup_timeout_s──▶ its DESCRIBE / SETUP answer     (a phase deadline)
    a batch taken up ──request_timeout_s──▶ its answer   (a batch queued behind another is taken up when that
                                                          one is answered)
    silence for heartbeat_interval_s ──▶ heartbeat ──heartbeat_timeout_s──▶ its answer   (idle or busy)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from orchestrator.supervisor.policy import WorkerPolicy


@dataclass(frozen=True)
class Deadline:
    """A moment the worker owes something by: `what` it owes, and the `WorkerPolicy` field that set it."""

    at: float
    what: str
    setting: str


@dataclass(frozen=True)
class Heartbeat:
    """A heartbeat waiting for its answer."""

    request_id: int
    sent_at: float


class Clocks:
    """One worker's deadlines; the handle tells it what happened and asks what is overdue."""

    def __init__(self, policy: WorkerPolicy) -> None:
        self.policy = policy
        self.phase: Deadline | None = None
        self.busy_since: float | None = None
        """When the worker took up the batch it is on now (None: idle)."""
        self.heartbeat: Heartbeat | None = None
        self.last_heard = time.monotonic()

    def start_phase(self, seconds: float, what: str, setting: str) -> None:
        self.phase = Deadline(time.monotonic() + seconds, what, setting)

    def end_phase(self) -> None:
        self.phase = None

    def heard(self) -> None:
        """Anything from the worker proves it alive: the next heartbeat is due that much later."""
        self.last_heard = time.monotonic()

    def batches_changed(self, in_flight: int, answered: bool) -> None:
        """A batch went out (`answered` False) or came back; `in_flight` are those left. The clock runs for the
        batch the worker is on: the first sent, then each one as the one before it is answered."""
        if in_flight == 0:
            self.busy_since = None
        elif answered or self.busy_since is None:
            self.busy_since = time.monotonic()

    def heartbeat_sent(self, request_id: int) -> None:
        self.heartbeat = Heartbeat(request_id, time.monotonic())

    def heartbeat_answered(self, request_id: int) -> bool:
        """Whether `request_id` answers the heartbeat outstanding (a late answer to an older one does not)."""
        if self.heartbeat is None or self.heartbeat.request_id != request_id:
            return False
        self.heartbeat = None
        return True

    def heartbeat_due(self, up: bool) -> bool:
        interval = self.policy.heartbeat_interval_s
        return (up and interval is not None and self.heartbeat is None
                and time.monotonic() >= self.last_heard + interval)

    def overdue(self, oldest_request: int | None) -> Deadline | str | None:
        """The phase deadline missed, or why a worker that hangs must be killed, or None."""
        now = time.monotonic()
        if self.phase is not None and now >= self.phase.at:
            return self.phase
        timeout = self.policy.request_timeout_s
        if self.busy_since is not None and timeout is not None and now >= self.busy_since + timeout:
            return f"request {oldest_request} exceeded request_timeout_s={timeout}s"
        if self.heartbeat is not None and now >= self.heartbeat.sent_at + self.policy.heartbeat_timeout_s:
            return (f"it answered no heartbeat within heartbeat_timeout_s={self.policy.heartbeat_timeout_s}s "
                    f"{'while busy' if self.busy_since is not None else 'while idle'} (its process is frozen or "
                    f"stopped)")
        return None

    def next(self, up: bool) -> float | None:
        """When something may next be overdue or due, even if nothing arrives."""
        times = []
        if self.phase is not None:
            times.append(self.phase.at)
        if self.busy_since is not None and self.policy.request_timeout_s is not None:
            times.append(self.busy_since + self.policy.request_timeout_s)
        if self.heartbeat is not None:
            times.append(self.heartbeat.sent_at + self.policy.heartbeat_timeout_s)
        elif up and self.policy.heartbeat_interval_s is not None:
            times.append(self.last_heard + self.policy.heartbeat_interval_s)
        return min(times, default=None)

    def stop(self) -> None:
        """The worker is gone: nothing is owed any more."""
        self.phase, self.busy_since, self.heartbeat = None, None, None
