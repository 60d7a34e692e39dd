"""A worker that answered and then died while the parent sent it the next batch: its answer still counts."""

from __future__ import annotations

import os
import select
import signal

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from orchestrator.errors import WorkerDied
from orchestrator.supervisor.events import Answer, Died

LIMIT_MS = 30_000


def test_replies_received_before_a_death_noticed_while_sending_are_delivered(make_handle) -> None:
    handle = make_handle()
    data, pidfd = handle.wait_targets
    monitor = data.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        answered = handle.submit({"x": 1})
        assert data.poll(LIMIT_MS), "the worker never answered"  # the answer waits, unread, on the socket
        os.kill(handle.pid, signal.SIGKILL)
        assert select.select([pidfd], [], [], LIMIT_MS / 1000)[0], "the worker did not die"
        assert monitor.poll(LIMIT_MS), "the parent's socket never saw the worker go"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        with pytest.raises(WorkerDied, match="killed by SIGKILL while a request was being sent"):
            handle.submit({"x": 2})
    finally:
        data.disable_monitor()
        monitor.close(linger=0)
    events = handle.events()
    assert [type(e) for e in events] == [Answer, Died]
    assert (events[0].request_id, events[0].payload) == (answered, {"x": 1})
    assert events[1].requests == ()
