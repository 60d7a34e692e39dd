"""Writing one downloaded file so that an interruption never leaves a file that looks complete.

    chunks ──▶ .<dest>.<random>.orchestrator-tmp (hashed, fsynced) ──rename──▶ <dest>

A file under its final name inside a `.partial` folder is therefore whole, which is what lets the
next download keep it instead of fetching it again.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator.atomic import atomic_file
from orchestrator.errors import OrchestratorError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DownloadError(OrchestratorError):
    """A download could not be written locally (disk full) or did not match what the source promised."""


class TransferReporter(Protocol):
    """Progress callbacks, one file at a time; the CLI draws bars from them."""

    def started(self, path: str, size: int | None) -> None: ...

    def advanced(self, path: str, n_bytes: int) -> None: ...

    def finished(self, path: str) -> None: ...

    def kept(self, path: str) -> None:
        """`path` was already complete from an earlier, interrupted attempt and is not fetched again."""


class NullReporter:
    """Reports nothing (library callers and tests that do not watch progress)."""

    def started(self, path: str, size: int | None) -> None:
        pass

    def advanced(self, path: str, n_bytes: int) -> None:
        pass

    def finished(self, path: str) -> None:
        pass

    def kept(self, path: str) -> None:
        pass


def disk_full(exc: OSError, where: Path) -> DownloadError | None:
    """The error to report when `exc` means the disk (or a quota or file-size limit) is full, else None."""
    if exc.errno not in _NO_SPACE:
        return None
    return DownloadError(f"no space left while writing {where} ({os.strerror(exc.errno)}): free space there or point "
                         f"the cache elsewhere with --weights-dir / ORCHESTRATOR_WEIGHTS_DIR; completed files are "
                         f"kept and the same command resumes")


@dataclass(frozen=True)
class Received:
    size: int
    sha256: str


def receive_file(chunks: Iterable[bytes], dest: Path, label: str, reporter: TransferReporter) -> Received:
    """Stream `chunks` into `dest` atomically (`orchestrator.atomic`): on any failure nothing is left.

    A full disk (or a file-size limit) becomes a DownloadError saying where space is needed; the
    files already completed stay, so running the same command again resumes.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with atomic_file(dest) as handle:
            for chunk in chunks:
                handle.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                reporter.advanced(label, len(chunk))
    except OSError as exc:
        if (full := disk_full(exc, dest)) is not None:
            raise full from None
        raise
    reporter.finished(label)
    return Received(size, digest.hexdigest())
