"""A worker that answered and then died while the parent sent it the next batch: its answer still counts."""

from __future__ import annotations

import os
import select
import signal
import time

import pytest
import zmq

from orchestrator.errors import WorkerDied
from orchestrator.supervisor.events import Answer, Died

LIMIT_S = 30


def test_replies_received_before_a_death_noticed_while_sending_are_delivered(make_handle) -> None:
    handle = make_handle()
    data, _, pidfd = handle.wait_targets
    answered = handle.submit({"x": 1})
    assert data.poll(LIMIT_S * 1000), "the worker never answered"  # the answer waits, unread, on the socket
    os.kill(handle.pid, signal.SIGKILL)
    assert select.select([pidfd], [], [], LIMIT_S)[0], "the worker did not die"
    deadline = time.monotonic() + LIMIT_S
    while data.getsockopt(zmq.EVENTS) & zmq.POLLOUT:  # until the parent's socket has seen its peer go
        assert time.monotonic() < deadline, "the parent's socket still takes messages for a dead worker"
        time.sleep(0.01)
    with pytest.raises(WorkerDied, match="killed by SIGKILL while a request was being sent"):
        handle.submit({"x": 2})
    events = handle.events()
    assert [type(e) for e in events] == [Answer, Died]
    assert (events[0].request_id, events[0].payload) == (answered, {"x": 1})
    assert events[1].requests == ()
