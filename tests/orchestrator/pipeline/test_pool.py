"""StagePool plumbing that needs no worker: order, and stopping while its consumer has gone."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from orchestrator.pipeline.items import END
from orchestrator.pipeline.pool import StagePool, StepLogic
from orchestrator.pipeline.stats import StageStats


class WantsNothing(StepLogic):
    def wants(self, item: Any) -> bool:
        return False

    def payload(self, item: Any) -> Any:
        return item

    def absorb(self, item: Any, result: Any) -> None:
        pass

    def fail(self, item: Any, reason: str) -> None:
        pass


def test_items_pass_through_in_order_then_end() -> None:
    stop = threading.Event()
    pool = StagePool(WantsNothing(), [], 1, StageStats("s"), stop)
    inq, outq = queue.Queue(), queue.Queue()
    for item in ["a", "b", "c", END]:
        inq.put(item)
    pool.run(inq, outq)
    assert [outq.get_nowait() for _ in range(4)] == ["a", "b", "c", END]


def test_a_stop_ends_the_pool_even_when_its_output_queue_is_full() -> None:
    stop = threading.Event()
    pool = StagePool(WantsNothing(), [], 1, StageStats("s"), stop)
    inq, outq = queue.Queue(), queue.Queue(maxsize=1)
    for item in ["a", "b", "c", END]:
        inq.put(item)
    thread = threading.Thread(target=pool.run, args=(inq, outq), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not outq.full() and time.monotonic() < deadline:
        time.sleep(0.01)  # waits for the observable state "nobody is draining the output"
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
