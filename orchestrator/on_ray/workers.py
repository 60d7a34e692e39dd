"""The driver's side of a replica hosted by a Ray actor: the stage pool's `Worker`, with Ray futures as events.

    StagePool ─ submit ─▶ RayWorker ─ ray.put(payload) ─▶ WorkerHost.call(ref) on its node ─▶ env worker
        ▲ eventfd: a future completed                  ◀── result, or WorkerError / WorkerDied / actor lost
        └─ events(): Hello, SetUp, Answer, Failed, Died (the same events a local WorkerHandle gives)

Because a lost actor, a lost node and a dead env worker all end in `Died` with the requests in flight, the
pool's retry, poison and restart rules apply unchanged, and the writer's order and exactly-once hold.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.declarations import ModelDeclarations
from orchestrator.errors import ConfigError, HandshakeTimeout, OrchestratorError, WorkerDied, WorkerError
from orchestrator.on_ray.host import HostRequest, WorkerHost
from orchestrator.pipeline.autoscaler import Resources
from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.run import ResolvedStage, worker_policy
from orchestrator.supervisor.events import Answer, Died, Event, Failed, Hello, Phase, SetUp, SetupFailed
from orchestrator.supervisor.handle import ModelRef
from orchestrator.supervisor.policy import WorkerPolicy
from orchestrator.supervisor.threads import thread_environ

_ids = itertools.count(1)
_WATCH_S = 0.2
"""How long the watcher waits on Ray per round, so it notices new futures and its own closing."""
CONNECT_TIMEOUT_S = 5.0
HOST_MARGIN_S = 30.0
"""Beyond a stage's request deadline (which the host enforces on its worker), how long the driver waits
for the host's answer before it counts the host itself as hung and kills its actor."""


def connect(address: str | None) -> Any:
    """Join the Ray cluster at `address` ("auto": the one this machine belongs to; None: start one here)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray, an optional extra: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a Ray cluster"
            raise ConfigError(f"cannot join {where}: {_first_line(exc)}; check --address (host:port of the "
                              f"head, or auto on a node of the cluster)") from None
    return ray


def _check_reachable(address: str | None) -> None:
    """A head that cannot be reached is an error now: Ray itself retries it for minutes."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:  # type: ignore[operator]
        return  # auto, a new local cluster, or a client address: Ray resolves those
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster's head at {address}: {exc.strerror or exc}; check "
                          f"--address (host:port of the head, or auto on a node of the cluster)") from None


class _Watch:
    """Signals an eventfd when one of the worker's Ray futures completes, so the pool's wait wakes for it."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._pending: set[Any] = set()
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="ray-watch")
        self._thread.start()

    def add(self, ref: Any) -> None:
        with self._changed:
            self._pending.add(ref)
            self._changed.notify()

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                refs = list(self._pending)
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=_WATCH_S)
            if ready:
                with self._changed:
                    self._pending.difference_update(ready)
                os.eventfd_write(self.fd, 1)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(timeout=2 * _WATCH_S + 1)
        os.close(self.fd)


class RayWorker:
    """A replica whose env worker runs in a Ray actor placed by Ray (CPUs, fractional GPUs, resources)."""

    pidfd = None  # nothing local to wait on: stopping goes through the actor

    def __init__(self, request: HostRequest, options: Mapping[str, Any], max_in_flight: int) -> None:
        self.request = request
        self.label = request.label
        self.options = dict(options)
        self.max_in_flight = max_in_flight
        self.phase = Phase.STARTING
        self.info: dict[str, Any] = {}
        self._ray: Any = None
        self._actor: Any = None
        self._watch: _Watch | None = None
        self._start_ref: Any = None
        self._calls: dict[int, tuple[Any, bool]] = {}
        self._sent_at: dict[int, float] = {}
        self._queued: list[Event] = []

    @property
    def free_slots(self) -> int:
        return self.max_in_flight - len(self._calls) if self.phase is Phase.UP else 0

    @property
    def wait_targets(self) -> tuple[int, ...]:
        return (self._watch.fd,) if self._watch is not None else ()

    def launch(self) -> None:
        import ray

        self._ray = ray
        self._watch = _Watch(ray)
        self._actor = ray.remote(WorkerHost).options(**self.options).remote(self.request)
        self._start_ref = self._actor.start.remote()
        self._watch.add(self._start_ref)

    def setup(self) -> None:
        """The host sets the model up as it starts: nothing left to do but say so."""
        self.phase = Phase.UP
        self._queued.append(SetUp(self.request.model.class_path))

    def submit(self, payload: Any, request_id: int | None = None, items: bool = False) -> int:
        if self.phase is not Phase.UP:
            raise WorkerDied(f"worker {self.label} takes no batches while {self.phase.value}")
        request_id = next(_ids) if request_id is None else request_id
        ref = self._actor.call.remote(self._ray.put(payload), items)
        self._calls[request_id] = (ref, items)
        self._sent_at[request_id] = time.monotonic()
        self._watch.add(ref)  # type: ignore[union-attr]
        return request_id

    def events(self) -> list[Event]:
        found, self._queued = self._queued, []
        if self.phase is Phase.DEAD or self._watch is None:
            return found
        self._watch.clear()
        if self._start_ref is not None and self._done(self._start_ref):
            found.append(self._started())
        for request_id, (ref, items) in list(self._calls.items()):
            if self.phase is not Phase.DEAD and self._done(ref):
                found.append(self._answered(request_id, ref, items))
        if self.phase is not Phase.DEAD and (deadline := self.next_deadline()) is not None \
                and time.monotonic() >= deadline:
            self.terminate()
            found.append(self._died(WorkerDied(f"worker {self.label}{self._on_node()}: its Ray actor gave no "
                                               f"answer within {self._host_deadline_s()} s; killed it"), hung=True))
        return found

    def _done(self, ref: Any) -> bool:
        ready, _ = self._ray.wait([ref], timeout=0)
        return bool(ready)

    def _started(self) -> Event:
        ref, self._start_ref = self._start_ref, None
        try:
            self.info = self._ray.get(ref)
        except Exception as exc:  # the host's start raised, or the actor or its node is gone
            cause = _cause(exc)
            if isinstance(cause, OrchestratorError) and not isinstance(cause, (WorkerDied, HandshakeTimeout)):
                self.phase = Phase.HELLO  # the model, its env or its weights cannot be set up on that node
                return SetupFailed(cause if isinstance(cause, WorkerError) else WorkerError(str(cause)))
            return self._died(cause)
        self.phase = Phase.HELLO
        return Hello(self.info)

    def _answered(self, request_id: int, ref: Any, items: bool) -> Event:
        del self._calls[request_id]
        self._sent_at.pop(request_id, None)
        try:
            payload, failed = self._ray.get(ref)
        except Exception as exc:  # the model raised, its worker died, or the actor or its node is gone
            cause = _cause(exc)
            if isinstance(cause, WorkerError):
                return Failed(request_id, WorkerError(str(cause), request_id, "batch"))
            self._calls[request_id] = (ref, items)
            return self._died(cause)
        errors = {int(i): WorkerError(f"worker {self.label}: item {i} failed: {message}", request_id, "batch")
                  for i, message in failed.items()}
        return Answer(request_id, payload, errors)

    def _died(self, cause: BaseException, hung: bool = False) -> Died:
        self.phase = Phase.DEAD
        error = cause if isinstance(cause, WorkerDied) else WorkerDied(
            f"worker {self.label}{self._on_node()}: its Ray actor is gone ({type(cause).__name__}: "
            f"{_first_line(cause)})")
        requests, self._calls, self._sent_at = tuple(self._calls), {}, {}
        return Died(error, requests, hung)

    def _on_node(self) -> str:
        return f" on {self.info['node']}" if self.info.get("node") else ""

    def _host_deadline_s(self) -> float | None:
        limit = self.request.policy.request_timeout_s
        return None if limit is None else limit + HOST_MARGIN_S

    def next_deadline(self) -> float | None:
        """When the oldest call's host is overdue; the host's own WorkerHandle keeps the worker's deadlines."""
        if not self._sent_at or (limit := self._host_deadline_s()) is None:
            return None
        return min(self._sent_at.values()) + limit

    def poll(self) -> int | None:
        return 0 if self.phase is Phase.DEAD else None

    def ask_to_stop(self) -> None:
        """Nothing to ask locally: `release` stops the host, which stops its worker."""

    def terminate(self) -> None:
        if self._actor is not None:
            self._ray.kill(self._actor, no_restart=True)

    def release(self) -> None:
        """Stop the host (it stops its worker: ask, SIGTERM, SIGKILL of the group), then end the actor."""
        if self._actor is not None:
            policy = self.request.policy
            with contextlib.suppress(Exception):  # a host already gone has nothing left to stop
                self._ray.get(self._actor.stop.remote(), timeout=policy.stop.total_s + 5)
            with contextlib.suppress(Exception):
                self._ray.kill(self._actor, no_restart=True)
            self._actor = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self.phase = Phase.DEAD


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _cause(exc: BaseException) -> BaseException:
    """The exception a Ray task raised inside its actor, or the Ray error itself (actor or node lost)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


@dataclass(frozen=True)
class RayWorkers:
    """Makes a run's replicas as Ray actors: the resources each reserves and what its host needs."""

    env_names: Mapping[str, str]
    class_paths: Mapping[str, str]
    declarations: Mapping[str, ModelDeclarations]
    threads: Mapping[str, int]
    policies: Mapping[str, WorkerPolicy]
    user_code_dirs: tuple[Path, ...]
    weights_from: str | None = None
    cluster_has_gpus: bool = True
    """Without any GPU in the cluster, models that ask for one run on CPU (as the local executor does)."""

    def make(self, stage: StageConfig, replica: int) -> RayWorker:
        threads = self.threads[stage.name]
        request = HostRequest(f"{stage.name}/{replica}", self.env_names[stage.name],
                              ModelRef(self.class_paths[stage.name], stage.params), self.declarations[stage.name],
                              self.user_code_dirs, thread_environ(threads), {"input": stage.input},
                              self.policies[stage.name], self.weights_from)
        return RayWorker(request, self.options(stage), self.policies[stage.name].max_in_flight)

    def options(self, stage: StageConfig) -> dict[str, Any]:
        """What one replica reserves: its threads as CPUs, the model's GPU share, the stage's custom resources."""
        num_gpus = self.declarations[stage.name].num_gpus if self.cluster_has_gpus else 0
        return {"num_cpus": self.threads[stage.name], "num_gpus": num_gpus,
                "resources": dict(stage.resources), "max_concurrency": 1}


def ray_threads(stages: Sequence[StageConfig]) -> dict[str, int]:
    """Threads per replica, which are also the CPUs its actor reserves: the stage's `threads`, else one
    (as Ray's own actors default to), so Ray packs replicas onto nodes by their cores."""
    return {stage.name: stage.threads or 1 for stage in stages}


def check_placeable(stage: StageConfig, options: Mapping[str, Any], nodes: Sequence[Mapping[str, float]]) -> None:
    """Fail now, naming the stage, when no node of the cluster could ever hold one replica (Ray would
    otherwise keep the actor pending, and the run would wait forever)."""
    wanted = {"CPU": options["num_cpus"], "GPU": options["num_gpus"], **options["resources"]}
    wanted = {name: amount for name, amount in wanted.items() if amount}
    if any(all(node.get(name, 0) >= amount for name, amount in wanted.items()) for node in nodes):
        return
    have = "; ".join(", ".join(f"{k}={v:g}" for k, v in sorted(node.items()) if not k.startswith("node:")
                               and "memory" not in k) for node in nodes)
    raise ConfigError(f"stage {stage.name!r}: no node of the Ray cluster has "
                      f"{', '.join(f'{k}={v:g}' for k, v in wanted.items())} for one replica (nodes: {have}); "
                      f"lower the stage's threads, num_gpus or resources, or add such a node")


def alive_nodes(ray: Any) -> list[dict[str, float]]:
    """Each alive node's total resources."""
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def ray_workers(ray: Any, stages: Mapping[str, ResolvedStage], declarations: Mapping[str, ModelDeclarations],
                user_code_dirs: tuple[Path, ...], weights_from: str | None,
                warn: Callable[[str], None]) -> tuple[RayWorkers, Resources]:
    """The factory of a run's Ray-hosted replicas, each checked to fit some node, and the cluster's totals
    for `replicas: auto` (Ray itself picks the node of every replica)."""
    configs = [stage.config for stage in stages.values()]
    threads = ray_threads(configs)
    totals = ray.cluster_resources()
    n_gpus = int(totals.get("GPU", 0))
    wanting = [name for name, declared in declarations.items() if declared.num_gpus > 0]
    if n_gpus == 0 and wanting:
        warn(f"stage{'s' if len(wanting) > 1 else ''} {', '.join(map(repr, wanting))} asked for GPUs but the "
             f"Ray cluster has none; {'they run' if len(wanting) > 1 else 'it runs'} on CPU, slowly")
    factory = RayWorkers({name: s.env.name for name, s in stages.items()},
                         {name: s.class_path for name, s in stages.items()}, declarations, threads,
                         {name: worker_policy(s.config) for name, s in stages.items()}, user_code_dirs, weights_from,
                         cluster_has_gpus=n_gpus > 0)
    nodes = alive_nodes(ray)
    for stage in configs:
        check_placeable(stage, factory.options(stage), nodes)
    return factory, Resources(max(1, int(totals.get("CPU", 1))), threads, n_gpus, {})
