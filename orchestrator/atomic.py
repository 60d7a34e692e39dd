"""Writing a file so that a crash leaves the old content or the new, never a torn or empty file.

    bytes ──▶ .<name>.<random>.orchestrator-tmp (fsynced) ──rename──▶ <name> ──▶ fsync(its folder)

The one way the orchestrator publishes a file: env cache markers, weights manifests and downloaded
weight files, the pipeline's outputs. The temp file sits beside the target (a rename never crosses
file systems), has a name no other writer uses, gets the permissions `open` would give (0666 minus
the umask), and is removed when writing fails. After the folder's fsync the new name survives a
power cut too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".orchestrator-tmp"
"""Ends the name of every file still being written; such a file is never complete."""


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces `path` when the block ends without an exception."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8), atomically and durably."""
    atomic_write_bytes(path, text.encode())


def fsync_directory(directory: Path) -> None:
    """Make the names in `directory` (files created, renamed or removed there) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Make every file under `directory`, and every name there, durable: for trees another library wrote."""
    for root, _folders, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(Path(root))
