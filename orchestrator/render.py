"""Consoles shared by the CLI: results on stdout, progress and errors on stderr."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.text import Text

console = Console()
error_console = Console(stderr=True)

ELLIPSIS = "…"


def human_size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "-"
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def home_relative(path: str) -> str:
    """`path` with the user's home folder written as `~`."""
    home = str(Path.home())
    if home != "/" and (path == home or path.startswith(home + "/")):
        return "~" + path[len(home):]
    return path


def middle_ellipsis(text: str, width: int) -> str:
    """`text` cut to `width` characters by replacing its middle, so both ends (a path's root and its
    last folder) stay readable."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + ELLIPSIS + text[len(text) - tail:]


class ShortPath:
    """A table cell holding a path that shrinks with its column (middle ellipsis) instead of wrapping
    or pushing other columns to cut their text."""

    MIN_WIDTH = 12

    def __init__(self, path: str) -> None:
        self.text = home_relative(path)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(len(self.text), self.MIN_WIDTH), len(self.text))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        yield Text(middle_ellipsis(self.text, options.max_width), no_wrap=True)
