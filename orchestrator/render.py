"""Consoles shared by the CLI: results on stdout, progress and errors on stderr."""

from __future__ import annotations

from rich.console import Console

console = Console()
error_console = Console(stderr=True)


def human_size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "-"
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
