"""`orchestrator run`: open the inputs, resolve the config into stages and envs, describe each model in its
env, check weights, place replicas on GPUs, then (only then) write into the output folder, execute, summarise.

    output lock ─▶ first input opened ─▶ env per stage ─▶ first worker per stage (no GPU) ─▶ DESCRIBE ─▶ declarations
        local: ─▶ weights present? ─▶ GPU shares ─▶ writer ─▶ PipelineExecutor with local workers (adopting each
                  first worker whose place fits)
        cluster: ─▶ writer ─▶ PipelineExecutor with the cluster's workers (on Ray each node checks its env
                    and weights)

The inputs are found and opened while the run works (orchestrator/pipeline/media/feed.py): the run waits
only for the first readable one, so a bucket of 10,000 keys starts its first video before its listing ends.

With `--redo-stage NAME` the videos are the folder's finished ones and only NAME's workers start; the executor
runs NAME (and the filters on its fields) over the clips the folder keeps (pipeline/output/redo.py).

Everything before the writer only reads, so a run that fails or is interrupted there leaves the output folder
as it was; the lock (taken first when the folder exists) keeps a second run out of it throughout.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from orchestrator.dataset.dedup_writer import DedupingWriter
from orchestrator.dataset.provenance import Provenance, stage_provenance
from orchestrator.dataset.shards import write_shards
from orchestrator.dataset.table import TableSpec
from orchestrator.declarations import ModelDeclarations
from orchestrator.envs import EnvRegistry
from orchestrator.errors import (
    ConfigError,
    PipelineError,
    RunStopped,
)
from orchestrator.pipeline.config import PipelineConfig
from orchestrator.pipeline.executor import PipelineExecutor, RunState, WorkerFactory
from orchestrator.pipeline.media.feed import InputFeed
from orchestrator.pipeline.media.hardware import use_hardware
from orchestrator.pipeline.media.steps import MEDIA_DECLARATIONS
from orchestrator.pipeline.media.video import VIDEO_SUFFIXES, VideoInput, find_inputs, open_inputs
from orchestrator.pipeline.output.bucket import BucketFolder
from orchestrator.pipeline.output.bucket_lock import BucketOutputLock
from orchestrator.pipeline.output.lock import OutputLock
from orchestrator.pipeline.output.parts import count_kept
from orchestrator.pipeline.output.redo import RedoPlan, RedoSource, check_no_unfinished_redo, plan_redo
from orchestrator.pipeline.output.writer import OutputWriter, check_results_key
from orchestrator.pipeline.scaling.autoscaler import Resources
from orchestrator.pipeline.scaling.gpus import detect_gpu_count
from orchestrator.pipeline.stages import (
    NO_GPU,
    Cluster,
    LocalWorkers,
    ResolvedStage,
    assign_gpus,
    describe_stages,
    resolve_media,
    resolve_stages,
)
from orchestrator.pipeline.summary import Failure, RunSummary
from orchestrator.sample_video import BUNDLED_SAMPLE, ensure_bundled_sample
from orchestrator.supervisor.handle import WorkerHandle
from orchestrator.supervisor.output import LogSink
from orchestrator.supervisor.policy import STOP_AT_ONCE
from orchestrator.supervisor.runtime_dir import make_runtime_dir
from orchestrator.supervisor.shutdown import close_all
from orchestrator.weights.preflight import check_weights_present
from workers.media.s3 import ObjectError, is_s3
from workers.shared_frames import SharedFramesDir


@dataclass
class Prepared:
    """A run ready to execute: its config (as the executor runs it), what each stage's model declared, and how
    its replicas are made."""

    config: PipelineConfig
    declarations: dict[str, ModelDeclarations]
    make: WorkerFactory
    adopt: dict[str, dict[int, WorkerHandle]]
    resources: Resources
    hardware: bool = False
    """Media workers decode and encode on the GPU's video engines."""


def execute(config: PipelineConfig, config_dir: Path, *, gpus: int | None, on_log: LogSink,
            warn: Callable[[str], None], display: Callable[[RunState], Any] | None = None,
            fresh: bool = False, cluster: Cluster | None = None, redo_stage: str | None = None,
            cache_inputs: Path | None = None) -> RunSummary:
    """Run the pipeline, here or with every replica on `cluster` (the Ray executor); returns the run summary
    (also written to run.json). `redo_stage` reruns that stage over the output folder's clips instead (see
    orchestrator.pipeline.output.redo). `cache_inputs`: a folder each s3:// input is copied into whole, once per
    version, and read from. Raises RunStopped when interrupted or stopped by an error once running."""
    bucket = BucketFolder(config.output) if is_s3(config.output) else None
    out_dir = bucket.local if bucket is not None else config_dir / config.output
    shown = bucket.url if bucket is not None else out_dir  # the folder as the user named it, for messages
    lock: OutputLock | BucketOutputLock = BucketOutputLock(bucket) if bucket is not None else OutputLock(out_dir)
    feed: InputFeed | None = None
    try:
        if bucket is not None:
            _check_bucket_output(config, redo_stage)
            lock.acquire()  # the lock object is the only thing a run that fails early leaves, and it removes it
            with _store_errors():
                bucket.pull()
        elif out_dir.exists():
            lock.acquire()  # a second run into a folder in use is refused before it does anything
        redo = plan_redo(out_dir, config, redo_stage) if redo_stage else None
        if cluster is not None:
            cluster.join()  # a node of it opens the inputs: the driver opens no video
        state = RunState(videos_total=0)
        if redo is not None:
            feed = InputFeed.opened(redo.videos(), state.inputs_found)
        else:
            open_batch = cluster.open_inputs if cluster is not None else open_inputs
            feed = InputFeed(_find_inputs(config, config_dir, warn), partial(open_batch, cache=cache_inputs), warn,
                             state.failures, state.inputs_found).start()
            _wait_first_video(config, feed)
        registry = EnvRegistry()
        stages = resolve_stages(config, config_dir, registry, only=redo_stage)
        if not fresh and redo is None:
            # after the config's own errors, before any worker
            check_results_key(out_dir, config.results_key(), str(shown))
            check_no_unfinished_redo(out_dir)
        runtime_dir = make_runtime_dir()
        frames = SharedFramesDir.make()
        workers = LocalWorkers(stages, config_dir, runtime_dir, on_log, resolve_media(config, frames.path),
                               frames.path)
        firsts: dict[str, WorkerHandle] = {}
        try:
            with registry.leased(stage.env for stage in stages.values()):  # `envs gc` spares them until the end
                firsts = describe_stages(stages, workers)
                prepared = _prepare(config.streaming, stages, firsts, workers, cluster, gpus, warn)
                lock.acquire()
                made_by = run_provenance(stages, prepared.declarations, registry)
                table = table_spec(config, prepared.declarations, None if redo else made_by)
                if redo is not None:
                    redo.check_outputs(table.outputs[redo.stage.name])
                writer = DedupingWriter(out_dir, redo.recorded_key if redo else config.results_key(),
                                        feed.videos, fresh, table, dedup=config.dedup_stages,
                                        unreadable=feed.unreadable, bucket=bucket)
                source = redo.source(writer, prepared.config, made_by.stages[redo.stage.name]) if redo else None
                return _run(feed, writer, prepared, state, display, warn, source, frames)
        finally:
            close_all(list(firsts.values()), STOP_AT_ONCE)
            shutil.rmtree(runtime_dir, ignore_errors=True)
            frames.remove()
    except KeyboardInterrupt:
        if feed is None:
            raise RunStopped(None, 0, 0, shown) from None
        kept = count_kept(out_dir, feed.videos, bucket.has if bucket is not None else None, feed.unopened())
        raise RunStopped(None, kept, feed.to_do(), shown) from None
    finally:
        if feed is not None:
            feed.close()
        lock.release()


def _check_bucket_output(config: PipelineConfig, redo_stage: str | None) -> None:
    """What an s3:// output does not do yet, refused before anything is written."""
    if redo_stage:
        raise ConfigError(f"--redo-stage reads the clips of a local output folder; {config.output} is in a bucket")
    if config.shards is not None:
        raise ConfigError(f"shards: written from a local output folder's clips; {config.output} is in a bucket "
                          f"(drop shards, or write to a local --output)")


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """A store's refusal before the run writes anything, or the working copy's disk failing: one line, as a
    config problem."""
    try:
        yield
    except ObjectError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot fill the output's local working copy ({exc.strerror}: {exc.filename}); free "
                          f"space or fix permissions there and rerun") from None


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


def _find_inputs(config: PipelineConfig, config_dir: Path,
                 warn: Callable[[str], None]) -> Iterator[VideoInput | tuple[str, str]]:
    """The config's inputs as they are found (the bundled sample made first, when they name it)."""
    if ensure_bundled_sample([config_dir / i for i in config.inputs]):
        warn(f"generated the bundled sample video {BUNDLED_SAMPLE} (python -m orchestrator.sample_video makes it)")
    return find_inputs(config.inputs, config_dir)


def _wait_first_video(config: PipelineConfig, feed: InputFeed) -> None:
    """Wait, before any worker starts, until the feed has a readable video: the rest are found and opened
    while the run works. Inputs that name no readable video at all are a ConfigError."""
    if feed.wait_first():
        return
    if not feed.failures:
        raise ConfigError(f"no video in the inputs {', '.join(config.inputs)} (looked for files ending in "
                          f"{', '.join(sorted(VIDEO_SUFFIXES))}); check inputs: or --input")
    failures = feed.failures
    shown = "; ".join(f.line() for f in failures[:3]) + (f"; and {len(failures) - 3} more" if failures[3:] else "")
    raise ConfigError(f"no readable video in the inputs: {shown}")


def _prepare(config: PipelineConfig, stages: dict[str, ResolvedStage], firsts: dict[str, WorkerHandle],
             workers: LocalWorkers, cluster: Cluster | None, gpus: int | None,
             warn: Callable[[str], None]) -> Prepared:
    """Read each model's declarations; locally, check its weights and place replicas on GPUs (adopting each
    first worker whose place fits); with a cluster, hand replicas to it."""
    declarations = {name: _declarations(stages[name], handle) for name, handle in firsts.items()}
    if cluster is not None:
        close_all(list(firsts.values()), STOP_AT_ONCE)  # replicas live on the cluster's nodes
        media = {name: MEDIA_DECLARATIONS for name in workers.media}  # media replicas too: they read the videos
        on_cluster, resources, config = cluster.replicas(config, {**stages, **workers.media},
                                                         {**declarations, **media}, workers.user_dirs, warn)
        return Prepared(config, declarations, on_cluster, {}, resources)
    check_weights_present(list(declarations.values()))
    n_gpus = detect_gpu_count() if gpus is None else gpus
    workers.gpu_of = assign_gpus(stages, declarations, n_gpus, warn)
    adopt = {name: {0: h} for name, h in firsts.items() if workers.gpu_of[(name, 0)] == NO_GPU}
    close_all([h for name, h in firsts.items() if name not in adopt], STOP_AT_ONCE)
    return Prepared(config, declarations, workers.make, adopt,
                    Resources(workers.cores, workers.threads, n_gpus, workers.gpu_of),
                    use_hardware(config.media.hardware, n_gpus, warn))


def _run(feed: InputFeed, writer: DedupingWriter, prepared: Prepared, state: RunState,
         display: Callable[[RunState], Any] | None, warn: Callable[[str], None],
         redo: RedoSource | None, frames: SharedFramesDir) -> RunSummary:
    """Execute with the writer (which dedups after each batch of videos; for a redo, with the clips it reads
    back), dedup once more when every video is done, and record the summary however the run ends."""
    if writer.set_aside is not None:
        warn(f"--fresh: moved the earlier results to {writer.set_aside} (delete it when no longer needed)")
    executor = PipelineExecutor(prepared.config, feed, writer, prepared.make, state, prepared.declarations,
                                prepared.adopt, prepared.resources, redo, frames, prepared.hardware)
    stopped: RunStopped | None = None
    try:
        executor.run(on_tick=(lambda: display(state)) if display else lambda: None)
        writer.finish_dedup()
        state.kept = writer.kept_clips()
    except KeyboardInterrupt:
        state.failures.append(Failure("", "interrupted (Ctrl-C): finished videos were kept"))
        stopped = RunStopped(None, 0, feed.to_do(), writer.shown)
    except Exception as exc:  # the step's error (PipelineError) or any other: the summary is recorded anyway
        state.failures.append(Failure("", f"the run stopped: {exc}"))
        stopped = RunStopped(exc, 0, feed.to_do(), writer.shown)
    summary = _summary(state, time.monotonic() - state.started)
    try:
        writer.finish_run(summary, completed=stopped is None)
        if stopped is None:
            _after_run(writer, prepared.config, redo.plan if redo else None, warn)
    except PipelineError as exc:
        stopped = stopped or RunStopped(exc, 0, feed.to_do(), writer.shown)
    if stopped is not None:
        raise replace(stopped, kept=writer.kept(feed.unopened()))
    return summary


def _after_run(writer: OutputWriter, config: PipelineConfig, redo: RedoPlan | None,
               warn: Callable[[str], None]) -> None:
    """Once every video is through: a redo records its new results (or says what is left), then the shards
    are written from the final rows (after dedup)."""
    if redo is not None and (left := redo.finish(writer)):
        warn(left)
    if config.shards is not None:
        write_shards(writer.out_dir, config.shards.max_bytes)


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
