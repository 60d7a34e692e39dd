"""A Ray replica's own deadlines, on the real cluster: a request queued behind a slow one gets its full
deadline, closing busy replicas takes one grace period however many there are, and a replica Ray cannot place
gives up after the placement timeout instead of waiting forever, unless a node has room for it (Ray is slow to
start it there)."""

from __future__ import annotations

import select
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator.declarations import ModelDeclarations
from orchestrator.errors import PipelineError
from orchestrator.on_ray.host import HostRequest, WorkerHost
from orchestrator.on_ray.placement import RayPolicy, StagePlacement
from orchestrator.on_ray.ray_worker import RayWorker
from orchestrator.supervisor.events import Answer, Died, Hello, SetUp
from orchestrator.supervisor.handle import ModelRef
from orchestrator.supervisor.policy import StopGrace, WorkerPolicy
from orchestrator.supervisor.shutdown import close_all
from tests.orchestrator.pipeline.runs import FIXTURES

HERE = Path(__file__).resolve().parent
START_S = 300


def _replica(label: str, model: ModelRef, policy: WorkerPolicy, ray_policy: RayPolicy | None = None,
             resources: dict[str, float] | None = None) -> RayWorker:
    request = HostRequest(label, "ocr", model, ModelDeclarations(model.class_path, "ocr"), (FIXTURES, HERE),
                          policy=policy)
    options = {"num_cpus": 0, "num_gpus": 0, "resources": resources or {}, "max_concurrency": 1}
    return RayWorker(request, StagePlacement(label.split("/")[0], options), policy.max_in_flight, ray_policy)


def _up(workers: list[RayWorker]) -> None:
    """Launch every replica and wait until each has its model set up."""
    for worker in workers:
        worker.launch()
    up: set[int] = set()
    limit = time.monotonic() + START_S
    while len(up) < len(workers) and time.monotonic() < limit:
        for index, worker in enumerate(workers):
            for event in worker.events():
                assert not isinstance(event, Died), event.error
                if isinstance(event, Hello):
                    worker.setup()
                elif isinstance(event, SetUp):
                    up.add(index)
        _wait(workers, 1.0)
    assert len(up) == len(workers), "not every replica started"


def _wait(workers: list[RayWorker], seconds: float) -> None:
    poller = select.poll()
    for worker in workers:
        for fd in worker.wait_targets:
            poller.register(fd, select.POLLIN)
    poller.poll(int(seconds * 1000))


def test_a_request_queued_behind_a_slow_one_gets_its_own_deadline(cluster) -> None:
    """Each request takes 3.5 s of its 5 s deadline; the second waits 3.5 s behind the first on the host (one
    call at a time), so from its sending it takes 7 s, past the first's deadline plus the host margin (6 s)."""
    policy = WorkerPolicy(request_timeout_s=5, max_in_flight=2)
    model = ModelRef("controlled_model.ControlledModel", {"env": "ocr", "delay_s": 3.5})
    worker = _replica("queued/0", model, policy, RayPolicy(host_margin_s=1.0))
    try:
        _up([worker])
        sent = [worker.submit({"x": 1}), worker.submit({"x": 2})]
        answered: list[int] = []
        limit = time.monotonic() + 60
        while len(answered) < 2 and time.monotonic() < limit:
            for event in worker.events():
                assert not isinstance(event, Died), event.error
                if isinstance(event, Answer):
                    answered.append(event.request_id)
            if (deadline := worker.next_deadline()) is not None:
                _wait([worker], max(0.0, min(deadline - time.monotonic(), 1.0)))
            else:
                _wait([worker], 1.0)
    finally:
        worker.release()
    assert answered == sent


def test_closing_busy_replicas_takes_one_grace_period_not_one_each(cluster, tmp_path: Path) -> None:
    """Every replica is in the middle of a minute-long call; each host stops its worker on its control
    thread at once, so all close within one grace period (the host's ask, SIGTERM and SIGKILL graces), and
    what each model started in its worker's process group goes with it."""
    replicas = 4
    policy = WorkerPolicy(request_timeout_s=600, stop=StopGrace(1.0, 1.0))
    marks = tmp_path / "marks"
    model = ModelRef("busy_model.BusyModel", {"env": "ocr", "marks": str(marks), "delay_s": 60})
    workers = [_replica(f"busy/{i}", model, policy) for i in range(replicas)]
    try:
        _up(workers)
        for worker in workers:
            worker.submit({"x": 1})
        _until(lambda: len(list(marks.glob("call-*"))) == replicas, "every call under way")
        children = [psutil.Process(int(mark.name.removeprefix("child-"))) for mark in marks.glob("child-*")]
        began = time.monotonic()
        close_all(workers, policy.stop)
        took = time.monotonic() - began
    finally:
        for worker in workers:
            worker.release()
    grace = policy.stop.total_s + RayPolicy().stop_margin_s
    assert took < 2 * grace, f"closing {replicas} busy replicas took {took:.1f} s (one grace period: {grace} s)"
    assert len(children) == replicas
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], "a model's child outlived its worker"


def test_a_replica_with_room_on_a_node_is_waited_for_past_the_placement_timeout(cluster) -> None:
    """A placement timeout of 0 s has passed at the first check, long before Ray can start an actor; a node
    has room for the replica (`spare` 2, it takes 1), so the run waits for Ray to start it instead of ending."""
    policy = WorkerPolicy(request_timeout_s=60)
    model = ModelRef("controlled_model.ControlledModel", {"env": "ocr"})
    worker = _replica("roomy/0", model, policy, RayPolicy(placement_timeout_s=0, placement_check_s=0),
                      {"spare": 1})
    try:
        worker.launch()
        checks, hello = 0, False
        limit = time.monotonic() + START_S
        while not hello and time.monotonic() < limit:
            events = worker.events()  # a PipelineError here is the run ending early
            checks += 1
            hello = any(isinstance(event, Hello) for event in events)
            _wait([worker], 0.5)
    finally:
        worker.release()
    assert hello, "the replica never started"
    assert checks > 1, "the replica was placed before any check could see the timeout passed"


def test_a_replica_ray_does_not_start_where_it_has_room_gives_up_after_the_start_timeout(cluster) -> None:
    """Room on a node but no replica started once the start timeout has passed: the run ends, naming the
    nodes' Ray workers rather than other work as the cause."""
    policy = WorkerPolicy(request_timeout_s=60)
    model = ModelRef("controlled_model.ControlledModel", {"env": "ocr"})
    worker = _replica("stuck/0", model, policy,
                      RayPolicy(placement_timeout_s=0, start_timeout_s=0, placement_check_s=0), {"spare": 1})
    try:
        worker.launch()
        with pytest.raises(PipelineError) as raised:
            worker.events()
    finally:
        worker.release()
    assert str(raised.value).startswith("stage 'stuck': Ray started none of its replicas within 0 s though a "
                                        "node has room for one (spare=1): its nodes are failing to start")


def test_a_replica_ray_cannot_place_gives_up_after_the_placement_timeout(cluster) -> None:
    """Both nodes with `spare` are held by other work: the replica waits its placement timeout, then ends
    the run with what it needs and what is free."""
    import ray

    policy = WorkerPolicy(request_timeout_s=60)
    model = ModelRef("controlled_model.ControlledModel", {"env": "ocr"})
    worker = _replica("crowded/0", model, policy, RayPolicy(placement_timeout_s=3, placement_check_s=0.5),
                      {"spare": 1})
    # other work holding every `spare` of the nodes still alive (an earlier test may have removed one): hosts
    # that start nothing (the test module cannot be imported by Ray)
    spares = [node["Resources"]["spare"] for node in ray.nodes() if node["Alive"] and "spare" in node["Resources"]]
    assert spares, "the cluster has no node with `spare` left"
    holders = [ray.remote(WorkerHost).options(num_cpus=0, resources={"spare": amount}).remote(worker.request)
               for amount in spares]
    try:
        ray.get([holder.where.remote() for holder in holders], timeout=START_S)
        worker.launch()
        began = time.monotonic()
        with pytest.raises(PipelineError) as raised:
            while time.monotonic() < began + 60:
                worker.events()
                _wait([worker], 0.5)
        waited = time.monotonic() - began
    finally:
        worker.release()
        for holder in holders:
            ray.kill(holder)
    assert 3 <= waited < 10
    message = str(raised.value)
    assert message.startswith("stage 'crowded': Ray placed none of its replicas within 3 s (one needs spare=1; "
                              "free now: ") and "other work holds the cluster's resources" in message


def _until(condition: Any, what: str, seconds: float = 60) -> None:
    limit = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < limit, f"timed out waiting for {what}"
        time.sleep(0.05)  # polls an observable state (files the calls write)
