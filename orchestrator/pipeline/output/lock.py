"""One run at a time per output folder: an exclusive lock held from before the folder is touched to the end.

    <out>/.lock         flock()ed by the run that owns the folder (the kernel drops it when that process dies)
    <out>/.lock-owner   {"pid", "host"} of that run, so a refused run can say who holds the folder

A second run into the same folder, `--fresh` or not, is refused at once and changes nothing there. A run killed
with SIGKILL releases the lock with its process, so the rerun that resumes it is never refused by a ghost.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from filelock import FileLock, Timeout

from orchestrator.atomic import atomic_write_text
from orchestrator.errors import ConfigError, OutputBusy

LOCK_FILE = ".lock"
OWNER_FILE = ".lock-owner"


class OutputLock:
    """The exclusive claim on one output folder; `acquire` is idempotent, `release` ends it."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._lock = FileLock(out_dir / LOCK_FILE, timeout=0, thread_local=False)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> None:
        """Create the folder if needed and take it, or raise OutputBusy naming the run that holds it."""
        if self.held:
            return
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:
            raise OutputBusy(f"output folder {self.out_dir} is in use by another run ({self._owner()}); wait for "
                             f"it to end, or choose another --output") from None
        except OSError as exc:
            raise ConfigError(f"output directory {self.out_dir} is not writable ({exc.strerror}); choose another "
                              f"with --output") from None
        atomic_write_text(self.out_dir / OWNER_FILE,
                          json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")

    def release(self) -> None:
        if self.held:
            self._lock.release()

    def _owner(self) -> str:
        try:
            owner = json.loads((self.out_dir / OWNER_FILE).read_text())
            return f"pid {owner['pid']} on {owner['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "owner unknown"
