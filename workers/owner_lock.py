"""Who owns what a run leaves in a shared folder (/tmp, /dev/shm): a lock file its process holds for life.

    <root>/orch-owner-<tag>        flock(LOCK_EX), held by the owning process until it exits
    <root>/<prefix>-<tag>-<...>    what that process made there: run folders, shared-memory rings

A pid cannot tell whether the owner lives: processes in other pid namespaces that share the folder
(containers, Ray nodes) have pids that mean nothing here, so a live run's pid may be free here and a dead
run's pid taken. A lock can: the kernel drops it when its owner exits, however it exits (SIGKILL too), and
a lock held in another namespace is held here as well, since flock belongs to the shared file. Cleanup
removes a tag's items only while it holds that tag's lock, which it gets only once the owner is gone. Items
without a lock file (an older version's) are left alone. The tag is `<pid>-<random>`: the pid is there for
a person reading the folder, the random part keeps two namespaces' equal pids apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

OWNER_PREFIX = "orch-owner-"


@dataclass(frozen=True)
class _Held:
    pid: int
    tag: str
    fd: int
    """Never closed: closing it would drop the lock while this process still owns items."""


_held: dict[Path, _Held] = {}
_held_lock = threading.Lock()


def owner_tag(root: Path) -> str:
    """This process's tag in `root`: name what it makes there `<prefix>-<tag>-<...>`. Its lock is taken on
    first use, before any item exists, and held until the process exits."""
    with _held_lock:
        held = _held.get(root)
        if held is None or held.pid != os.getpid():  # a forked child owns its items under a tag of its own
            held = _held[root] = _take(root)
        return held.tag


def remove_orphans(root: Path) -> list[Path]:
    """Remove the items of every owner in `root` that has exited, then its lock file; returns the items."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    removed: list[Path] = []
    for name in names:
        if name.startswith(OWNER_PREFIX):
            removed += _remove_if_free(root, name[len(OWNER_PREFIX):], names)
    return removed


def _take(root: Path) -> _Held:
    """Create and lock a lock file of a fresh tag. It is locked as soon as it exists, and a cleanup that
    locked it in between (it would then have unlinked it) makes us start again under another tag."""
    while True:
        tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        path = root / f"{OWNER_PREFIX}{tag}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return _Held(os.getpid(), tag, fd)
        except (BlockingIOError, FileNotFoundError):
            pass
        os.close(fd)


def _remove_if_free(root: Path, tag: str, names: list[str]) -> list[Path]:
    lock_path = root / f"{OWNER_PREFIX}{tag}"
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # gone already, or another user's
        return []
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []  # its owner lives, in this pid namespace or another
        items = [root / name for name in names if f"-{tag}-" in name]
        for item in items:
            _remove(item)
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        return items
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()
