"""`orchestrator models ...`: list, download, push, pull and verify the weights models need."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table

from models.model_utils import WEIGHTS_DIR_VAR, InvalidWeightsName, validate_weights_name
from orchestrator.errors import ConfigError
from orchestrator.render import console, error_console, home_relative, human_size
from orchestrator.weights.cache import WeightsCache
from orchestrator.weights.download_config import DEFAULT_CONFIG, DownloadConfig, load_download_config
from orchestrator.weights.manifest import WeightsCorrupted
from orchestrator.weights.preflight import download_command
from orchestrator.weights.requirements import WeightsRequirement, merge_requirements
from orchestrator.weights.sources import open_source

models_app = typer.Typer(no_args_is_help=True, help="Download, list, mirror and verify model weights.")
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help=f"Download config listing the models (default: ./{DEFAULT_CONFIG}).")]
ModelsOption = Annotated[str | None, typer.Option(
    "--models", help="Comma-separated weights names (org/repo) or model classes (default: all in the config).")]
WeightsDirOption = Annotated[Path | None, typer.Option(
    "--weights-dir", help=f"Weights cache root; sets {WEIGHTS_DIR_VAR} (default: ~/.cache/orchestrator/weights).")]


def _use_weights_dir(weights_dir: Path | None) -> WeightsCache:
    """Export the root so workers started by this process look in the same place."""
    if weights_dir is not None:
        os.environ[WEIGHTS_DIR_VAR] = str(weights_dir.expanduser().resolve())
    return WeightsCache()


def _tokens(models: str | None) -> list[str]:
    return [token.strip() for token in (models or "").split(",") if token.strip()]


def _requirements(config: Path | None, models: str | None) -> list[WeightsRequirement]:
    """What `--models` selects from the config; a weights name the config lacks means all of its files."""
    tokens = _tokens(models)
    path = config or DEFAULT_CONFIG
    if config is None and tokens and not path.exists():
        loaded = DownloadConfig(path, ())
    else:
        loaded = load_download_config(path)
    if not tokens:
        return loaded.requirements()
    chosen: list[WeightsRequirement] = []
    for token in tokens:
        matching = [m for m in loaded.models if m.matches(token)]
        by_name = [r for m in matching for r in m.requirements if r.name == token]
        chosen += by_name or [r for m in matching for r in m.requirements]
        if not matching:
            chosen.append(_unlisted(token, loaded))
    return merge_requirements(chosen)


def _unlisted(token: str, loaded: DownloadConfig) -> WeightsRequirement:
    known = sorted({m.label for m in loaded.models} | {r.name for r in loaded.requirements()})
    problem = f"--models {token!r} is no model or weights name in {loaded.path} (known: {', '.join(known) or 'none'})"
    try:
        name = str(validate_weights_name(token))
    except InvalidWeightsName as exc:
        raise ConfigError(f"{problem}: {exc}") from None
    if "/" not in name:
        raise ConfigError(problem)
    error_console.print(f"[yellow]note:[/] {name} is not in {loaded.path}; fetching all of its files", highlight=False)
    return WeightsRequirement(name)


class _RichReporter:
    """One progress bar per file on stderr, under a title printed once the first file starts."""

    def __init__(self, progress: Progress, title: str) -> None:
        self.progress = progress
        self.title: str | None = title
        self.tasks: dict[str, tuple[TaskID, int | None]] = {}

    def _announce(self) -> None:
        if self.title is not None:
            self.progress.console.print(self.title, highlight=False)
            self.title = None

    def started(self, path: str, size: int | None) -> None:
        self._announce()
        self.tasks[path] = (self.progress.add_task(path, total=size), size)

    def advanced(self, path: str, n_bytes: int) -> None:
        self.progress.advance(self.tasks[path][0], n_bytes)

    def finished(self, path: str) -> None:
        task, size = self.tasks[path]
        self.progress.update(task, completed=size)

    def kept(self, path: str) -> None:
        self._announce()
        self.progress.console.print(f"  kept {path} (already complete from an earlier attempt)", highlight=False)


@contextmanager
def _progress(title: str) -> Iterator[_RichReporter]:
    columns = (TextColumn("  {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=error_console) as progress:
        yield _RichReporter(progress, title)


@models_app.command("list")
def list_models(config: ConfigOption = None, weights_dir: WeightsDirOption = None,
                as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show each model: its env, its weights, whether they are cached, and their size."""
    cache = _use_weights_dir(weights_dir)
    loaded = load_download_config(config or DEFAULT_CONFIG)
    rows = []
    for model in loaded.models:
        base = {"model": model.label, "class": model.class_path, "env": model.declarations.conda_env_name}
        if not model.requirements:
            rows.append({**base, "weights": None, "files": None, "cached": None, "size_bytes": None})
        for requirement in model.requirements:
            manifest = cache.manifest(requirement.name)
            rows.append({**base, "weights": requirement.name, "files": list(requirement.files or []) or None,
                         "cached": cache.status(requirement).value,
                         "size_bytes": manifest.total_size() if manifest else None})
    if as_json:
        print(json.dumps({"weights_dir": str(cache.root), "models": rows}, indent=2))
        return
    table = Table("model", "env", "weights", "files", "cached", "size",
                  caption=f"weights cache: {home_relative(str(cache.root))}")
    for column in (*table.columns[:2], *table.columns[4:]):
        column.no_wrap = True  # names stay whole; weights names and file lists wrap instead
    table.columns[2].overflow = table.columns[3].overflow = "fold"
    for row in rows:
        table.add_row(row["model"], row["env"], row["weights"] or "(in its env)",
                      ", ".join(row["files"] or []) or ("all" if row["weights"] else "-"), row["cached"] or "-",
                      human_size(row["size_bytes"]))
    console.print(table)


@models_app.command("download")
def download(config: ConfigOption = None, models: ModelsOption = None,
             source: Annotated[str | None, typer.Option(
                 "--from", help="hf (default), s3://bucket/prefix, or a directory laid out as <dir>/<org>/<repo>.")]
             = None,
             force: Annotated[bool, typer.Option("--force", help="Fetch again even if complete.")] = False,
             weights_dir: WeightsDirOption = None) -> None:
    """Fetch the weights the config's models need; skips what is complete, resumes what was interrupted."""
    cache = _use_weights_dir(weights_dir)
    requirements = _requirements(config, models)
    if not requirements:
        console.print("no model selected needs weights (they ship with their envs)")
        return
    origin = open_source(source)
    for requirement in requirements:
        with _progress(f"{requirement.name} from {origin.label}") as reporter:
            outcome = cache.download(requirement, origin, reporter, force=force)
        verb = "downloaded" if outcome.fetched else "already present"
        console.print(f"[green]✓[/] {requirement.name}: {verb} ({human_size(outcome.manifest.total_size())}) in "
                      f"{cache.directory(requirement.name)}", highlight=False)


@models_app.command("push")
def push(to: Annotated[str, typer.Option("--to", help="S3 mirror, s3://bucket/prefix.")],
         models: ModelsOption = None, weights_dir: WeightsDirOption = None) -> None:
    """Mirror complete cache entries to S3 (manifest last), skipping files the mirror already holds."""
    from orchestrator.weights.s3 import S3Source  # boto3 loads only for the commands that talk to S3

    cache = _use_weights_dir(weights_dir)
    target = S3Source(to)
    names = _tokens(models) or cache.cached_names()
    for name in names:
        with _progress(f"{name} to {target.url(name)}") as reporter:
            pushed = cache.push(name, target, reporter)
        console.print(f"[green]✓[/] {name}: {'pushed' if pushed else 'already mirrored'}", highlight=False)
    console.print(f"{len(names)} weights mirrored to {target.label}")


@models_app.command("pull")
def pull(origin: Annotated[str, typer.Option("--from", help="S3 mirror, s3://bucket/prefix.")],
         models: ModelsOption = None, weights_dir: WeightsDirOption = None) -> None:
    """Copy the mirror's complete entries into the cache, resuming interrupted ones."""
    from orchestrator.weights.s3 import S3Source

    cache = _use_weights_dir(weights_dir)
    mirror = S3Source(origin)
    names = _tokens(models) or mirror.remote_names()
    for name in names:
        with _progress(f"{name} from {mirror.url(name)}") as reporter:
            outcome = cache.pull(name, mirror, reporter)
        verb = "pulled" if outcome.fetched else "already identical"
        console.print(f"[green]✓[/] {name}: {verb} ({human_size(outcome.manifest.total_size())})", highlight=False)
    console.print(f"{len(names)} weights in {cache.root}")


@models_app.command("verify")
def verify(models: ModelsOption = None, weights_dir: WeightsDirOption = None) -> None:
    """Re-hash every cached file against its manifest; fails naming each damaged file."""
    cache = _use_weights_dir(weights_dir)
    names = _tokens(models) or cache.cached_names()
    problems = cache.verify(names)
    table = Table("weights", "status", "problem")
    for name, found in problems.items():
        table.add_row(name, "damaged" if found else "ok", "; ".join(found))
    console.print(table)
    damaged = {name: found for name, found in problems.items() if found}
    if damaged:
        listed = "; ".join(f"{name}: {', '.join(found)}" for name, found in damaged.items())
        raise WeightsCorrupted(f"{len(damaged)} of {len(names)} weights damaged in {cache.root}: {listed}. Fetch "
                               f"them again with: {download_command(list(damaged))} --force")
