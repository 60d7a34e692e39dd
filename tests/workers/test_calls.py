"""Per-item outcomes: one bad item fails alone, batched or not, and results stay on their items."""

from __future__ import annotations

from typing import Any

import numpy as np

from workers.calls import call_items, error_header


class Recorder:
    """Doubles numbers; refuses the input "bad"; remembers every argument it was called with."""

    def __init__(self, batched_returns: str = "list") -> None:
        self.calls: list[Any] = []
        self.batched_returns = batched_returns

    def one(self, x: Any) -> Any:
        if x == "bad":
            raise ValueError(f"cannot use {x!r}")
        return x * 2

    def __call__(self, batch: Any) -> Any:
        self.calls.append(batch)
        if not isinstance(batch, list):
            return self.one(batch)
        results = [self.one(x) for x in batch]
        if self.batched_returns == "short" and len(batch) > 1:
            return results[:-1]
        if self.batched_returns == "array":
            return np.array(results)
        return results


def _messages(outcomes: list[tuple[Any, dict[str, Any] | None]]) -> list[Any]:
    return [error["message"] if error else result for result, error in outcomes]


def test_one_call_per_item_when_not_batched_and_a_bad_item_fails_alone() -> None:
    model = Recorder()
    outcomes = call_items(model, [1, "bad", 3], batched=False)
    assert model.calls == [1, "bad", 3]
    assert _messages(outcomes) == [2, "cannot use 'bad'", 6]
    error = outcomes[1][1]
    assert error is not None and error["stage"] == "batch" and error["type"] == "ValueError"
    assert 'raise ValueError(f"cannot use {x!r}")' in error["traceback"]


def test_a_batched_model_gets_every_item_in_one_call() -> None:
    model = Recorder()
    assert call_items(model, [1, 2, 3], batched=True) == [(2, None), (4, None), (6, None)]
    assert model.calls == [[1, 2, 3]]
    assert call_items(model, [], batched=True) == [] and len(model.calls) == 1


def test_a_failing_batch_is_retried_item_by_item_so_only_the_bad_item_fails() -> None:
    model = Recorder()
    outcomes = call_items(model, [1, "bad", 3], batched=True)
    assert model.calls == [[1, "bad", 3], [1], ["bad"], [3]]
    assert _messages(outcomes) == [2, "cannot use 'bad'", 6]


def test_a_batch_answer_of_the_wrong_length_is_retried_item_by_item() -> None:
    model = Recorder(batched_returns="short")
    assert _messages(call_items(model, [1, 2], batched=True)) == [2, 4]
    assert model.calls == [[1, 2], [1], [2]]


def test_a_batched_model_that_answers_no_list_fails_each_item_saying_so() -> None:
    outcomes = call_items(Recorder(batched_returns="array"), [1, 2], batched=True)
    assert _messages(outcomes) == ["a batched model must return a list with one result per input (1), got ndarray"] * 2


def test_error_header_carries_type_message_and_traceback() -> None:
    try:
        raise KeyError("frames")
    except KeyError as exc:
        header = error_header("setup", exc)
    assert header["stage"] == "setup" and header["type"] == "KeyError" and header["message"] == "'frames'"
    assert header["traceback"].startswith("Traceback") and 'raise KeyError("frames")' in header["traceback"]
