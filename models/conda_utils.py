"""Tell a model module whether it is being imported inside its own environment.

The worker launcher sets `WORKER_ENV_VAR` to the environment's name. The processes that only
describe a model (`workers.describe`) run without it, so guarded imports, which only `setup()`
needs, are skipped there and describing stays fast.
"""

from __future__ import annotations

import os

WORKER_ENV_VAR = "ORCHESTRATOR_WORKER_ENV"


def current_env_name() -> str | None:
    """Name of the environment this process runs in as a worker, or None in the parent."""
    return os.environ.get(WORKER_ENV_VAR) or None


def is_running_in_env(name: str) -> bool:
    """True only inside a worker started in environment `name` (uv, conda or existing)."""
    return current_env_name() == name
