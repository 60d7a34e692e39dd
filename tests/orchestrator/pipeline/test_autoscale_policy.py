"""The autoscale policy on synthetic measurements: speeds over a window, the slowest stage in input frames
per second, and every reason a stage is held back."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.pipeline.scaling.gpus import GpuAssignment
from orchestrator.pipeline.scaling.policy import AutoscalePolicy, Capacity, StageLoad, choose, speed
from orchestrator.pipeline.stats import Served

POLICY = AutoscalePolicy(window_s=60.0, min_answers=5)


def load(name: str, speed: float | None, frames_per_item: float | None = 50.0, *, replicas: int = 1,
         max_replicas: int | None = 4, threads: int = 1, num_gpus: float = 0.0, waiting: int = 5,
         starting: int = 0) -> StageLoad:
    return StageLoad(name, replicas, starting, threads, num_gpus, max_replicas, speed, frames_per_item, waiting)


def test_speed_is_items_over_worker_seconds_within_the_window() -> None:
    served = [Served(at, items, seconds) for at, items, seconds in
              [(10.0, 100, 1.0),                                  # outside the 60 s window: ignored
               (75.0, 2, 1.0), (80.0, 2, 1.0), (85.0, 1, 0.5), (90.0, 2, 1.0), (95.0, 3, 1.5)]]
    assert speed(served, 100.0, POLICY) == pytest.approx(10 / 5.0)


def test_speed_is_unknown_until_enough_answers() -> None:
    served = [Served(float(at), 1, 0.5) for at in range(4)]
    assert speed(served, 5.0, POLICY) is None
    assert speed([*served, Served(4.0, 1, 0.5)], 5.0, POLICY) == pytest.approx(2.0)


def test_stages_are_compared_in_input_frames_per_second_not_items() -> None:
    # the split stage answers fewer items per second, but each covers 200 frames: ocr is the slowest
    stages = [load("shots", 0.5, 200.0, max_replicas=None), load("ocr", 1.5, 40.0), load("content", 4.0, 40.0)]
    choice = choose(stages, Capacity(cores=8))
    assert choice.grow == "ocr"
    assert "ocr is the slowest stage with work waiting (input frames/s: shots 100.0, ocr 60.0, content 160.0)" \
        in choice.reason
    assert "replica 2 of at most 4" in choice.reason


def test_growing_repeatedly_gives_the_slowest_stage_one_replica_at_a_time_until_a_limit() -> None:
    stages = {"shots": load("shots", 1.5, 200.0, max_replicas=None), "ocr": load("ocr", 1.0),
              "content": load("content", 2.0)}
    grown = []
    while (choice := choose(list(stages.values()), Capacity(cores=8))).grow:
        grown.append(choice.grow)
        stages[choice.grow] = dataclasses.replace(stages[choice.grow], replicas=stages[choice.grow].replicas + 1)
    # ocr 50 frames/s a replica, content 100, shots 300 (fixed): ocr and content take turns, ocr first on ties
    assert grown == ["ocr", "ocr", "content", "ocr"]
    assert choice.held == "ocr: max_replicas" and "has max_replicas (4)" in choice.reason
    assert sum(s.replicas * s.threads for s in stages.values()) == 7


@pytest.mark.parametrize(("slowest", "capacity", "held", "says"), [
    (load("ocr", 1.0, max_replicas=None), Capacity(8), "ocr: fixed", "has a fixed number of replicas (1)"),
    (load("ocr", 1.0, replicas=4), Capacity(8), "ocr: max_replicas", "has max_replicas (4)"),
    (load("ocr", 1.0, threads=2), Capacity(4), "ocr: cores", "thread(s) do not fit: 4 of 4 cores are taken"),
    (load("ocr", 1.0, num_gpus=0.5), Capacity(8, 1, (GpuAssignment((0,), 0.5),) * 2), "ocr: gpus",
     "no GPU has room for another num_gpus 0.5 replica"),
])
def test_the_slowest_stage_held_back_says_why_and_no_other_stage_grows(
    slowest: StageLoad, capacity: Capacity, held: str, says: str
) -> None:
    choice = choose([load("shots", 2.0, 200.0, threads=2), slowest], capacity)
    assert choice.grow is None
    assert choice.held == held and says in choice.reason


def test_a_gpu_stage_grows_onto_a_free_share() -> None:
    choice = choose([load("embed", 1.0, num_gpus=0.5)], Capacity(8, 1, (GpuAssignment((0,), 0.5),)))
    assert choice.grow == "embed"


@pytest.mark.parametrize(("stages", "reason"), [
    ([load("shots", 2.0, 200.0), load("ocr", 1.0, starting=1)], "waiting for replicas of ocr to start"),
    ([load("shots", 2.0, 200.0), load("ocr", None)], "measuring ocr"),
    ([load("shots", 2.0, None), load("ocr", 1.0, None, waiting=0)], "measuring shots"),
    ([load("shots", None, waiting=0), load("ocr", 1.0, waiting=0)],
     ("no stage has work waiting: each keeps up with its input (the parent's decoding or cutting sets the pace, "
     "or the input is all read)")),
])
def test_no_decision_while_replicas_start_loaded_stages_are_unmeasured_or_nothing_waits(
    stages: list[StageLoad], reason: str
) -> None:
    choice = choose(stages, Capacity(8))
    assert (choice.grow, choice.held, choice.reason) == (None, "", reason)


def test_a_stage_with_nothing_waiting_is_never_the_slowest() -> None:
    # ocr measures slower, but it keeps up with its input: shots is what the pipeline waits for
    choice = choose([load("shots", 1.0, 200.0), load("ocr", 1.0, 50.0, waiting=0)], Capacity(8))
    assert choice.grow == "shots" and "(input frames/s: shots 200.0)" in choice.reason
    # the split stage finished its input: its few answers say nothing, and it holds nothing up
    choice = choose([load("shots", None, 200.0, waiting=0), load("ocr", 1.0)], Capacity(8))
    assert choice.grow == "ocr"
