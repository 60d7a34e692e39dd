"""How many threads each worker may use, and the environment that tells it so.

Replicas that run at once share the machine's cores; a worker whose libraries each start one thread
per core would oversubscribe them. The parent hands every worker a budget through its environment:
native libraries read OMP_NUM_THREADS and its kin as they load, and the worker applies the rest
(torch, onnxruntime sessions, OpenCV) from `THREADS_VAR` before its model's `setup()`
(`workers.threads.apply_thread_budget`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from orchestrator.settings import declared_cpus
from workers.threads import THREADS_VAR

THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
)
"""Read by OpenMP, MKL, OpenBLAS, numexpr and Accelerate when they load in the worker."""


def available_cores() -> int:
    """Cores a run may use: `ORCHESTRATOR_CPUS` when set, else the cores this process may run on (its CPU
    affinity where the OS has one), at least 1."""
    if (declared := declared_cpus()) is not None:
        return declared
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def thread_environ(n: int) -> dict[str, str]:
    """Environment variables that hold a worker to `n` intra-op threads."""
    if n < 1:
        raise ValueError(f"a worker needs at least 1 thread, got {n}")
    return {**{name: str(n) for name in THREAD_VARIABLES}, THREADS_VAR: str(n)}


def default_budgets(cores: int, concurrent_replicas_per_stage: Mapping[str, int]) -> dict[str, int]:
    """Threads for each replica of each stage: the cores shared evenly among all replicas that run at
    once, at least 1 each; cores left over by the even share go one per replica to stages in the order
    given, while enough are left for all of a stage's replicas."""
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    if any(n < 0 for n in concurrent_replicas_per_stage.values()):
        raise ValueError(f"replica counts cannot be negative: {dict(concurrent_replicas_per_stage)}")
    replicas = sum(concurrent_replicas_per_stage.values())
    share = max(1, cores // replicas) if replicas else cores
    budgets = dict.fromkeys(concurrent_replicas_per_stage, share)
    spare = cores - share * replicas
    for stage, count in concurrent_replicas_per_stage.items():
        if 0 < count <= spare:
            budgets[stage] += 1
            spare -= count
    return budgets
