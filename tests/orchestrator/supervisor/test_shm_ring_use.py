"""Big arrays go to a worker through its shared-memory ring: slots are taken while a request is out and all free
again after its reply or its worker's death; a host where no ring can be made says so and still works."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal

import numpy as np
import pytest

from orchestrator.errors import WorkerDied
from orchestrator.supervisor.policy import StopGrace, WorkerPolicy

FRAMES = np.arange(4 * 120 * 160 * 3, dtype=np.uint8).reshape(4, 120, 160, 3)  # over shm_threshold


def test_big_arrays_travel_through_the_ring_and_its_slots_come_back(make_handle) -> None:
    handle = make_handle()
    assert handle.ring.slots == WorkerPolicy().shm_slots and handle.ring.free == handle.ring.slots
    handle.submit({"frames": FRAMES})
    assert handle.ring.free == handle.ring.slots - 1  # held until the reply is read
    assert np.array_equal(handle.receive(timeout=30).payload["frames"], FRAMES)
    assert handle.ring.writes == 1 and handle.ring.free == handle.ring.slots


def test_ring_slots_of_a_batch_in_flight_come_back_when_its_worker_is_killed(make_handle) -> None:
    handle = make_handle({"fail_in": "batch", "how": "hang"})
    handle.submit({"frames": FRAMES, "extra": FRAMES + 1})
    handle.submit({"frames": FRAMES})
    assert handle.ring.free == handle.ring.slots - 3
    os.kill(handle.pid, signal.SIGKILL)
    with pytest.raises(WorkerDied, match="killed by SIGKILL"):
        handle.receive(timeout=30)
    assert handle.ring.writes == 3 and handle.ring.free == handle.ring.slots


def test_a_worker_without_a_ring_warns_and_sends_frames(make_handle, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="orchestrator.supervisor.ring")
    handle = make_handle(policy=more_than_dev_shm(WorkerPolicy(stop=StopGrace(2, 2))))
    assert "the ring needs" in handle.ring.unavailable and handle.ring.slots == 0
    assert any(r.levelno == logging.WARNING and "no shared-memory ring" in r.getMessage()
               and handle.label in r.getMessage() for r in caplog.records)
    assert np.array_equal(handle.call({"frames": FRAMES}, timeout=30)["frames"], FRAMES)


def more_than_dev_shm(policy: WorkerPolicy) -> WorkerPolicy:
    """`policy` with a ring bigger than /dev/shm has room for: a host where no ring can be made."""
    stats = os.statvfs("/dev/shm")
    return dataclasses.replace(policy, shm_slots=2, shm_slot_bytes=stats.f_bavail * stats.f_frsize)
