"""Build-once cache of environments, keyed by a hash of what determines their content.

    <root>/<name>-<key16>/            a complete env (marker written last)
    <root>/<name>-<key16>.partial/    a build in progress (or the leftovers of a killed one)
    <root>/<name>-<key16>.lock        serialises builds of that key across processes

Builds go through `orchestrator.build_cache`, the mechanism the weights cache uses too. A process
that uses an env holds a shared lock on `<env>/.orchestrator-in-use` (`lease`); `gc` only removes
entries on which it can take that lock exclusively, and holds it while it deletes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.build_cache import StagedEntry, final_path

MARKER = ".orchestrator-env.json"
IN_USE = ".orchestrator-in-use"


@dataclass(frozen=True)
class CacheEntry:
    directory: Path
    metadata: dict[str, Any]


def read_marker(directory: Path, key: str | None = None) -> dict[str, Any] | None:
    """The entry's metadata if it is complete (and built for `key`, when given)."""
    try:
        metadata = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metadata, dict) or (key is not None and metadata.get("key") != key):
        return None
    return metadata


class EnvCache:
    """Directories of built environments under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry_dir(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key[:16]}"

    def lookup(self, name: str, key: str) -> CacheEntry | None:
        directory = self.entry_dir(name, key)
        metadata = read_marker(directory, key)
        return CacheEntry(directory, metadata) if metadata is not None else None

    def ensure(
        self, name: str, key: str, build: Callable[[Path], dict[str, Any]], *, relocatable: bool
    ) -> CacheEntry:
        """Return the complete entry for `key`, building it (once, across processes) if needed.

        `build(work_dir)` fills `work_dir` and returns metadata to record. A relocatable env is
        built beside its final place and renamed into it; others are built in place. Either way
        the marker is written last, and a failed build removes its directory before re-raising.
        """
        if entry := self.lookup(name, key):
            return entry
        staged = StagedEntry(self.entry_dir(name, key), MARKER, in_place=not relocatable)
        with staged.locked():
            if entry := self.lookup(name, key):
                return entry
            metadata = staged.build(lambda work: {"name": name, "key": key, **build(work)},
                                    lambda recorded: json.dumps(recorded, indent=2))
        return CacheEntry(staged.final, metadata)

    def entries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir())

    def gc(self, keep: set[Path]) -> list[Path]:
        """Remove entries not in `keep` that no process is using or building; return what was removed."""
        removed = []
        for directory in self.entries():
            if directory in keep:
                continue
            staged = StagedEntry(final_path(directory), MARKER)
            with contextlib.suppress(TimeoutError), staged.locked(timeout=0), _unused(directory) as unused:
                if unused:
                    shutil.rmtree(directory, ignore_errors=True)
                    staged.lock_path.unlink(missing_ok=True)
                    removed.append(directory)
        return removed


@contextlib.contextmanager
def lease(directory: Path) -> Iterator[None]:
    """Mark an env as in use for the duration (a shared lock `gc` respects).

    Taken under the entry's build lock, which `gc` holds while it checks and deletes: either the lease
    comes first and `gc` skips the entry, or the entry is gone and this raises FileNotFoundError.
    """
    with StagedEntry(final_path(directory), MARKER).locked():
        fd = os.open(directory / IN_USE, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _unused(directory: Path) -> Iterator[bool]:
    """Whether no process holds a lease on `directory`; while True, none can take one."""
    try:
        fd = os.open(directory / IN_USE, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # removed meanwhile: nothing left to collect
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def directory_size(path: Path) -> int:
    """Bytes used by a tree, counting hard-linked files once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total
