"""A run's replicas on a Ray cluster: planned against the cluster before the run starts, then made as actors.

    stages (the media steps' too) + declarations ─▶ plan_replicas(alive nodes)
        ─▶ what each replica reserves, how many start
        ─▶ the config with those replica counts, and RayWorkers (the executor's worker factory)

RayCluster is what a run is handed to put its replicas there (the pipeline's Cluster): it joins Ray when the
run asks, opens the run's inputs in a task on a node, and plans and makes the replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.declarations import ModelDeclarations
from orchestrator.errors import PipelineError
from orchestrator.on_ray.host import HostRequest
from orchestrator.on_ray.placement import StageDemand, StagePlacement, alive_nodes, plan_replicas
from orchestrator.on_ray.ray_worker import RayWorker, connect
from orchestrator.pipeline.config import PipelineConfig, StageConfig
from orchestrator.pipeline.executor import WorkerFactory
from orchestrator.pipeline.media.steps import MEDIA_MODEL
from orchestrator.pipeline.media.video import VideoInput, fingerprint, open_inputs
from orchestrator.pipeline.scaling.autoscaler import Resources
from orchestrator.pipeline.scaling.gpus import cpu_fallback_warning
from orchestrator.pipeline.stages import ResolvedStage, worker_policy
from orchestrator.supervisor.handle import ModelRef
from orchestrator.supervisor.policy import WorkerPolicy
from orchestrator.supervisor.threads import thread_environ
from workers.media.model import frame_outputs

OPEN_TIMEOUT_S = 120.0
OPEN_PER_VIDEO_S = 2.0
"""How long opening the inputs on a node may take: a base, and per video (its container read once)."""


class RayWorkers:
    """Makes a run's replicas as Ray actors: what each reserves (one placement per stage, shared by its
    replicas) and what its host needs."""

    def __init__(self, stages: Mapping[str, ResolvedStage], declarations: Mapping[str, ModelDeclarations],
                 threads: Mapping[str, int], cpus: Mapping[str, float], user_code_dirs: tuple[Path, ...],
                 weights_from: str | None = None, cluster_has_gpus: bool = True) -> None:
        """`cpus`: what one replica of each stage reserves. Without any GPU in the cluster
        (`cluster_has_gpus`), models that ask for one run on CPU, as the local executor does."""
        self.stages = stages
        self.declarations = declarations
        self.threads = threads
        self.user_code_dirs = user_code_dirs
        self.weights_from = weights_from
        self.policies: dict[str, WorkerPolicy] = {name: worker_policy(s.config) for name, s in stages.items()}
        self.placements = {
            name: StagePlacement(name, {"num_cpus": cpus[name],
                                        "num_gpus": declarations[name].num_gpus if cluster_has_gpus else 0,
                                        "resources": dict(s.config.resources), "max_concurrency": 1})
            for name, s in stages.items()}

    def make(self, stage: StageConfig, replica: int) -> RayWorker:
        resolved = self.stages[stage.name]
        media = resolved.class_path == MEDIA_MODEL  # reads its videos on its node, hands frames on as refs
        request = HostRequest(f"{stage.name}/{replica}", resolved.env.name,
                              ModelRef(resolved.class_path, stage.params), self.declarations[stage.name],
                              self.user_code_dirs, thread_environ(self.threads[stage.name]), {"input": stage.input},
                              self.policies[stage.name], self.weights_from, media=media)
        return RayWorker(request, self.placements[stage.name], self.policies[stage.name].max_in_flight,
                         frame_outputs=frame_outputs if media else None)


def ray_threads(stages: Sequence[StageConfig]) -> dict[str, int]:
    """Threads per replica: the stage's `threads`, else one (as Ray's own actors default to)."""
    return {stage.name: stage.threads or 1 for stage in stages}


def ray_workers(ray: Any, config: PipelineConfig, stages: Mapping[str, ResolvedStage],
                declarations: Mapping[str, ModelDeclarations], user_code_dirs: tuple[Path, ...],
                weights_from: str | None,
                warn: Callable[[str], None]) -> tuple[RayWorkers, Resources, PipelineConfig]:
    """The factory of a run's Ray-hosted replicas, the cluster's totals for `replicas: auto`, and the config
    with the replicas the cluster holds at once (one of every stage first; ConfigError, in one line, when
    not even that fits)."""
    configs = [stage.config for stage in stages.values()]
    threads = ray_threads(configs)
    totals = ray.cluster_resources()
    n_gpus = int(totals.get("GPU", 0))
    demanded = [(name, declared.num_gpus) for name, declared in declarations.items()]
    models = {name: stage.class_path for name, stage in stages.items()}
    if n_gpus == 0 and (line := cpu_fallback_warning(demanded, models, "the Ray cluster has no GPU")):
        warn(line)
    demands = [StageDemand(s.name, s.start_replicas, threads[s.name], s.threads is not None,
                           declarations[s.name].num_gpus if n_gpus else 0.0, s.resources) for s in configs]
    plan = plan_replicas(demands, alive_nodes(ray))
    for note in plan.notes:
        warn(note)
    factory = RayWorkers(stages, declarations, threads, plan.cpus, user_code_dirs, weights_from, n_gpus > 0)
    planned = [s.model_copy(update={"replicas": plan.replicas[s.name]})
               if s.name in plan.replicas and not s.auto_replicas else s for s in config.stages]
    media = config.media
    if media.replicas != "auto" and (steps := [plan.replicas[n] for n, s in stages.items()
                                               if s.class_path == MEDIA_MODEL]):
        media = media.model_copy(update={"replicas": min(steps)})  # the media steps share one setting
    return (factory, Resources(max(1, int(totals.get("CPU", 1))), threads, n_gpus, {}),
            config.model_copy(update={"stages": planned, "media": media}))


class RayCluster:
    """The Ray executor as the pipeline sees it (orchestrator.pipeline.stages.Cluster): joins the cluster at
    `address` when the run asks, then plans and makes the run's replicas there; nodes lacking a model's
    weights fetch them from `weights_from`."""

    def __init__(self, address: str | None, weights_from: str | None = None) -> None:
        self.address = address
        self.weights_from = weights_from
        self._ray: Any = None
        self._opener: Any = None

    def join(self) -> None:
        if self._ray is None:
            self._ray = connect(self.address)

    def open_inputs(self, videos: list[VideoInput], cache: Path | None = None,
                    ) -> tuple[list[VideoInput], list[tuple[VideoInput, str]]]:
        """The inputs opened (their containers read) by a task on a node of the cluster: the driver opens no
        video. A local file's fingerprint is taken again here, by stat alone: the run checks it here at the
        end, and another host's mount may give the same file another inode or path."""
        self.join()
        if self._opener is None:  # made once: the run opens its inputs a batch at a time
            self._opener = self._ray.remote(num_cpus=0, max_retries=1)(open_inputs)
        try:
            readable, unreadable = self._ray.get(self._opener.remote(videos, cache),
                                                 timeout=OPEN_TIMEOUT_S + OPEN_PER_VIDEO_S * len(videos))
        except Exception as exc:  # the task's node was lost, or the cluster is too busy to run it
            raise PipelineError(f"could not open the inputs on the Ray cluster ({type(exc).__name__}: "
                                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                                f"check the cluster and rerun") from None
        here: list[VideoInput] = []
        for video in readable:
            try:
                marks = video.fingerprint if isinstance(video.path, str) else fingerprint(video.path)
                here.append(replace(video, fingerprint=marks))
            except OSError as exc:
                unreadable.append((video, f"{video.path}: not readable on the driver ({exc.strerror or exc})"))
        return here, unreadable

    def replicas(self, config: PipelineConfig, stages: Mapping[str, ResolvedStage],
                 declarations: Mapping[str, ModelDeclarations], user_code_dirs: tuple[Path, ...],
                 warn: Callable[[str], None]) -> tuple[WorkerFactory, Resources, PipelineConfig]:
        self.join()
        factory, resources, planned = ray_workers(self._ray, config, stages, declarations, user_code_dirs,
                                                  self.weights_from, warn)
        return factory.make, resources, planned
