"""`orchestrator run`: resolve the config into stages, envs and GPU shares, check weights, execute, summarise."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.model_interface import ModelInterface
from orchestrator.envs import Env, EnvRegistry
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.pipeline.config import PipelineConfig, StageConfig
from orchestrator.pipeline.executor import LocalExecutor, RunState
from orchestrator.pipeline.gpus import GpuAssignment, cpu_fallback_warning, detect_gpu_count, pack_replicas
from orchestrator.pipeline.video import expand_inputs
from orchestrator.pipeline.writer import OutputWriter
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.launch import make_runtime_dir
from orchestrator.supervisor.output import LogSink
from workers.model_loader import ModelLoadError, instantiate


@dataclass(frozen=True)
class ResolvedStage:
    """A model stage with what the parent learnt from its class: env and GPU demand."""

    config: StageConfig
    model: ModelInterface
    env: Env


def resolve_stages(config: PipelineConfig, config_dir: Path, registry: EnvRegistry) -> dict[str, ResolvedStage]:
    """Instantiate each stage's class in the parent (guarded imports only) and build/find its env."""
    resolved = {}
    for stage in config.stages:
        if stage.class_path is None:
            continue
        sys.path.insert(0, str(config_dir))
        try:
            model = instantiate(stage.class_path, dict(stage.params))
        except ModelLoadError as exc:
            raise ConfigError(f"stage {stage.name!r}: {exc}") from None
        finally:
            sys.path.remove(str(config_dir))
        try:
            env = registry.ensure(model.conda_env_name)
        except OrchestratorError as exc:
            raise ConfigError(f"stage {stage.name!r} (env {model.conda_env_name!r}): {exc}") from None
        resolved[stage.name] = ResolvedStage(stage, model, env)
    return resolved


def assign_gpus(stages: dict[str, ResolvedStage], n_gpus: int,
                warn: Callable[[str], None]) -> dict[tuple[str, int], GpuAssignment]:
    """The GPU share of each (stage, replica)."""
    replicas = [(name, i) for name, s in stages.items() for i in range(s.config.replicas)]
    demands = [(f"{name}/{i}", stages[name].model.num_gpus) for name, i in replicas]
    if n_gpus == 0 and (line := cpu_fallback_warning(demands)):
        warn(line)
    return dict(zip(replicas, pack_replicas(demands, n_gpus), strict=True))


def execute(config: PipelineConfig, config_dir: Path, *, gpus: int | None, on_log: LogSink,
            warn: Callable[[str], None], display: Callable[[RunState], Any] | None = None) -> dict[str, Any]:
    """Run the pipeline; returns the run summary (also written to run.json)."""
    started = time.monotonic()
    out_dir = config_dir / config.output
    writer = OutputWriter(out_dir)
    videos, missing = expand_inputs(config.inputs, config_dir)
    stages = resolve_stages(config, config_dir, EnvRegistry())
    _check_weights([s.model for s in stages.values()])
    gpu_of = assign_gpus(stages, detect_gpu_count() if gpus is None else gpus, warn)
    runtime_dir = make_runtime_dir()
    user_dirs = (config_dir, Path.cwd())

    def make_handle(stage: StageConfig, replica: int) -> WorkerHandle:
        resolved = stages[stage.name]
        spec = WorkerSpec(f"{stage.name}/{replica}", resolved.env, ModelRef(stage.class_path or "", stage.params),
                          user_dirs, gpu_of[(stage.name, replica)].environ())
        return WorkerHandle(spec, runtime_dir, on_log=on_log)

    state = RunState(videos_total=len(videos))
    state.failures += [{"video": pattern, "reason": reason} for pattern, reason in missing]
    executor = LocalExecutor(config, videos, writer, make_handle, state)
    try:
        executor.run(on_tick=(lambda: display(state)) if display else lambda: None)
    except KeyboardInterrupt:
        state.failures.append({"video": "", "reason": "interrupted (Ctrl-C): finished videos were kept"})
        raise
    finally:
        summary = _summary(state, time.monotonic() - started)
        writer.write_summary(summary)
        shutil.rmtree(runtime_dir, ignore_errors=True)
    return summary


def _check_weights(models: list[ModelInterface]) -> None:
    from orchestrator.weights.preflight import check_weights_present

    check_weights_present(models)


def _summary(state: RunState, wall_s: float) -> dict[str, Any]:
    return {
        "videos": state.videos_total, "videos_done": state.videos_done, "clips": state.clips, "kept": state.kept,
        "failures": state.failures, "stages": {n: s.summary() for n, s in state.stages.items()},
        "wall_s": round(wall_s, 3),
    }
