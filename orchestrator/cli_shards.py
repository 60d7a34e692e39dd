"""`orchestrator shards OUT`: (re)write the WebDataset shards of an output folder's kept clips.

What a run writes at its end when its config has `shards: {max_bytes: ...}`, for a folder written without it,
or again after its rows changed. It takes the folder's lock, so it never writes beside a run."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.render import console


def _size(value: str) -> int:
    from orchestrator.dataset.shards import parse_size

    try:
        return parse_size(int(value) if value.isdigit() else value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def shards(
    out: Annotated[str, typer.Argument(help="Output folder of a run.")],
    max_bytes: Annotated[str, typer.Option("--max-bytes", help="The most bytes of one tar (e.g. 500MB, 1GB, 2GiB); "
                                                               "a larger clip gets a tar of its own.")] = "1GB",
) -> None:
    """Write WebDataset shards of the kept clips into OUT/shards/, grouped by frame size, replacing any there."""
    from orchestrator.dataset.shards import SHARDS_DIR, write_shards
    from orchestrator.errors import ConfigError
    from orchestrator.pipeline.output.bucket import local_output_folder
    from orchestrator.pipeline.output.lock import OutputLock

    limit = _size(max_bytes)
    folder = local_output_folder(out, "shards")
    if not folder.is_dir():
        raise ConfigError(f"{out}: no such output folder; give the output folder of an `orchestrator run`")
    lock = OutputLock(folder)
    lock.acquire()
    try:
        manifest = write_shards(folder, limit)
    finally:
        lock.release()
    groups = ", ".join(f"{name}: {g['samples']}" for name, g in manifest.groups.items()) or "no kept clips"
    console.print(f"wrote {len(manifest.shards)} shards of {manifest.samples} clips to {folder / SHARDS_DIR} "
                  f"({groups})", highlight=False, soft_wrap=True)
