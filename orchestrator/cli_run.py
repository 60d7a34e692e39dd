"""`orchestrator run CONFIG`: the main job.

The pipeline's modules (numpy, PyAV, ZeroMQ and the rest) are imported when a run starts, not when the
command line is built, so every other command (`--version`, `envs build`, ...) starts without them."""

from __future__ import annotations

import enum
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape

from orchestrator.errors import ConfigError, RunStopped
from orchestrator.render import console, error_console
from workers.media.s3 import is_s3

if TYPE_CHECKING:
    from orchestrator.pipeline.config import PipelineConfig
    from orchestrator.pipeline.stages import Cluster
    from orchestrator.pipeline.summary import RunSummary


class Executor(str, enum.Enum):
    local = "local"
    ray = "ray"


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops a run like Ctrl-C: workers are stopped and finished videos kept."""
    raise KeyboardInterrupt


def run(
    config: Annotated[Path, typer.Argument(help="Pipeline config (YAML).")],
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="Input video, folder or glob (repeat).")]
    = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Output directory.")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs to use (default: detect).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Logs only, no live display.")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over: drop the results of earlier runs into the "
                                                        "output folder instead of resuming from them.")] = False,
    executor: Annotated[Executor, typer.Option("--executor", help="Where replicas run: this machine, or a Ray "
                                                                  "cluster (needs the ray extra).")] = Executor.local,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to join: host:port or auto "
                                                                  "(default: RAY_ADDRESS, else a new local one).")]
    = None,
    weights_from: Annotated[str | None, typer.Option("--weights-from", help="On Ray: where nodes lacking a model's "
                                                     "weights fetch them (hf, s3://bucket/prefix, a directory).")]
    = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write OUTPUT/report.html at the end "
                                                                "(`orchestrator report` writes it later).")] = False,
    redo_stage: Annotated[str | None, typer.Option("--redo-stage", help="Rerun this model stage over the output "
                                                   "folder's kept clips and replace its results (the config may "
                                                   "differ from the folder's only in its model and params).")]
    = None,
    cache_inputs: Annotated[Path | None, typer.Option("--cache-inputs", help="Copy each s3:// input whole into "
                                                      "this folder (once per version, kept for later runs) and "
                                                      "read it there, instead of in place.")] = None,
) -> None:
    """Run a pipeline: split videos into clips, annotate and filter them, write clips, metadata and a report.

    Rerunning the same command after an interrupted or killed run resumes it: videos it finished are kept."""
    from orchestrator.pipeline.config import load_config
    from orchestrator.pipeline.progress import summary_table

    pipeline, config_dir = load_config(config, inputs, output)
    if executor is Executor.local and (address or weights_from):
        raise ConfigError("--address and --weights-from apply to --executor ray; add --executor ray or drop them")
    if redo_stage and (fresh or inputs):
        raise ConfigError("--redo-stage reruns a stage over the clips the output folder holds; drop --fresh and "
                          "--input")
    where = {"cluster": _ray_cluster(address, weights_from) if executor is Executor.ray else None,
             "redo_stage": redo_stage, "cache_inputs": cache_inputs.absolute() if cache_inputs else None}
    # Set both explicitly: a run started in the background inherits SIGINT ignored, and must still stop on it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for chatty in ("botocore", "boto3", "s3transfer"):  # where they found credentials is not the run's news
        logging.getLogger(chatty).setLevel(logging.WARNING)

    def warn(line: str) -> None:
        error_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)

    try:
        summary = _execute(pipeline, config_dir, quiet, gpus=gpus, warn=warn, fresh=fresh, **where)
    except RunStopped as stopped:
        # stopped by an error: its report shows what failed (a bucket output has none)
        if stopped.cause is not None and not no_report and not is_s3(pipeline.output):
            _report(Path(stopped.out_dir), warn)
        error_console.print(f"[bold red]{'error: ' if stopped.cause else ''}[/]{escape(str(stopped))}",
                            highlight=False, soft_wrap=True)
        raise typer.Exit(130 if stopped.cause is None else 1) from None
    console.print(summary_table(summary))
    if is_s3(pipeline.output):
        console.print(f"results: {escape(pipeline.output)} (no report: its clips are in the bucket)",
                      highlight=False, soft_wrap=True)
    elif not no_report:
        _report(config_dir / pipeline.output, warn)
    for failure in summary.failures:
        error_console.print(f"[red]failed:[/] {escape(failure.line())}", highlight=False, soft_wrap=True)
    if summary.failures:
        raise typer.Exit(1)


def _ray_cluster(address: str | None, weights_from: str | None) -> Cluster:
    """The Ray executor, handed to the run; it joins the cluster only once the run's cheap checks have passed."""
    from orchestrator.on_ray.replicas import RayCluster

    return RayCluster(address, weights_from)


def _report(out_dir: Path, warn: Callable[[str], None]) -> None:
    """The run's report, once the run has released its folder; a failure to write it is only a warning."""
    from orchestrator.report.write import report_after_run

    if (written := report_after_run(out_dir, warn)) is not None:
        console.print(f"report: {escape(str(written.path))}", highlight=False, soft_wrap=True)


def _execute(pipeline: PipelineConfig, config_dir: Path, quiet: bool, **options: Any) -> RunSummary:
    """The run, with workers' log lines above the live view (or, `quiet`, only the log lines)."""
    from orchestrator.pipeline.progress import render
    from orchestrator.pipeline.run import execute

    if quiet:
        return execute(pipeline, config_dir, **options,
                       on_log=lambda label, line: error_console.print(f"[{label}] {line}", markup=False,
                                                                      highlight=False))
    with Live(console=error_console, refresh_per_second=4, transient=True) as live:
        return execute(pipeline, config_dir, **options,
                       on_log=lambda label, line: live.console.print(f"[{label}] {line}", markup=False,
                                                                     highlight=False),
                       display=lambda state: live.update(render(state)))
