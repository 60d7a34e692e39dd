"""Hold a worker to its share of the machine's cores: one intra-op thread count for every thread pool.

Replicas of several stages run at once; if each of their libraries sized its pools to all cores, they
would fight over them. The parent gives each worker a budget in `THREADS_VAR`, next to OMP_NUM_THREADS
and its kin, which OpenMP, MKL and OpenBLAS read as they load. What those variables do not reach is
set here, after the model's module is imported and before its `setup()`:

    torch        set_num_threads(n); one inter-op thread, if torch still allows changing it
    onnxruntime  sessions built from then on get intra_op_num_threads=n, inter_op_num_threads=1
                 unless the model set them itself (these pools ignore the environment variables)
    cv2          setNumThreads(n)

Each only if the library is installed in this env; nothing the env lacks is imported.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Mapping
from typing import Any

THREADS_VAR = "ORCHESTRATOR_THREADS"

_session_threads = 1
"""The budget onnxruntime sessions get (the latest applied), read as each session is built."""


def budget_from_environ(environ: Mapping[str, str] = os.environ) -> int | None:
    """The budget the parent gave this worker, or None if it gave none."""
    value = environ.get(THREADS_VAR, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_VAR}={value!r}: expected a whole number of threads, at least 1")
    return int(value)


def apply_thread_budget(n: int | None) -> dict[str, int]:
    """Limit torch, onnxruntime and OpenCV to `n` intra-op threads (None: leave them be); returns the
    thread count set per library, for the libraries this env has."""
    if n is None:
        return {}
    if n < 1:
        raise ValueError(f"a thread budget must be at least 1, got {n}")
    applied = {}
    for library, limit in _LIMITS.items():
        if importlib.util.find_spec(library) is not None:
            limit(n)
            applied[library] = n
    return applied


def _limit_torch(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # torch allows it once, before any inter-op work: the count already set stays
        pass


def _limit_onnxruntime(n: int) -> None:
    global _session_threads
    import onnxruntime

    _session_threads = n
    # Patch the class itself, not the module's name for it: a model module imported earlier may hold
    # its own reference (`from onnxruntime import InferenceSession`).
    session_class = onnxruntime.InferenceSession
    if not getattr(session_class.__init__, "_within_thread_budget", False):
        session_class.__init__ = _budgeted_init(session_class.__init__, onnxruntime.SessionOptions)


def _budgeted_init(init: Callable[..., None], options_class: type) -> Callable[..., None]:
    @functools.wraps(init)
    def __init__(self: Any, path_or_bytes: Any, sess_options: Any = None, *args: Any, **kwargs: Any) -> None:
        options = options_class() if sess_options is None else sess_options
        # 0 is onnxruntime's "not set" (one thread per core); any other count is the model's own choice.
        if options.intra_op_num_threads == 0:
            options.intra_op_num_threads = _session_threads
        if options.inter_op_num_threads == 0:
            options.inter_op_num_threads = 1
        init(self, path_or_bytes, options, *args, **kwargs)

    __init__._within_thread_budget = True  # type: ignore[attr-defined]
    return __init__


def _limit_cv2(n: int) -> None:
    import cv2

    cv2.setNumThreads(n)


_LIMITS: dict[str, Callable[[int], None]] = {
    "torch": _limit_torch, "onnxruntime": _limit_onnxruntime, "cv2": _limit_cv2,
}
