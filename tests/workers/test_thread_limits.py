"""Thread budgets, worker side, where the libraries are absent (this interpreter has neither torch,
onnxruntime nor OpenCV): nothing is imported, nothing is set. The budgets inside real envs are tested in
tests/models/test_thread_budgets_in_envs.py."""

from __future__ import annotations

import sys

import pytest

from workers.threads import THREADS_VAR, apply_thread_budget, budget_from_environ

LIBRARIES = ("torch", "onnxruntime", "cv2")


def test_an_env_without_the_libraries_imports_none_of_them() -> None:
    assert [name for name in LIBRARIES if name in sys.modules] == []
    assert apply_thread_budget(2) == {}
    assert [name for name in LIBRARIES if name in sys.modules] == []


def test_no_budget_changes_nothing_and_a_zero_budget_is_refused() -> None:
    assert apply_thread_budget(None) == {}
    with pytest.raises(ValueError, match="at least 1, got 0"):
        apply_thread_budget(0)


@pytest.mark.parametrize(("value", "budget"), [(None, None), ("", None), ("4", 4), (" 2 ", 2)])
def test_budget_from_environ_reads_the_parents_variable(value: str | None, budget: int | None) -> None:
    assert budget_from_environ({} if value is None else {THREADS_VAR: value}) == budget


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_budget_from_environ_refuses_what_is_not_a_thread_count(value: str) -> None:
    with pytest.raises(ValueError, match=f"{THREADS_VAR}='{value}'"):
        budget_from_environ({THREADS_VAR: value})
