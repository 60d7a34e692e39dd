"""Call a model on a request's items so that one bad item fails that item alone.

    not batched:  model(x1), model(x2), ...            each in its own try
    batched:      model([x1, x2, ...]) -> [r1, r2, ...]
                  raised, or not a list of as many results?  ──▶  model([x1])[0], model([x2])[0], ...

The outcome of each item is (result, None) or (None, error_header), in the items' order, so the parent
can retry or fail exactly the items that failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from workers.headers import ErrorReport

logger = logging.getLogger(__name__)

Outcome = tuple[Any, dict[str, Any] | None]


def error_header(stage: str, exc: BaseException) -> dict[str, Any]:
    """How a worker reports an exception: where it happened, its type, message and full traceback."""
    return ErrorReport.of(stage, exc).to_header()


def call_items(model: Callable[[Any], Any], inputs: list[Any], batched: bool) -> list[Outcome]:
    """One outcome per input, in order. A batched model gets all inputs in one call first; if that call
    raises or breaks the list contract, each input is tried alone (`model([x])[0]`)."""
    if not batched or not inputs:
        return [_attempt(lambda x=x: model(x)) for x in inputs]
    try:
        return [(result, None) for result in _results(model(list(inputs)), len(inputs))]
    except Exception as exc:  # a model's own failure: find the item(s) at fault one by one
        logger.warning("a batched call on %d items failed (%s: %s); calling each item alone to find the one(s) "
                       "at fault", len(inputs), type(exc).__name__, exc)
    return [_attempt(lambda x=x: _results(model([x]), 1)[0]) for x in inputs]


def _results(results: Any, expected: int) -> list[Any]:
    if not isinstance(results, (list, tuple)) or len(results) != expected:
        got = f"{len(results)} results" if isinstance(results, (list, tuple)) else type(results).__name__
        raise TypeError(f"a batched model must return a list with one result per input ({expected}), got {got}")
    return list(results)


def _attempt(call: Callable[[], Any]) -> Outcome:
    try:
        return call(), None
    except Exception as exc:  # a model's own failure, reported with its traceback
        return None, error_header("batch", exc)
