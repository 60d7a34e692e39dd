"""Thread budgets, parent side: the cores shared among the replicas that run at once, and the variables
that carry a budget to a worker."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.supervisor.threads import THREAD_VARIABLES, available_cores, default_budgets, thread_environ
from workers.threads import THREADS_VAR, budget_from_environ


def test_thread_environ_sets_every_pool_variable_and_the_workers_own() -> None:
    environ = thread_environ(3)
    assert environ == {
        "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3", "NUMEXPR_NUM_THREADS": "3",
        "VECLIB_MAXIMUM_THREADS": "3", "ORCHESTRATOR_THREADS": "3",
    }
    assert set(THREAD_VARIABLES) | {THREADS_VAR} == set(environ)
    assert budget_from_environ(environ) == 3


def test_thread_environ_refuses_no_threads() -> None:
    with pytest.raises(ValueError, match="at least 1 thread, got 0"):
        thread_environ(0)


@pytest.mark.parametrize(("cores", "replicas", "budgets"), [
    (2, {"shots": 1, "ocr": 1, "content": 1}, {"shots": 1, "ocr": 1, "content": 1}),   # more replicas than cores
    (8, {"shots": 1, "ocr": 1, "content": 1}, {"shots": 3, "ocr": 3, "content": 2}),   # the 2 spare cores handed out
    (8, {"shots": 1, "ocr": 2}, {"shots": 3, "ocr": 2}),
    (8, {"ocr": 2, "shots": 1}, {"ocr": 3, "shots": 2}),
    (16, {"shots": 1}, {"shots": 16}),
    (4, {"shots": 1, "idle": 0}, {"shots": 4, "idle": 4}),
    (4, {}, {}),
])
def test_default_budgets_share_the_cores_among_concurrent_replicas(
    cores: int, replicas: dict[str, int], budgets: dict[str, int]
) -> None:
    assert default_budgets(cores, replicas) == budgets


@pytest.mark.parametrize("cores", range(1, 33))
@pytest.mark.parametrize("replicas", [{"a": 1}, {"a": 1, "b": 1}, {"a": 3, "b": 1, "c": 2}, {"a": 5, "b": 7}])
def test_default_budgets_use_the_cores_without_exceeding_them(cores: int, replicas: dict[str, int]) -> None:
    budgets = default_budgets(cores, replicas)
    used = sum(budgets[stage] * count for stage, count in replicas.items())
    if sum(replicas.values()) > cores:
        assert set(budgets.values()) == {1}
    else:  # what is left over is too little for another thread in every replica of any one stage
        assert cores - max(replicas.values()) < used <= cores


def test_default_budgets_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="cores must be at least 1"):
        default_budgets(0, {"a": 1})
    with pytest.raises(ValueError, match="cannot be negative"):
        default_budgets(4, {"a": -1})


def test_available_cores_is_at_least_one() -> None:
    assert available_cores() >= 1


def test_orchestrator_cpus_declares_the_cores_a_run_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_CPUS", "5")
    assert available_cores() == 5
    monkeypatch.setenv("ORCHESTRATOR_CPUS", "")
    assert available_cores() >= 1


@pytest.mark.parametrize("value", ["0", "two", "1.5", "-1"])
def test_orchestrator_cpus_must_be_a_count(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ORCHESTRATOR_CPUS", value)
    with pytest.raises(ConfigError, match=f"ORCHESTRATOR_CPUS={value!r}: give the number of cores"):
        available_cores()
