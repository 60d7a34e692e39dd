"""The parent's side of a worker's shared-memory ring: made at launch if it can be, counted while it is used.

A host without room for the ring (a small `/dev/shm`) still runs the worker, its arrays sent as frames over
the socket instead; that is said once, as a warning, and shows in the stage's stats (`ring_fallbacks`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.supervisor.policy import WorkerPolicy
from workers.shm_ring import ShmRingWriter, ShmUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RingUse:
    """A worker's ring: its slots, those free now, arrays written to it since launch; or, when the ring was
    wanted but could not be made, why (its arrays then travel as frames)."""

    slots: int = 0
    free: int = 0
    writes: int = 0
    unavailable: str = ""


class WorkerRing:
    def __init__(self) -> None:
        self.writer: ShmRingWriter | None = None
        self.unavailable = ""
        """Why the ring wanted could not be made."""
        self.writes = 0

    def make(self, policy: WorkerPolicy, label: str) -> list[str]:
        """Make the ring `policy` asks for; the worker's arguments to attach it (none: frames only)."""
        if not policy.use_shared_memory or policy.transport != "ipc":
            return []
        try:
            self.writer = ShmRingWriter(policy.shm_slots, policy.shm_slot_bytes)
        except ShmUnavailable as exc:
            self.unavailable = str(exc)
            logger.warning("worker %s: no shared-memory ring (%s); its arrays travel as frames over its socket, "
                           "slower", label, exc)
            return []
        ring = self.writer
        return ["--ring", ring.name, "--ring-slots", str(ring.n_slots), "--ring-slot-bytes", str(ring.slot_bytes)]

    def taken(self, slots: list[int]) -> None:
        """`slots` were written for a message about to be sent."""
        self.writes += len(slots)

    def release(self, slots: Iterable[int]) -> None:
        """The message that used `slots` was answered, or will never be (its send failed, its worker died)."""
        if self.writer is not None:
            self.writer.release(slots)

    def use(self) -> RingUse:
        if self.writer is None:
            return RingUse(unavailable=self.unavailable)
        return RingUse(self.writer.n_slots, self.writer.free_slots, self.writes)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
