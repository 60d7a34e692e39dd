"""A run's private folder (ipc endpoints, the workers' import path), and the cleanup of dead runs' folders.

A run killed with SIGKILL leaves its folder behind, socket files and all. The folder's name carries the
creating process's owner tag (`workers.owner_lock`), whose lock that process holds while it lives, so a
later run removes exactly the folders whose owner is gone, even when the two runs live in different pid
namespaces that share the temporary folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from workers.owner_lock import owner_tag, remove_orphans

PREFIX = "orch-run-"


def make_runtime_dir(prefix: str = PREFIX) -> Path:
    """A private (0700) folder for one run, owned by this process; dead runs' folders are removed first."""
    root = Path(tempfile.gettempdir())
    remove_orphaned_runtime_dirs(root)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag(root)}-", dir=root))


def remove_orphaned_runtime_dirs(root: Path | None = None) -> list[Path]:
    """Remove what processes that have exited left in `root` (default: the temporary folder); returns it."""
    return remove_orphans(root or Path(tempfile.gettempdir()))
