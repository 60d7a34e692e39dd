"""A run's model stages and how their workers are made: each stage resolved to its model and env, the local
worker factory (one spec per replica, GPU shares and thread budgets applied), and the Cluster a run may hand
its replicas to instead.

    config ─▶ resolve_stages ─▶ ResolvedStage per model stage ─▶ describe_stages (first workers, no GPU)
        local:   LocalWorkers.make(stage, replica) ─▶ WorkerHandle          (assign_gpus places them)
        cluster: Cluster.replicas(...) ─▶ its own worker factory             (orchestrator.on_ray: Ray)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator.declarations import ModelDeclarations
from orchestrator.describe import DescribeFailure, DescribeRequest, env_names
from orchestrator.envs import Env, EnvRegistry
from orchestrator.errors import ConfigError, HandshakeTimeout, OrchestratorError, PipelineError, WorkerDied, WorkerError
from orchestrator.model_source import absolute_class_path
from orchestrator.pipeline.config import PipelineConfig, StageConfig
from orchestrator.pipeline.executor import WorkerFactory
from orchestrator.pipeline.media.steps import MEDIA_MODEL, media_env, media_stages
from orchestrator.pipeline.media.video import VideoInput
from orchestrator.pipeline.scaling.autoscaler import Resources
from orchestrator.pipeline.scaling.gpus import GpuAssignment, cpu_fallback_warning, pack_replicas
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.output import LogSink
from orchestrator.supervisor.policy import STOP_AT_ONCE, WorkerPolicy
from orchestrator.supervisor.shutdown import close_all
from orchestrator.supervisor.threads import available_cores, default_budgets, thread_environ
from orchestrator.supervisor.worker_variables import storage_environ

NO_GPU = GpuAssignment(())


@dataclass(frozen=True)
class ResolvedStage:
    """A model stage with its class path (file paths made absolute) and the env it runs in."""

    config: StageConfig
    class_path: str
    env: Env


def resolve_stages(config: PipelineConfig, config_dir: Path, registry: EnvRegistry,
                   only: str | None = None) -> dict[str, ResolvedStage]:
    """Each model stage's env (named by the stage, read from the model's source, or read by a child of this
    interpreter), built or found; this process never imports a model. `only`: that stage alone."""
    search_dirs = (config_dir, Path.cwd())
    stages = [s for s in config.stages if s.class_path and only in (None, s.name)]
    requests = [DescribeRequest(absolute_class_path(s.class_path or "", config_dir), s.params, s.env) for s in stages]
    resolved = {}
    for stage, request, name in zip(stages, requests, env_names(requests, search_dirs), strict=True):
        if isinstance(name, DescribeFailure):
            raise ConfigError(f"stage {stage.name!r}: {name.explain(request, search_dirs)}")
        try:
            env = registry.ensure(name)
        except OrchestratorError as exc:
            raise ConfigError(f"stage {stage.name!r} (env {name!r}): {exc}") from None
        resolved[stage.name] = ResolvedStage(stage, request.class_path, env)
    return resolved


def assign_gpus(stages: dict[str, ResolvedStage], declarations: dict[str, ModelDeclarations], n_gpus: int,
                warn: Callable[[str], None]) -> dict[tuple[str, int], GpuAssignment]:
    """The GPU share of each (stage, replica), from the `num_gpus` each model declared in its env."""
    replicas = [(name, i) for name, s in stages.items() for i in range(s.config.start_replicas)]
    demands = [(name, declarations[name].num_gpus) for name, _ in replicas]
    if n_gpus == 0 and (line := cpu_fallback_warning(demands, {n: s.class_path for n, s in stages.items()})):
        warn(line)
    return dict(zip(replicas, pack_replicas(demands, n_gpus), strict=True))


def worker_policy(stage: StageConfig) -> WorkerPolicy:
    """A stage's deadlines: a request it hangs on, and heartbeats it must answer, idle or busy."""
    return WorkerPolicy(request_timeout_s=stage.request_timeout_s, heartbeat_timeout_s=stage.heartbeat_timeout_s,
                        heartbeat_interval_s=stage.heartbeat_timeout_s / 2)


class LocalWorkers:
    """Makes the worker handles of a run: one spec per (stage, replica), all in one private runtime folder."""

    def __init__(self, stages: dict[str, ResolvedStage], config_dir: Path, runtime_dir: Path, on_log: LogSink,
                 media: dict[str, ResolvedStage] | None = None, frames_dir: Path | None = None):
        """`media`: the run's media steps (a cluster makes them on its nodes instead); `frames_dir`: the run's frames
        folder, which every worker may read shared frames from."""
        self.media = media or {}
        self.stages = {**stages, **self.media}
        self.user_dirs = (config_dir, Path.cwd())
        self.runtime_dir = runtime_dir
        self.on_log = on_log
        self.frames_dir = frames_dir
        self.gpu_of: dict[tuple[str, int], GpuAssignment] = {}
        self.cores = available_cores()
        # every replica a stage may run shares the cores, so an `auto` stage that grows never oversubscribes them
        budgets = default_budgets(self.cores, {name: s.config.most_replicas for name, s in self.stages.items()})
        self.threads = {name: s.config.threads or budgets[name] for name, s in self.stages.items()}

    def make(self, stage: StageConfig, replica: int) -> WorkerHandle:
        resolved = self.stages[stage.name]
        placement = self.gpu_of.get((stage.name, replica), NO_GPU)
        environ = {**placement.environ(), **thread_environ(self.threads[stage.name])}
        if stage.name in self.media:
            environ.update(storage_environ(os.environ))  # it reads s3:// inputs; a model worker never gets these
            if stage.params.get("hardware"):
                environ.pop("CUDA_VISIBLE_DEVICES", None)  # NVDEC/NVENC on the GPUs the run sees, beside the models
        spec = WorkerSpec(f"{stage.name}/{replica}", resolved.env, ModelRef(resolved.class_path, stage.params),
                          self.user_dirs, environ, {"input": stage.input}, self.frames_dir)
        return WorkerHandle(spec, self.runtime_dir, worker_policy(stage), on_log=self.on_log)


def resolve_media(config: PipelineConfig, frames_dir: Path) -> dict[str, ResolvedStage]:
    """The run's media steps, each run by the media worker in this process's own environment."""
    env = media_env()
    return {stage.name: ResolvedStage(stage, MEDIA_MODEL, env) for stage in media_stages(config, frames_dir)}


def describe_stages(stages: dict[str, ResolvedStage], workers: LocalWorkers) -> dict[str, WorkerHandle]:
    """Start each stage's first worker without a GPU and have it describe its model inside its env; the
    workers are returned waiting for setup. A worker that dies while describing is replaced, within the
    stage's restart budget; a model that does not import there stops the run with the reason."""
    firsts: dict[str, WorkerHandle] = {}
    try:
        for name, stage in stages.items():
            firsts[name] = workers.make(stage.config, 0)
            firsts[name].launch()
        for name, stage in stages.items():
            for attempt in range(stage.config.max_restarts + 1):
                try:
                    firsts[name].read_declarations()
                    break
                except WorkerError as exc:
                    raise ConfigError(f"stage {name!r}: {exc}") from None
                except (WorkerDied, HandshakeTimeout) as exc:
                    firsts[name].release()
                    if attempt == stage.config.max_restarts:
                        raise PipelineError(f"stage {name!r}: {exc}") from None
                    firsts[name] = workers.make(stage.config, 0)
                    firsts[name].launch()
    except BaseException:
        close_all(list(firsts.values()), STOP_AT_ONCE)
        raise
    return firsts


class Cluster(Protocol):
    """Machines a run hands its replicas to instead of this one (orchestrator.on_ray implements it for Ray).
    The pipeline only asks; it never imports the executor behind it."""

    def join(self) -> None:
        """Connect to the cluster; called before the run opens its inputs (a node of the cluster opens them) and
        before any worker starts."""

    def open_inputs(self, videos: list[VideoInput], cache: Path | None = None,
                    ) -> tuple[list[VideoInput], list[tuple[VideoInput, str]]]:
        """`open_inputs` on a node of the cluster (joining it first), so this process opens no video; `cache`
        (--cache-inputs) must be a folder every node sees at the same path."""

    def replicas(self, config: PipelineConfig, stages: Mapping[str, ResolvedStage],
                 declarations: Mapping[str, ModelDeclarations], user_code_dirs: tuple[Path, ...],
                 warn: Callable[[str], None]) -> tuple[WorkerFactory, Resources, PipelineConfig]:
        """The factory of the run's replicas on the cluster, its totals for `replicas: auto`, and the config
        with the replica counts the cluster holds at once; `stages` include the media steps, whose replicas
        read the videos on their nodes and hand their frames on as the cluster's own references."""
