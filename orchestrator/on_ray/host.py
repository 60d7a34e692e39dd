"""The Ray actor that hosts one env worker on whichever node Ray places it.

    driver: RayWorker ──(actor call, payload as an object ref)──▶ WorkerHost on node N
                                                                    │ EnvRegistry().ensure(env) on N
                                                                    │ weights checked on N
                                                                    ▼
                                         WorkerHandle ──ipc + shared memory──▶ `<env python> -m workers`

The actor runs the cluster's own Python (which has this package); the model runs in its env's interpreter,
so an env needs no Ray and may use another Python version. A dying env worker is reported as WorkerDied.
A media replica (decode, cut, encode) runs in the node's own interpreter and writes its frames into a
frames folder of the node's own; each call hands them back as extra return values of the call, which the
driver owns and forwards to model replicas as object refs (orchestrator.on_ray.frames), passed as a
call's own arguments, so Ray fetches them onto the model replica's node before the call runs.

`start` and `call` run one at a time, in the order sent, on the actor's default thread; `stop` runs on its
own thread (the `control` concurrency group), so it never waits behind a call: it stops the worker's whole
process group (ask, SIGTERM, SIGKILL), which ends the call under way, then frees the worker. If the actor
itself is killed, the worker sees its parent gone and exits within a second.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.declarations import ModelDeclarations
from orchestrator.envs import EnvRegistry
from orchestrator.errors import OrchestratorError, WorkerDied, WorkerError
from orchestrator.on_ray.frames import slotted, with_arrays
from orchestrator.pipeline.media.steps import media_env
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.policy import WorkerPolicy
from orchestrator.supervisor.runtime_dir import make_runtime_dir
from orchestrator.supervisor.worker_variables import storage_environ
from orchestrator.weights.cache import WeightsCache, WeightsStatus
from orchestrator.weights.preflight import check_weights_present
from orchestrator.weights.requirements import merge_requirements, requirements_of
from orchestrator.weights.sources import open_source
from workers.gpu import MEMORY_FRACTION_VAR
from workers.shared_frames import SharedFramesDir

CONTROL = "control"
"""The actor's concurrency group for `stop`: one thread beside the one that runs `start` and `call`."""
CALL_EXIT_S = 5.0
"""After its worker's process group is gone, how long `stop` waits for the call under way to return (the
call notices the death at once, then collects the worker's last output)."""


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
    media: bool = False
    """A media step's replica: it runs in the node's own interpreter (which has PyAV) and its frames go back
    as the call's extra return values."""


class WorkerHost:
    """One replica on a Ray node (made a Ray actor by `orchestrator.on_ray.ray_worker`)."""

    def __init__(self, request: HostRequest) -> None:
        self.request = request
        self.node = socket.gethostname()
        self.handle: WorkerHandle | None = None
        self.runtime_dir: Path | None = None
        self.frames: SharedFramesDir | None = None
        """A media replica's frames folder on this node: its worker writes there, each call empties it."""
        self._busy = threading.Lock()
        """Held while `start` or `call` runs, so `stop` frees the worker only once neither uses it."""
        self._state = threading.Lock()
        self._stopping = False

    def where(self) -> dict[str, str]:
        """The node Ray placed this actor on (answered as soon as it is placed)."""
        import ray  # this runs inside a Ray actor: Ray is there

        node_id = ray.get_runtime_context().get_node_id()
        self.node = f"{socket.gethostname()} (Ray node {node_id[:8]})"
        return {"node": self.node, "node_id": node_id}

    def start(self) -> dict[str, Any]:
        """Find or build the env on this node, check the weights here, start and set up the worker."""
        import ray

        request = self.request
        gpu_ids = [str(i) for i in ray.get_gpu_ids()]
        with self._busy:
            try:
                model = request.model
                if request.media:
                    env = media_env()
                    self.frames = SharedFramesDir.make()
                    model = ModelRef(model.class_path, {**model.params, "frames_dir": str(self.frames.path)})
                else:
                    env = EnvRegistry().ensure(request.env_name)  # built once per node: the build cache's lock
                    self._ensure_weights()
                share = request.declarations.num_gpus
                gpu = {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids),
                       MEMORY_FRACTION_VAR: f"{share:g}" if gpu_ids and 0 < share < 1 else ""}
                self.runtime_dir = make_runtime_dir()
                storage = storage_environ(os.environ) if request.media else {}  # this node's own credentials
                spec = WorkerSpec(request.label, env, model, request.user_code_dirs,
                                  {**request.extra_environ, **storage, **gpu}, request.setup_options,
                                  self.frames.path if self.frames is not None else None)
                handle = WorkerHandle(spec, self.runtime_dir, request.policy)
                handle.launch()
                with self._state:
                    self.handle = handle
                    if self._stopping:
                        raise WorkerDied(f"worker {request.label}: stopped while it started")
                handle.handshake()
            except OrchestratorError as exc:  # same kind, so the driver tells a broken model from a lost worker
                raise type(exc)(f"node {self.node}: {exc}") from None
        return {**self.where(), "gpu_ids": gpu_ids, **handle.info.to_header()}  # type: ignore[union-attr]

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

    def call(self, payload: Any, items: bool, n_frames: int = 0, *frames: Any) -> Any:
        """One request through the env worker: its result and, for items, the positions that failed; a media
        replica's call returns its `n_frames` arrays of frames after that (None for those it did not fill).
        `frames`: the arrays the payload's slots stand for (Ray resolved them from their refs on this node).
        The model raising fails the call with WorkerError; the worker dying (or being stopped) with WorkerDied."""
        if frames:
            payload = with_arrays(payload, frames)
        with self._busy:
            if self.handle is None or self._stopping:
                raise WorkerDied(f"worker {self.request.label} on {self.node}: stopped")
            self.handle.submit(payload, items=items)
            reply = self.handle.receive()
        answer: Any = reply.payload
        failed = {index: str(error) for index, error in reply.failed.items()}
        if self.frames is None:
            return answer, failed
        arrays: list[Any] = []
        answer = slotted(answer, self.frames, arrays)
        if len(arrays) > n_frames:
            raise WorkerError(f"worker {self.request.label} on {self.node}: answered {len(arrays)} arrays of "
                              f"frames where its request has room for {n_frames}")
        if not n_frames:
            return answer, failed
        return ((answer, failed), *arrays, *([None] * (n_frames - len(arrays))))

    def stop(self) -> None:
        """Stop the worker's process group now, even while a call runs (this runs on the control thread),
        then, once the call has returned, free it. A running call's thread owns the worker's sockets, so
        a busy worker is stopped by signals alone: SIGTERM, then SIGKILL to its group after the policy's
        grace; an idle one is asked first, as everywhere else."""
        with self._state:
            self._stopping = True
            handle = self.handle
        idle = self._busy.acquire(blocking=False)
        if not idle:
            if handle is not None:
                _stop_busy(handle, self.request.policy)
            if not self._busy.acquire(timeout=CALL_EXIT_S):
                return  # a call stuck past its worker's death: the driver ends this actor next
        try:
            if self.handle is not None:  # also one that `start` launched while this began
                self.handle.close()
            if self.runtime_dir is not None:
                shutil.rmtree(self.runtime_dir, ignore_errors=True)
            if self.frames is not None:
                self.frames.remove()
        finally:
            self._busy.release()


def _stop_busy(handle: WorkerHandle, policy: WorkerPolicy) -> None:
    """SIGTERM a worker busy with a call, then SIGKILL its process group (the worker leads its own), so
    whatever the model started goes too. Signals only: never a socket the call's thread is using, and
    never a group whose leader that thread has reaped meanwhile (the handle's process excludes the two)."""
    if handle.poll() is None:
        handle.terminate()
        handle.wait_exit(policy.stop.total_s)
    handle.kill()
