"""StagePool with real workers (the controlled model in the ocr env): order, poison items, broken stages,
failing items in a batch, hung and stopped workers, deaths between batches and while models load."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.envs import Env
from orchestrator.errors import PipelineError
from orchestrator.pipeline.channel import Channel
from orchestrator.pipeline.items import END
from orchestrator.pipeline.pool import RetryPolicy, StagePool, StepLogic
from orchestrator.pipeline.stats import StageStats
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.policy import StopGrace, WorkerPolicy
from tests.orchestrator.supervisor.test_shm_ring_use import more_than_dev_shm

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FAST_RETRY = RetryPolicy(backoff_s=0.05, max_backoff_s=0.2)
RUN_LIMIT_S = 120


class Collect(StepLogic):
    """Sends dict items' `x`, keeps the worker's answer or the failure on the item itself."""

    def wants(self, item: Any) -> bool:
        return isinstance(item, dict)

    def payload(self, item: dict) -> Any:
        return {"x": item["x"]}

    def absorb(self, item: dict, result: Any) -> None:
        item["result"] = result

    def fail(self, item: dict, reason: str) -> None:
        item["error"] = reason


@pytest.fixture
def workers(tmp_path: Path, ocr_env: Env) -> Callable[..., Callable[[int], WorkerHandle]]:
    def factory(policy: WorkerPolicy | None = None, **params: Any) -> Callable[[int], WorkerHandle]:
        model = ModelRef("controlled_model.ControlledModel", {"env": "ocr", **params})

        def make(replica: int) -> WorkerHandle:
            spec = WorkerSpec(f"s/{replica}", ocr_env, model, (FIXTURES,))
            return WorkerHandle(spec, tmp_path, policy or WorkerPolicy(stop=StopGrace(1, 1)))

        return make

    return factory


class Running:
    """A pool running on its own thread, fed and drained by the test; always stopped and cleaned up."""

    def __init__(self, make: Callable[[int], WorkerHandle], *, replicas: int = 1, batch_size: int = 1,
                 retry: RetryPolicy = FAST_RETRY, logic: StepLogic | None = None) -> None:
        self.stop = threading.Event()
        self.stats = StageStats("s")
        self.pool = StagePool(logic or Collect(), make, replicas, batch_size, self.stats, self.stop, retry)
        self.inq, self.outq = Channel(), Channel()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.pool.run(self.inq, self.outq)
        except BaseException as exc:
            self.error = exc

    def feed(self, *xs: Any) -> None:
        for x in xs:
            self.inq.put({"x": x})

    def take(self, n: int) -> list[Any]:
        return [self.outq.get(timeout=RUN_LIMIT_S) for _ in range(n)]

    def finish(self) -> None:
        self.inq.put(END)
        self.thread.join(RUN_LIMIT_S)
        assert not self.thread.is_alive(), "the pool did not finish"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(RUN_LIMIT_S)
        self.pool.close(StopGrace(1, 1))


@pytest.fixture
def running() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(make: Callable[[int], WorkerHandle], **kwargs: Any) -> Running:
        started.append(Running(make, **kwargs))
        return started[-1]

    yield start
    for run in started:
        run.close()


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    """Polls an observable state the system under test reaches by itself."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_items_pass_through_in_order_then_end(workers, running) -> None:
    run = running(workers(), replicas=2, batch_size=2)
    run.feed(*range(7))
    run.inq.put("not for the model")
    run.finish()
    out = run.take(9)
    assert [o["result"]["x"] for o in out[:7]] == list(range(7))
    assert out[7:] == ["not for the model", END]


def test_stats_say_when_every_replica_was_ready_and_how_long_each_request_took_its_worker(workers, running) -> None:
    run = running(workers(delay_s=0.2), replicas=2, batch_size=2)
    run.feed(*range(8))
    run.finish()
    assert len(run.take(9)) == 9
    assert run.stats.ready_at is not None and run.stats.ready_at <= (run.stats.last_at or 0)
    served = run.stats.served_since(0.0)
    # each worker takes its two requests in flight one after the other: each is timed from when it began
    assert sum(s.items for s in served) == 8 and len(served) == 4
    assert all(0.2 <= s.seconds < 2.0 for s in served)


def test_a_stop_ends_the_pool_even_when_its_output_queue_is_full(workers) -> None:
    stop = threading.Event()
    pool = StagePool(Collect(), workers(), 1, 1, StageStats("s"), stop, FAST_RETRY)
    inq, outq = Channel(), Channel(maxsize=1)
    for item in ["a", "b", "c", END]:
        inq.put(item)
    thread = threading.Thread(target=pool.run, args=(inq, outq), daemon=True)
    thread.start()
    wait_until(outq.full, "the output queue to fill")
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    pool.close(StopGrace(1, 1))


def test_poison_item_fails_alone_and_the_rest_succeed(workers, running) -> None:
    run = running(workers(poison={"3": "sigkill"}))
    run.feed(*range(6))
    run.finish()
    out = run.take(6)
    assert [o.get("result", {}).get("x") for o in out] == [0, 1, 2, None, 4, 5]
    assert "failed on 3 attempts, each time losing its worker" in out[3]["error"]
    assert "killed by SIGKILL" in out[3]["error"]
    assert (run.stats.poisoned, run.stats.restarts, run.stats.failed) == (1, 3, 1)
    assert run.stats.states == ["ready"]  # one poison item does not break the replica


def test_a_model_that_dies_on_every_call_fails_every_item_in_bounded_time(workers, running) -> None:
    run = running(workers(fail_in="batch", how="sigkill"), replicas=2)
    run.feed(*range(10))
    run.finish()
    out = run.take(11)
    assert all("error" in o for o in out[:10]) and out[10] is END
    assert any("is broken" in o["error"] for o in out[:10])
    assert run.stats.states == ["broken", "broken"]


def test_one_failing_item_in_a_batch_fails_alone(workers, running) -> None:
    run = running(workers(poison={"2": "exception"}), batch_size=3)
    run.feed(*range(6))
    run.finish()
    out = run.take(6)
    assert [o.get("result", {}).get("x") for o in out] == [0, 1, None, 3, 4, 5]
    assert "item 2 failed: [batch] RuntimeError: controlled failure" in out[2]["error"]
    assert run.stats.restarts == 0


def test_a_hung_request_is_killed_and_its_item_retried_then_failed(workers, running) -> None:
    policy = WorkerPolicy(request_timeout_s=1.0, stop=StopGrace(1, 1))
    run = running(workers(policy, poison={"1": "hang"}), retry=RetryPolicy(max_attempts=2, backoff_s=0.05))
    run.feed(0, 1, 2)
    run.finish()
    out = run.take(3)
    assert out[0]["result"] == {"x": 0} and out[2]["result"] == {"x": 2}
    assert "failed on 2 attempts" in out[1]["error"] and "exceeded request_timeout_s=1.0s" in out[1]["error"]


def test_a_worker_killed_between_batches_never_hangs_the_pool(workers, running) -> None:
    run = running(workers())
    run.feed(0, 1)
    assert [o["result"]["x"] for o in run.take(2)] == [0, 1]
    os.kill(run.pool.workers()[0].pid, signal.SIGKILL)
    run.feed(2, 3, 4)
    run.finish()
    assert [o["result"]["x"] for o in run.take(3)] == [2, 3, 4]
    assert run.stats.restarts == 1 and run.stats.failed == 0


def test_a_worker_killed_while_its_model_loads_is_restarted(workers, running, tmp_path: Path) -> None:
    marker = tmp_path / "loading"
    run = running(workers(slow_setup_marker=str(marker)))
    wait_until(marker.exists, "the first worker to be loading its model")
    os.kill(run.pool.workers()[0].pid, signal.SIGKILL)
    run.feed(0, 1)
    run.finish()
    assert [o["result"]["x"] for o in run.take(2)] == [0, 1]
    assert run.stats.restarts == 1


def test_a_model_that_cannot_set_up_stops_the_stage_at_once(workers, running) -> None:
    run = running(workers(fail_in="setup", how="exception"))
    run.thread.join(RUN_LIMIT_S)
    assert isinstance(run.error, PipelineError)
    assert "stage 's'" in str(run.error) and "[setup] RuntimeError: controlled failure" in str(run.error)


def test_an_idle_worker_that_stops_answering_is_replaced(workers, running) -> None:
    policy = WorkerPolicy(heartbeat_interval_s=0.2, heartbeat_timeout_s=1.0, stop=StopGrace(1, 1))
    run = running(workers(policy))
    run.feed(0)
    assert run.take(1)[0]["result"] == {"x": 0}
    stuck = run.pool.workers()[0].pid
    os.kill(stuck, signal.SIGSTOP)
    wait_until(lambda: run.stats.restarts == 1, "the stopped worker to be replaced")
    run.feed(1)
    run.finish()
    assert run.take(1)[0]["result"] == {"x": 1}
    assert run.pool.workers()[0].pid != stuck


def test_a_worker_frozen_mid_batch_is_replaced_within_its_heartbeat_deadline(workers, running) -> None:
    policy = WorkerPolicy(heartbeat_interval_s=0.2, heartbeat_timeout_s=1.0, request_timeout_s=600,
                          stop=StopGrace(1, 1))
    run = running(workers(policy, delay_s=2.0))
    run.feed(0)
    wait_until(lambda: run.stats.first_at is not None, "the item to be sent")
    stuck = run.pool.workers()[0].pid
    os.kill(stuck, signal.SIGSTOP)
    frozen = time.monotonic()
    wait_until(lambda: run.stats.restarts == 1, "the frozen worker to be replaced")
    assert time.monotonic() - frozen < policy.heartbeat_interval_s + policy.heartbeat_timeout_s + 2.0
    run.finish()
    assert run.take(1)[0]["result"] == {"x": 0}  # sent again to its replacement
    assert run.stats.retried == 1 and run.pool.workers()[0].pid != stuck


def test_a_replica_still_loading_its_model_never_holds_up_the_others(workers, running, tmp_path: Path) -> None:
    marker = tmp_path / "loading"
    run = running(workers(slow_setup_marker=str(marker)), replicas=2)  # one replica loads for a minute
    wait_until(marker.exists, "one replica to be loading its model")
    run.feed(*range(6))
    assert [o["result"]["x"] for o in run.take(6)] == list(range(6))
    assert sorted(run.stats.states) == ["ready", "starting"]


def test_a_replica_without_a_shared_memory_ring_is_counted(workers, running) -> None:
    policy = more_than_dev_shm(WorkerPolicy(stop=StopGrace(1, 1)))
    run = running(workers(policy), replicas=2)
    wait_until(lambda: run.stats.ready_at is not None, "both replicas to be set up")
    run.feed(0, 1)
    run.finish()
    assert [o["result"]["x"] for o in run.take(2)] == [0, 1]
    assert run.stats.summary()["ring_fallbacks"] == 2


class OnNode(WorkerHandle):
    """A real worker that says it runs on cluster node `node-<replica>` (the label is the only stand-in: a
    cluster's workers are Ray actors, whose placement this test does not need)."""

    def __init__(self, replica: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.node_name = f"node-{replica}"

    @property
    def node(self) -> str | None:
        return self.node_name


class ToNode(Collect):
    """Items say which node holds their frames."""

    def payload(self, item: dict) -> Any:
        return {"frames": np.zeros((1, 2, 2, 3), np.uint8)}

    def node_of(self, item: dict) -> str | None:
        return item["node"]


def test_an_item_goes_to_a_free_replica_on_the_node_holding_its_frames(tmp_path: Path, ocr_env: Env,
                                                                       running) -> None:
    """With both replicas idle, each item goes to the one on its frames' node, whichever that is: the
    least loaded replica alone would take every item to the first."""
    model = ModelRef("controlled_model.ControlledModel", {"env": "ocr", "returns": "frame_stats"})

    def make(replica: int) -> WorkerHandle:
        spec = WorkerSpec(f"s/{replica}", ocr_env, model, (FIXTURES,))
        return OnNode(replica, spec, tmp_path, WorkerPolicy(stop=StopGrace(1, 1)))

    run = running(make, replicas=2, logic=ToNode())
    wait_until(lambda: len(run.pool.workers()) == 2 and all(w.free_slots > 0 for w in run.pool.workers()),
               "both replicas set up")
    pid_on = {w.node: w.pid for w in run.pool.workers()}  # type: ignore[attr-defined]
    for node in ["node-1", "node-0", "node-1", "node-1", "node-0"]:
        run.inq.put({"node": node})
        (done,) = run.take(1)
        assert done["result"]["pid"] == pid_on[node], (node, done)
