"""The Ray actor that hosts one env worker on whichever node Ray places it.

    driver: RayWorker ──(actor call, payload as an object ref)──▶ WorkerHost on node N
                                                                    │ EnvRegistry().ensure(env) on N
                                                                    │ weights checked on N
                                                                    ▼
                                         WorkerHandle ──ipc + shared memory──▶ `<env python> -m workers`

The actor runs the cluster's own Python (which has this package); the model runs in its env's interpreter,
so an env needs no Ray and may use another Python version. A dying env worker is reported as WorkerDied;
stopping the actor stops its worker (ask, SIGTERM, SIGKILL of its process group), and if the actor itself is
killed, the worker sees its parent gone and exits within a second.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.declarations import ModelDeclarations
from orchestrator.envs import EnvRegistry
from orchestrator.errors import OrchestratorError
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.policy import WorkerPolicy
from orchestrator.supervisor.runtime_dir import make_runtime_dir
from orchestrator.weights.cache import WeightsCache, WeightsStatus
from orchestrator.weights.preflight import check_weights_present
from orchestrator.weights.requirements import merge_requirements, requirements_of
from orchestrator.weights.sources import open_source
from workers.gpu import MEMORY_FRACTION_VAR


@dataclass(frozen=True)
class HostRequest:
    """Everything a node needs to start one replica: plain data, sent with the actor's creation."""

    label: str
    env_name: str
    model: ModelRef
    declarations: ModelDeclarations
    user_code_dirs: tuple[Path, ...] = ()
    extra_environ: dict[str, str] = field(default_factory=dict)
    setup_options: dict[str, Any] = field(default_factory=dict)
    policy: WorkerPolicy = field(default_factory=WorkerPolicy)
    weights_from: str | None = None
    """Where a node missing the model's weights fetches them (hf, s3://bucket/prefix, a directory)."""


class WorkerHost:
    """One replica on a Ray node (made a Ray actor by `orchestrator.on_ray.workers`)."""

    def __init__(self, request: HostRequest) -> None:
        self.request = request
        self.node = socket.gethostname()
        self.handle: WorkerHandle | None = None
        self.runtime_dir: Path | None = None

    def start(self) -> dict[str, Any]:
        """Find or build the env on this node, check the weights here, start and set up the worker."""
        import ray  # this runs inside a Ray actor: Ray is there

        request = self.request
        self.node = f"{socket.gethostname()} (Ray node {ray.get_runtime_context().get_node_id()[:8]})"
        gpu_ids = [str(i) for i in ray.get_gpu_ids()]
        try:
            env = EnvRegistry().ensure(request.env_name)  # built once per node: the build cache's file lock
            self._ensure_weights()
            share = request.declarations.num_gpus
            gpu = {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids),
                   MEMORY_FRACTION_VAR: f"{share:g}" if gpu_ids and 0 < share < 1 else ""}
            self.runtime_dir = make_runtime_dir()
            spec = WorkerSpec(request.label, env, request.model, request.user_code_dirs,
                              {**request.extra_environ, **gpu}, request.setup_options)
            self.handle = WorkerHandle(spec, self.runtime_dir, request.policy)
            self.handle.start()
        except OrchestratorError as exc:  # same kind, so the driver tells a broken model from a lost worker
            raise type(exc)(f"node {self.node}: {exc}") from None
        return {"node": self.node, "gpu_ids": gpu_ids, **self.handle.info.to_header()}  # type: ignore[union-attr]

    def _ensure_weights(self) -> None:
        """The model's weights in this node's cache, fetched from `weights_from` where missing."""
        cache = WeightsCache()
        if self.request.weights_from is not None:
            source = open_source(self.request.weights_from)
            for requirement in merge_requirements(requirements_of(self.request.declarations)):
                if cache.status(requirement) is not WeightsStatus.PRESENT:
                    cache.download(requirement, source)
        try:
            check_weights_present([self.request.declarations], cache)
        except OrchestratorError as exc:
            raise type(exc)(f"{exc} (or run with --weights-from so nodes fetch what they lack)") from None

    def call(self, payload: Any, items: bool) -> tuple[Any, dict[int, str]]:
        """One request through the env worker: its result and, for items, the positions that failed.
        The model raising fails the call with WorkerError; the worker dying with WorkerDied."""
        assert self.handle is not None, "start() first"
        self.handle.submit(payload, items=items)
        reply = self.handle.receive()
        return reply.payload, {index: str(error) for index, error in reply.failed.items()}

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
