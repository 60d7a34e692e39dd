"""Real multi-node Ray clusters on 127.0.0.1 for the Ray executor's tests: logical GPUs and custom resources
make placement observable, and nodes can be removed mid-run.

`cluster` (this process is its driver):
    head        CPU 3, head 10            the split stage and the Python 3.12 stage
    gpu_one     CPU 1, GPU 1, gpu_one 4   four replicas of 0.25 GPU must share its GPU
    gpu_two     CPU 1, GPU 2, gpu_two 4   two replicas of 1.0 GPU get a GPU each
    spare_a/b   CPU 2, spare 2 (each)     a stage pinned here survives losing one of them

`small_cluster` (runs reach it through --address), smaller than one replica of every stage at one CPU each:
    head        CPU 0                     holds no replica: each runs on a worker node
    one, two    CPU 1 (each)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

ray = pytest.importorskip("ray", reason="the Ray executor's tests need the ray extra: bash scripts/setup.sh")
from ray.cluster_utils import Cluster  # noqa: E402

from tests.support.ray_nodes import env_workers  # noqa: E402

NODES: dict[str, dict[str, Any]] = {
    "gpu_one": {"num_cpus": 1, "num_gpus": 1, "resources": {"gpu_one": 4}},
    "gpu_two": {"num_cpus": 1, "num_gpus": 2, "resources": {"gpu_two": 4}},
    "spare_a": {"num_cpus": 2, "resources": {"spare": 2}},
    "spare_b": {"num_cpus": 2, "resources": {"spare": 2}},
}
WORKER_EXIT_S = 5.0
"""An env worker whose actor or node is gone sees its parent die and exits within a second; leave margin."""


@pytest.fixture(scope="session")
def cluster() -> Iterator[tuple[Cluster, dict[str, Any]]]:
    """The cluster and its non-head nodes by name; this process is its driver."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keeps every node on 127.0.0.1
    Path("/tmp/ray/ray_current_cluster").unlink(missing_ok=True)  # a stale file would make `auto` join an old one
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "resources": {"head": 10},
                                                            "include_dashboard": False})
    try:
        nodes = {name: cluster.add_node(**args) for name, args in NODES.items()}
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def small_cluster() -> Iterator[tuple[Cluster, dict[str, Any]]]:
    """A cluster of two one-CPU worker nodes under a head without CPUs, and those nodes by name."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = {name: cluster.add_node(num_cpus=1) for name in ("one", "two")}
        cluster.wait_for_nodes()
        yield cluster, nodes
    finally:
        cluster.shutdown()


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    """The cluster's own processes live on across tests; an env worker must not outlive its test."""
    before = {p.pid for p in env_workers()}
    yield
    _, alive = psutil.wait_procs([p for p in env_workers() if p.pid not in before], timeout=WORKER_EXIT_S)
    for process in alive:
        process.kill()
    assert not alive, f"env workers outlived their test: {[' '.join(p.cmdline())[:120] for p in alive]}"
