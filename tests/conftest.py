"""Suite-wide guards: no test may leave a child process behind."""

from __future__ import annotations

import psutil
import pytest


@pytest.fixture(autouse=True)
def no_leaked_children():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    leaked = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    alive = []
    for proc in leaked:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
        proc.kill()
    assert not alive, f"test leaked child processes: {alive}"
