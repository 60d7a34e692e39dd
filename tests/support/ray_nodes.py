"""What a Ray test reads off its cluster: the nodes a stage ran on, the env workers still alive."""

from __future__ import annotations

import psutil


def ray_node_ids(nodes: dict[str, int]) -> set[str]:
    """The short Ray node ids in a stage's run.json `nodes` ("hostname (Ray node 1a2b3c4d)": starts)."""
    return {key.rsplit(" ", 1)[-1].rstrip(")") for key in nodes}


def env_workers() -> list[psutil.Process]:
    """Env worker processes below this one (under the cluster's raylets, or a run's parent)."""
    return [p for p in psutil.Process().children(recursive=True) if _is_env_worker(p)]


def _is_env_worker(process: psutil.Process) -> bool:
    try:
        return "workers" in process.cmdline()
    except psutil.Error:
        return False
