"""Build a cache entry once: fill `<final>.partial`, rename it to `<final>`, write its marker last.

    <final>.lock       a file lock: one builder of the entry at a time, across processes (gc takes it too)
    <final>.partial/   being filled, or what an interrupted build left (removed, or kept to resume)
    <final>/           published: complete once its marker file exists (written last, atomically)

Both caches build this way: environments (`envs.cache`; a killed build's leftovers are removed, and
conda envs, which embed their own path, are built in place so only the marker publishes them) and
model weights (`weights.cache`; an interrupted download keeps its whole files in `.partial` and the
next one resumes from them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

from orchestrator.atomic import TMP_SUFFIX, atomic_write_text, fsync_directory

PARTIAL_SUFFIX = ".partial"

T = TypeVar("T")


def final_path(directory: Path) -> Path:
    """The entry a cache folder belongs to, whether it is the entry itself or its `.partial`."""
    return directory.with_name(directory.name.removesuffix(PARTIAL_SUFFIX))


class StagedEntry:
    """One cache entry's folder, its `.partial` twin, its lock and its marker."""

    def __init__(self, final: Path, marker: str, *, in_place: bool = False) -> None:
        self.final = final
        self.partial = final.with_name(final.name + PARTIAL_SUFFIX)
        self.lock_path = final.with_name(final.name + ".lock")
        self.marker = marker
        self.in_place = in_place
        """Build under the final name (for trees that embed their own path); the marker alone publishes."""

    @contextlib.contextmanager
    def locked(self, timeout: float = -1) -> Iterator[None]:
        """Hold the entry's build lock (raises TimeoutError after `timeout` s; -1 waits, 0 only tries)."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path), timeout=timeout):
            yield

    def build(self, fill: Callable[[Path], T], marker_text: Callable[[T], str], *, resume: bool = False,
              keep_failed: Callable[[Path], bool] = lambda work: False) -> T:
        """Fill the work folder and publish it; call with `locked()` held.

        Without `resume` the work folder starts empty; with it, what an earlier build left there stays
        (files still being written when it died are removed: they were never whole). `fill(work)`
        returns what `marker_text` turns into the marker. When anything fails the work folder is
        removed, unless `keep_failed(work)` says it holds something worth resuming from.
        """
        work = self.final if self.in_place else self.partial
        if not resume:
            shutil.rmtree(work, ignore_errors=True)
        elif work.is_dir():
            for leftover in work.rglob(f"*{TMP_SUFFIX}"):
                leftover.unlink()
        try:
            result = fill(work)
            if not self.in_place:
                self._replace_final()
            atomic_write_text(self.final / self.marker, marker_text(result))
        except BaseException:
            if not keep_failed(work):
                shutil.rmtree(work, ignore_errors=True)
            raise
        return result

    def _replace_final(self) -> None:
        """Move the filled `.partial` into place; an older copy loses its marker before its files."""
        if self.final.exists():
            (self.final / self.marker).unlink(missing_ok=True)
            shutil.rmtree(self.final)
        os.replace(self.partial, self.final)
        fsync_directory(self.final.parent)
