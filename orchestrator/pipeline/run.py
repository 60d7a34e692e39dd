"""`orchestrator run`: open the inputs, resolve the config into stages and envs, describe each model in its
env, check weights, place replicas on GPUs, then (only then) write into the output folder, execute, summarise.

    output lock ─▶ inputs opened ─▶ env per stage ─▶ first worker per stage (no GPU) ─▶ DESCRIBE ─▶ declarations
        local: ─▶ weights present? ─▶ GPU shares ─▶ writer ─▶ PipelineExecutor with local workers (adopting each
                  first worker whose place fits)
        ray:   ─▶ writer ─▶ PipelineExecutor with Ray-hosted workers (each node checks its env and weights)

With `--redo-stage NAME` the videos are the folder's finished ones and only NAME's workers start; the executor
runs NAME (and the filters on its fields) over the clips the folder keeps (pipeline/redo.py).

Everything before the writer only reads, so a run that fails or is interrupted there leaves the output folder
as it was; the lock (taken first when the folder exists) keeps a second run out of it throughout.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.dataset.dedup_writer import DedupingWriter
from orchestrator.dataset.provenance import Provenance, stage_provenance
from orchestrator.dataset.shards import write_shards
from orchestrator.dataset.table import TableSpec
from orchestrator.declarations import ModelDeclarations
from orchestrator.describe import DescribeFailure, DescribeRequest, env_names
from orchestrator.envs import Env, EnvRegistry
from orchestrator.errors import (
    ConfigError,
    HandshakeTimeout,
    OrchestratorError,
    PipelineError,
    RunStopped,
    WorkerDied,
    WorkerError,
)
from orchestrator.model_source import absolute_class_path
from orchestrator.pipeline.autoscaler import Resources
from orchestrator.pipeline.config import PipelineConfig, StageConfig
from orchestrator.pipeline.executor import PipelineExecutor, RunState, WorkerFactory
from orchestrator.pipeline.gpus import GpuAssignment, cpu_fallback_warning, detect_gpu_count, pack_replicas
from orchestrator.pipeline.output_lock import OutputLock
from orchestrator.pipeline.parts import count_kept
from orchestrator.pipeline.redo import RedoPlan, RedoSource, check_no_unfinished_redo, plan_redo
from orchestrator.pipeline.summary import Failure, RunSummary
from orchestrator.pipeline.video import VIDEO_SUFFIXES, VideoInput, expand_inputs, open_inputs
from orchestrator.pipeline.writer import OutputWriter, check_results_key
from orchestrator.sample_video import BUNDLED_SAMPLE, ensure_bundled_sample
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.output import LogSink
from orchestrator.supervisor.policy import STOP_AT_ONCE, WorkerPolicy
from orchestrator.supervisor.runtime_dir import make_runtime_dir
from orchestrator.supervisor.shutdown import close_all
from orchestrator.supervisor.threads import available_cores, default_budgets, thread_environ
from orchestrator.weights.preflight import check_weights_present

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


class _Workers:
    """Makes the worker handles of a run: one spec per (stage, replica), all in one private runtime folder."""

    def __init__(self, stages: dict[str, ResolvedStage], config_dir: Path, runtime_dir: Path, on_log: LogSink):
        self.stages = stages
        self.user_dirs = (config_dir, Path.cwd())
        self.runtime_dir = runtime_dir
        self.on_log = on_log
        self.gpu_of: dict[tuple[str, int], GpuAssignment] = {}
        self.cores = available_cores()
        # every replica a stage may run shares the cores, so an `auto` stage that grows never oversubscribes them
        budgets = default_budgets(self.cores, {name: s.config.most_replicas for name, s in stages.items()})
        self.threads = {name: s.config.threads or budgets[name] for name, s in stages.items()}

    def make(self, stage: StageConfig, replica: int) -> WorkerHandle:
        resolved = self.stages[stage.name]
        placement = self.gpu_of.get((stage.name, replica), NO_GPU)
        environ = {**placement.environ(), **thread_environ(self.threads[stage.name])}
        spec = WorkerSpec(f"{stage.name}/{replica}", resolved.env, ModelRef(resolved.class_path, stage.params),
                          self.user_dirs, environ, {"input": stage.input})
        return WorkerHandle(spec, self.runtime_dir, worker_policy(stage), on_log=self.on_log)


def describe_stages(stages: dict[str, ResolvedStage], workers: _Workers) -> dict[str, WorkerHandle]:
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


@dataclass
class Prepared:
    """A run ready to execute: its config (as the executor runs it), what each stage's model declared, and how
    its replicas are made."""

    config: PipelineConfig
    declarations: dict[str, ModelDeclarations]
    make: WorkerFactory
    adopt: dict[str, dict[int, WorkerHandle]]
    resources: Resources


def execute(config: PipelineConfig, config_dir: Path, *, gpus: int | None, on_log: LogSink,
            warn: Callable[[str], None], display: Callable[[RunState], Any] | None = None,
            fresh: bool = False, ray_address: str | None = None, on_ray: bool = False,
            weights_from: str | None = None, redo_stage: str | None = None) -> RunSummary:
    """Run the pipeline, here or (`on_ray`) with every replica on a Ray cluster; returns the run summary
    (also written to run.json). `redo_stage` reruns that stage over the output folder's clips instead (see
    orchestrator.pipeline.redo). Raises RunStopped when interrupted or stopped by an error once running."""
    out_dir = config_dir / config.output
    lock = OutputLock(out_dir)
    videos: list[VideoInput] = []
    try:
        if out_dir.exists():
            lock.acquire()  # a second run into a folder in use is refused before it does anything
        redo = plan_redo(out_dir, config, redo_stage) if redo_stage else None
        videos, failures, found, unreadable = redo.inputs() if redo else open_videos(config, config_dir, warn)
        state = RunState(videos_total=found, failures=failures)
        registry = EnvRegistry()
        stages = resolve_stages(config, config_dir, registry, only=redo_stage)
        if not fresh and redo is None:
            check_results_key(out_dir, config.results_key())  # after the config's own errors, before any worker
            check_no_unfinished_redo(out_dir)
        ray = _connect_ray(ray_address) if on_ray else None  # once the cheap checks have passed
        runtime_dir = make_runtime_dir()
        workers = _Workers(stages, config_dir, runtime_dir, on_log)
        firsts: dict[str, WorkerHandle] = {}
        try:
            with registry.leased(stage.env for stage in stages.values()):  # `envs gc` spares them until the end
                firsts = describe_stages(stages, workers)
                prepared = _prepare(config.streaming, stages, firsts, workers, ray, gpus, weights_from, warn)
                lock.acquire()
                made_by = run_provenance(stages, prepared.declarations, registry)
                table = table_spec(config, prepared.declarations, None if redo else made_by)
                if redo is not None:
                    redo.check_outputs(table.outputs[redo.stage.name])
                writer = DedupingWriter(out_dir, redo.recorded_key if redo else config.results_key(), videos,
                                        fresh, table, dedup=config.dedup_stages, unreadable=unreadable)
                source = redo.source(writer, prepared.config, made_by.stages[redo.stage.name]) if redo else None
                return _run(videos, writer, prepared, state, display, warn, source)
        finally:
            close_all(list(firsts.values()), STOP_AT_ONCE)
            shutil.rmtree(runtime_dir, ignore_errors=True)
    except KeyboardInterrupt:
        raise RunStopped(None, count_kept(out_dir, videos), len(videos), out_dir) from None
    finally:
        lock.release()


def run_provenance(stages: dict[str, ResolvedStage], declarations: dict[str, ModelDeclarations],
                   registry: EnvRegistry) -> Provenance:
    """What made each model stage's results: its env's lock, its weights as cached here, its params."""
    return Provenance({name: stage_provenance(s.class_path, registry.spec(s.env.name),
                                              declarations[name].weights_names, s.config.params)
                       for name, s in stages.items()})


def table_spec(config: PipelineConfig, declarations: dict[str, ModelDeclarations],
               provenance: Provenance | None) -> TableSpec:
    """What the clip table knows of the run: each clip stage's declared outputs, and the provenance its rows
    name (None for a redo, whose rows each name their earlier record with the redone stage's entry)."""
    # a redo describes only the stage it redoes: the others' types are the ones the table recorded
    return TableSpec({s.name: declarations[s.name].outputs if s.name in declarations else None
                      for s in config.stages if s.model}, provenance)


def open_videos(config: PipelineConfig, config_dir: Path, warn: Callable[[str], None]) -> tuple[
        list[VideoInput], list[Failure], int, list[tuple[VideoInput, str]]]:
    """The readable input videos, each opened once (fingerprinted) before any worker starts, a failure for each
    input that cannot be read (also warned of at once), how many video files were found, and the video files
    that cannot be read, with why (the run records a row for each). No readable video at all is a ConfigError."""
    if ensure_bundled_sample([config_dir / i for i in config.inputs]):
        warn(f"generated the bundled sample video {BUNDLED_SAMPLE} (python -m orchestrator.sample_video makes it)")
    found, missing = expand_inputs(config.inputs, config_dir)
    videos, unreadable = open_inputs(found)
    failures = [Failure(pattern, reason) for pattern, reason in missing]
    failures += [Failure(str(video.path), reason) for video, reason in unreadable]
    if not videos:
        if not failures:
            raise ConfigError(f"no video in the inputs {', '.join(config.inputs)} (looked for files ending in "
                              f"{', '.join(sorted(VIDEO_SUFFIXES))}); check inputs: or --input")
        shown = "; ".join(f.line() for f in failures[:3]) + (f"; and {len(failures) - 3} more" if failures[3:] else "")
        raise ConfigError(f"no readable video in the inputs: {shown}")
    for failure in failures:
        warn(f"skipped {failure.line()}")
    return videos, failures, len(found), unreadable


def _prepare(config: PipelineConfig, stages: dict[str, ResolvedStage], firsts: dict[str, WorkerHandle],
             workers: _Workers, ray: Any, gpus: int | None, weights_from: str | None,
             warn: Callable[[str], None]) -> Prepared:
    """Read each model's declarations; locally, check its weights and place replicas on GPUs (adopting each
    first worker whose place fits); on Ray, hand replicas to the cluster."""
    declarations = {name: _declarations(stages[name], handle) for name, handle in firsts.items()}
    if ray is not None:
        from orchestrator.on_ray.replicas import ray_workers

        close_all(list(firsts.values()), STOP_AT_ONCE)  # replicas live on the cluster's nodes
        factory, resources, config = ray_workers(ray, config, stages, declarations, workers.user_dirs,
                                                 weights_from, warn)
        return Prepared(config, declarations, factory.make, {}, resources)
    check_weights_present(list(declarations.values()))
    n_gpus = detect_gpu_count() if gpus is None else gpus
    workers.gpu_of = assign_gpus(stages, declarations, n_gpus, warn)
    adopt = {name: {0: h} for name, h in firsts.items() if workers.gpu_of[(name, 0)] == NO_GPU}
    close_all([h for name, h in firsts.items() if name not in adopt], STOP_AT_ONCE)
    return Prepared(config, declarations, workers.make, adopt,
                    Resources(workers.cores, workers.threads, n_gpus, workers.gpu_of))


def _run(videos: list[VideoInput], writer: DedupingWriter, prepared: Prepared, state: RunState,
         display: Callable[[RunState], Any] | None, warn: Callable[[str], None],
         redo: RedoSource | None) -> RunSummary:
    """Execute with the writer (which dedups after each batch of videos; for a redo, with the clips it reads
    back), dedup once more when every video is done, and record the summary however the run ends."""
    if writer.set_aside is not None:
        warn(f"--fresh: moved the earlier results to {writer.set_aside} (delete it when no longer needed)")
    state.frames_total = sum(v.frames for v in videos if writer.resumable(v) is None)
    executor = PipelineExecutor(prepared.config, videos, writer, prepared.make, state, prepared.declarations,
                                prepared.adopt, prepared.resources, redo)
    stopped: RunStopped | None = None
    try:
        executor.run(on_tick=(lambda: display(state)) if display else lambda: None)
        writer.finish_dedup()
        state.kept = writer.kept_clips()
    except KeyboardInterrupt:
        state.failures.append(Failure("", "interrupted (Ctrl-C): finished videos were kept"))
        stopped = RunStopped(None, 0, len(videos), writer.out_dir)
    except Exception as exc:  # the step's error (PipelineError) or any other: the summary is recorded anyway
        state.failures.append(Failure("", f"the run stopped: {exc}"))
        stopped = RunStopped(exc, 0, len(videos), writer.out_dir)
    summary = _summary(state, time.monotonic() - state.started)
    try:
        writer.finish_run(summary, completed=stopped is None)
        if stopped is None:
            _after_run(writer, prepared.config, redo.plan if redo else None, warn)
    except PipelineError as exc:
        stopped = stopped or RunStopped(exc, 0, len(videos), writer.out_dir)
    if stopped is not None:
        raise replace(stopped, kept=writer.kept())
    return summary


def _after_run(writer: OutputWriter, config: PipelineConfig, redo: RedoPlan | None,
               warn: Callable[[str], None]) -> None:
    """Once every video is through: a redo records its new results (or says what is left), then the shards
    are written from the final rows (after dedup)."""
    if redo is not None and (left := redo.finish(writer)):
        warn(left)
    if config.shards is not None:
        write_shards(writer.out_dir, config.shards.max_bytes)


def _connect_ray(address: str | None) -> Any:
    """Ray, joined to the cluster at `address`; imported only for Ray runs (it is an optional extra)."""
    from orchestrator.on_ray.ray_worker import connect

    return connect(address)


def _declarations(stage: ResolvedStage, handle: WorkerHandle) -> ModelDeclarations:
    """What the stage's model declared in its env, which must be the env it was started in."""
    declared = ModelDeclarations.from_dict(handle.declarations or {})
    if declared.conda_env_name != stage.env.name:
        raise ConfigError(f"stage {stage.config.name!r}: model {stage.class_path!r} declares conda_env_name "
                          f"{declared.conda_env_name!r} but was started in env {stage.env.name!r}"
                          f"{' (the stage says env: ' + repr(stage.config.env) + ')' if stage.config.env else ''}; "
                          f"make them agree")
    return declared


def _summary(state: RunState, wall_s: float) -> RunSummary:
    return RunSummary(videos=state.videos_total, videos_done=state.videos_done, resumed=state.resumed,
                      clips=state.clips, kept=state.kept, failures=state.failures,
                      stages={n: s.summary() for n, s in state.stages.items()}, wall_s=round(wall_s, 3),
                      autoscale=state.autoscale, warnings=state.warnings, timeline=state.timeline)
