"""Heartbeats while a model runs: the worker's control thread answers them, so a long batch in Python or in
native code survives, and a worker frozen in the middle of a batch is killed within its heartbeat deadline."""

from __future__ import annotations

import os
import signal
import time

import pytest

from orchestrator.errors import WorkerDied
from orchestrator.supervisor.events import Answer, Beat, Died
from orchestrator.supervisor.policy import WorkerPolicy

BUSY = "supervised_model.Busy"
LIMIT_S = 60


def drive(handle, until, limit_s: float = LIMIT_S) -> list:
    """Events of `handle` until `until(events)` holds, waiting on its sockets and pidfd as a pool does."""
    events: list = []
    deadline = time.monotonic() + limit_s
    while not until(events):
        assert time.monotonic() < deadline, f"gave up after {limit_s}s; events: {events}"
        wake = handle.next_deadline() or deadline
        handle.wait_targets[0].poll(max(1, int((min(wake, deadline) - time.monotonic()) * 1000) + 1))
        events += handle.events()
    return events


@pytest.mark.parametrize("params", [{"spin_s": 3.0}, {"sleep_s": 3.0}], ids=["python-loop", "gil-released"])
def test_a_batch_longer_than_the_heartbeat_deadline_survives(make_handle, params: dict) -> None:
    policy = WorkerPolicy(heartbeat_interval_s=0.2, heartbeat_timeout_s=1.5, request_timeout_s=LIMIT_S)
    handle = make_handle({"env": "ocr", **params}, class_path=BUSY, policy=policy)
    pid = handle.pid
    request_id = handle.submit({"x": 1})
    events = drive(handle, lambda es: any(isinstance(e, (Answer, Died)) for e in es))
    assert not any(isinstance(e, Died) for e in events), events
    assert sum(isinstance(e, Beat) for e in events) >= 2  # it was asked, and answered, while the model ran
    answer = next(e for e in events if isinstance(e, Answer))
    assert (answer.request_id, answer.payload) == (request_id, {"x": 1})
    assert handle.pid == pid and handle.poll() is None


def test_a_worker_frozen_mid_batch_is_killed_within_its_heartbeat_deadline(make_handle) -> None:
    policy = WorkerPolicy(heartbeat_interval_s=0.2, heartbeat_timeout_s=1.0, request_timeout_s=600)
    handle = make_handle({"fail_in": "batch", "how": "hang"}, policy=policy)
    request_id = handle.submit({"x": 1})
    deadline = time.monotonic() + LIMIT_S
    while "hanging" not in handle.stderr_tail():
        assert time.monotonic() < deadline, "the batch never started"
        handle.events()
        time.sleep(0.01)  # polls for the worker's own word that its model runs
    os.kill(handle.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    events = drive(handle, lambda es: any(isinstance(e, Died) for e in es))
    assert time.monotonic() - frozen < policy.heartbeat_interval_s + policy.heartbeat_timeout_s + 2.0
    died = events[-1]
    assert died.hung and died.requests == (request_id,)
    assert isinstance(died.error, WorkerDied)
    assert "answered no heartbeat within heartbeat_timeout_s=1.0s while busy" in str(died.error)
