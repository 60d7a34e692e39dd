"""Planning replicas against a Ray cluster's nodes: one of every stage first, extras where they fit, shared
CPUs for stages without `threads`, and one line when not even one of every stage fits."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.on_ray.placement import StageDemand, lacking, plan_replicas

QUICKSTART = [StageDemand("shots", 2, 1, False), StageDemand("ocr", 1, 1, False), StageDemand("content", 1, 1, False)]


def test_the_quickstart_on_two_cpus_shares_them_instead_of_waiting_forever() -> None:
    plan = plan_replicas(QUICKSTART, [{"CPU": 2.0}])
    assert plan.replicas == {"shots": 2, "ocr": 1, "content": 1}
    assert plan.cpus == {"shots": 0.5, "ocr": 0.5, "content": 0.5}
    assert len(plan.notes) == 1 and "reserve 0.5 CPU each and share CPUs" in plan.notes[0]


def test_a_cluster_that_holds_every_replica_keeps_one_cpu_each() -> None:
    plan = plan_replicas(QUICKSTART, [{"CPU": 2.0}, {"CPU": 2.0}])
    assert plan.cpus == {"shots": 1.0, "ocr": 1.0, "content": 1.0} and plan.notes == ()
    assert plan.replicas == {"shots": 2, "ocr": 1, "content": 1}


def test_shares_fit_nodes_of_one_cpu_each() -> None:
    """Three replicas of 2/3 CPU would fit three CPUs in total but not nodes of one CPU: shares are 1/k."""
    demands = [StageDemand(name, 1, 1, False) for name in "abcd"]
    plan = plan_replicas(demands, [{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}])
    assert set(plan.cpus.values()) == {0.5} and plan.replicas == dict.fromkeys("abcd", 1)


def test_stages_with_threads_keep_them_and_extras_start_only_where_they_fit() -> None:
    demands = [StageDemand("a", 1, 2, True), StageDemand("b", 3, 2, True)]
    plan = plan_replicas(demands, [{"CPU": 4.0}, {"CPU": 3.0}])
    assert plan.cpus == {"a": 2.0, "b": 2.0} and plan.replicas == {"a": 1, "b": 2}
    assert plan.notes == (("stage 'b': 2 of its 3 replicas fit the Ray cluster beside the other stages; the rest "
                          "are not started (add nodes, or lower its threads, num_gpus or resources)"),)


def test_every_stage_gets_its_first_replica_before_any_gets_a_second() -> None:
    demands = [StageDemand("wide", 4, 1, True), StageDemand("last", 1, 1, True)]
    assert plan_replicas(demands, [{"CPU": 3.0}]).replicas == {"wide": 2, "last": 1}


@pytest.mark.parametrize(("demands", "nodes", "line"), [
    ([StageDemand("a", 1, 2, True), StageDemand("b", 1, 1, True)], [{"CPU": 2.0}],
     ("the Ray cluster has 2 CPUs; one replica of every stage needs 3 (stages a=2, b=1): add nodes, or lower the "
     "stages' `threads` (a stage without `threads` shares CPUs)")),
    ([StageDemand("a", 1, 1, False, 1.0), StageDemand("b", 1, 1, False, 0.5)], [{"CPU": 4.0, "GPU": 1.0}],
     ("the Ray cluster has 1 GPU; one replica of every stage needs 1.5 (stages a=1, b=0.5): add GPUs, or run "
     "models that declare a smaller num_gpus")),
    ([StageDemand("a", 1, 1, False, 0, {"ocr": 1}), StageDemand("b", 1, 1, False, 0, {"ocr": 1})],
     [{"CPU": 4.0, "ocr": 1.0}],
     ("the Ray cluster has 1 of resource 'ocr'; one replica of every stage needs 2 (stages a=1, b=1): add nodes "
     "that advertise 'ocr', or lower the stages' resources")),
    ([StageDemand("a", 1, 3, True), StageDemand("b", 1, 3, True)], [{"CPU": 3.0}, {"CPU": 2.0}, {"CPU": 2.0}],
     ("the Ray cluster's nodes cannot hold one replica of every stage at once (each node: CPU=3; CPU=2; CPU=2; one "
     "replica of each: a CPU=3, b CPU=3): add a node, or lower the stages' threads, num_gpus or resources")),
    ([StageDemand("a", 1, 1, False, 0, {"ocr": 1})], [{"CPU": 4.0}],
     ("stage 'a': no node of the Ray cluster can hold one replica: it needs ocr=1 (the most any node has is 0); "
     "lower the stage's threads, num_gpus or resources, or add such a node")),
])
def test_a_cluster_too_small_for_one_replica_of_every_stage_is_one_line(demands, nodes, line) -> None:
    with pytest.raises(ConfigError) as raised:
        plan_replicas(demands, nodes)
    assert str(raised.value) == line


def test_lacking_names_what_no_alive_node_has() -> None:
    nodes = [{"CPU": 1.0}, {"CPU": 2.0, "GPU": 1.0}]
    assert lacking({"CPU": 0.5, "lonely": 1.0}, nodes) == "it needs lonely=1 (the most any node has is 0)"
    assert lacking({"CPU": 2.0, "GPU": 1.0}, nodes) is None
    assert lacking({"CPU": 2.0, "GPU": 1.0, "x": 1}, [{"CPU": 2.0, "x": 1}, {"GPU": 1.0}]).endswith(
        "on one node (nodes: CPU=2, x=1; GPU=1)")
