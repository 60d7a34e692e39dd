"""A worker's process group: whatever its model starts goes with it, on a kill and on a clean close, and a
death is reported without waiting on pipes those children held open."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.errors import WorkerDied
from orchestrator.supervisor.events import Died
from orchestrator.supervisor.policy import StopGrace, WorkerPolicy

SPAWNER = "supervised_model.ChildSpawner"


def child_gone(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it (its parent, the worker, is dead)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def ends_soon(pid: int, limit_s: float = 10) -> bool:
    """SIGKILL is delivered as the child is next scheduled: give it a bounded moment to end."""
    deadline = time.monotonic() + limit_s
    while not child_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def spawned_child(make_handle, tmp_path: Path, policy: WorkerPolicy | None = None, **params: object):
    pid_file = tmp_path / "child.pid"
    handle = make_handle({"env": "ocr", "pid_file": str(pid_file), **params}, class_path=SPAWNER, policy=policy)
    child = int(pid_file.read_text())
    assert not child_gone(child)
    return handle, child


def kill_and_time_death(handle) -> tuple[float, Died]:
    """SIGKILL the worker alone; seconds until its handle reports the death, and the `Died`."""
    os.kill(handle.pid, signal.SIGKILL)
    killed = time.monotonic()
    events: list = []
    while not events or not isinstance(events[-1], Died):
        handle.wait_targets[0].poll(50)
        events += handle.events()
        assert time.monotonic() - killed < 30, "the death was never reported"
    return time.monotonic() - killed, events[-1]


def test_a_killed_worker_takes_its_child_along_and_its_death_waits_on_no_pipe(make_handle, tmp_path: Path) -> None:
    policy = WorkerPolicy(stop=StopGrace(1, 1))
    handle, child = spawned_child(make_handle, tmp_path, policy)
    seconds, died = kill_and_time_death(handle)
    # the child shared the worker's stdout and stderr: had it lived on, the pipes would never end
    assert seconds < policy.output_drain_s
    assert "killed by SIGKILL" in str(died.error)
    assert ends_soon(child)


def test_a_child_that_left_the_group_delays_a_death_report_by_output_drain_s_at_most(make_handle,
                                                                                    tmp_path: Path) -> None:
    policy = WorkerPolicy(output_drain_s=0.5, stop=StopGrace(1, 1))
    handle, child = spawned_child(make_handle, tmp_path, policy, own_session=True)
    try:
        seconds, died = kill_and_time_death(handle)
        assert seconds < policy.output_drain_s + 1.0  # it still holds the pipes: they are not waited for
        assert "killed by SIGKILL" in str(died.error)
        released = time.monotonic()
        handle.release()  # as a pool does next: the pipes are not waited for again
        assert time.monotonic() - released < policy.output_drain_s / 2
    finally:  # a process that left the group is out of the supervisor's reach
        os.kill(child, signal.SIGKILL)


def test_a_closed_worker_takes_its_child_along(make_handle, tmp_path: Path) -> None:
    handle, child = spawned_child(make_handle, tmp_path)
    assert handle.close() == 0
    assert ends_soon(child)


@pytest.mark.parametrize("how", ["hung", "release"])
def test_every_way_a_worker_is_stopped_takes_its_child_along(make_handle, tmp_path: Path, how: str) -> None:
    policy = WorkerPolicy(request_timeout_s=0.5, stop=StopGrace(1, 1))
    handle, child = spawned_child(make_handle, tmp_path, policy)
    if how == "hung":
        os.kill(handle.pid, signal.SIGSTOP)
        handle.submit({"x": 1})
        with pytest.raises(WorkerDied, match="exceeded request_timeout_s"):
            handle.receive(timeout=30)
    else:
        handle.release()
    assert ends_soon(child)


@pytest.mark.parametrize("seed", range(4))
def test_a_worker_killed_at_a_random_moment_of_its_work_takes_its_child_along(make_handle, tmp_path: Path,
                                                                               seed: int) -> None:
    policy = WorkerPolicy(stop=StopGrace(1, 1))
    handle, child = spawned_child(make_handle, tmp_path, policy)
    rng = random.Random(seed)
    for i in range(rng.randrange(1, 6)):  # some batches answered first, then one in flight or none
        handle.submit({"x": i})
        if rng.random() < 0.8:
            assert handle.receive(timeout=30).payload == {"x": i}
    time.sleep(rng.uniform(0, 0.05))  # the fault's moment, not a wait for anything
    seconds, died = kill_and_time_death(handle)
    assert seconds < policy.output_drain_s and "killed by SIGKILL" in str(died.error)
    assert ends_soon(child)
