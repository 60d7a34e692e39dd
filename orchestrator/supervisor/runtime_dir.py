"""A run's private folder (ipc endpoints, the workers' import path), and the cleanup of dead runs' folders.

The folder's name carries the creating process's pid, so a later run can tell a folder whose owner was
killed (SIGKILL leaves it behind, socket files and all) from one that is still in use, and remove it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from workers.shm_ring import pid_alive

PREFIX = "orch-run-"
_NAME = re.compile(rf"{PREFIX}(\d+)-")


def make_runtime_dir(prefix: str = PREFIX) -> Path:
    """A private (0700) folder for one run, named after this process; dead runs' folders are removed first."""
    remove_orphaned_runtime_dirs()
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def remove_orphaned_runtime_dirs(root: Path | None = None) -> list[Path]:
    """Remove run folders whose creating process is gone; returns them."""
    removed = []
    root = root or Path(tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _NAME.match(path.name)
        if match and path.is_dir() and not pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
