"""`orchestrator envs ...`: list, build, lock, check, locate and clean environments."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from orchestrator.envs import EnvRegistry
from orchestrator.envs.locking import compile_conda_lock, compile_uv_lock
from orchestrator.envs.registry import EnvStatus
from orchestrator.errors import LockError
from orchestrator.render import ShortPath, console, error_console, home_relative, human_size

envs_app = typer.Typer(no_args_is_help=True, help="Declare, lock, build and cache model environments.")
Names = Annotated[list[str] | None, typer.Argument(help="Env names (default: all declared envs).")]


def _selected(registry: EnvRegistry, names: list[str] | None) -> list[str]:
    chosen = names or registry.names()
    for name in chosen:
        registry.spec(name)
    return chosen


@envs_app.command("list")
def list_envs(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show each env: backend, python, lock hash, size, path (or "not built")."""
    registry = EnvRegistry()
    rows = [registry.status(name) for name in registry.names()]
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    console.print(envs_table(rows, registry.settings.env_cache_dir))


def envs_table(rows: list[EnvStatus], cache_dir: Path) -> Group:
    """The table, then one line per env with a problem (problems are sentences: a column would crush the table).

    Names and the short columns never shrink. A narrow terminal shortens the paths instead: a cached
    env shows its folder under `cache_dir` (named once, in the caption), any other its `~`-relative
    path, and an ellipsis replaces the middle of what still does not fit. The lock column shows the
    hash's first 8 characters (`--json` has all of it).
    """
    table = Table("name", "backend", "python", "lock", "size", caption=f"env cache: {home_relative(str(cache_dir))}")
    for column in table.columns:
        column.no_wrap = True
    table.add_column("path", min_width=ShortPath.MIN_WIDTH)
    for r in rows:
        path = ShortPath(_under(r.path, cache_dir)) if r.path else "not built"
        table.add_row(r.name, r.backend, r.python, (r.lock_hash or "-")[:8], human_size(r.size_bytes), path)
    problems = [Text.assemble((f"{r.name}: ", "bold yellow"), r.problem) for r in rows if r.problem]
    return Group(table, *problems)


def _under(path: str, root: Path) -> str:
    return str(Path(path).relative_to(root)) if Path(path).is_relative_to(root) else path


@envs_app.command("build")
def build(names: Names = None) -> None:
    """Build envs from their locks (a no-op for envs already built)."""
    registry = EnvRegistry()
    for name in _selected(registry, names):
        started = time.perf_counter()
        with error_console.status(f"building env [bold]{name}[/]..."):
            env = registry.ensure(name)
        error_console.print(f"[green]✓[/] {name} ({env.backend}) ready in {time.perf_counter() - started:.1f}s: "
                            f"{env.python}", highlight=False)


@envs_app.command("lock")
def lock(names: Names = None) -> None:
    """Regenerate the locks from environment.yml: requirements.lock, and conda-lock.yml for an env with conda
    packages (solved with rattler from its channels)."""
    registry = EnvRegistry()
    for name in _selected(registry, names):
        spec = registry.spec(name)
        if spec.is_pixi:
            raise LockError(f"env {name!r} is a pixi workspace: lock it with `pixi lock` in {spec.directory}")
        with error_console.status(f"locking env [bold]{name}[/]..."):
            written = [compile_conda_lock(spec, registry.settings)] if spec.conda_packages else []
            written.append(compile_uv_lock(spec, registry.settings.find_links))
        error_console.print(f"[green]✓[/] {name}: wrote {', '.join(map(str, written))}", highlight=False)


@envs_app.command("python")
def python(name: str) -> None:
    """Print the env's interpreter path, building the env first if needed."""
    print(EnvRegistry().ensure(name).python)


@envs_app.command("check")
def check() -> None:
    """Fail if any env's lock is missing or no longer matches its environment.yml."""
    problems = EnvRegistry().check()
    if problems:
        raise LockError("; ".join(problems))
    console.print("all env locks match their specs")


@envs_app.command("gc")
def gc() -> None:
    """Remove cached envs that no declared env uses any more (never one in use)."""
    removed = EnvRegistry().gc()
    for path in removed:
        console.print(f"removed {path}")
    console.print(f"{len(removed)} cache entries removed")
