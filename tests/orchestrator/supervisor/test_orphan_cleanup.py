"""Cleanup of what killed runs leave in /tmp and /dev/shm decides by the owner's lock, not its pid: real runs
in child processes whose items carry a pid from another pid namespace (free here) or a reused one (taken here)
keep their run folder and ring while they live, and lose them once they are gone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.supervisor.runtime_dir import remove_orphaned_runtime_dirs
from workers.shm_ring import SHM_DIR, remove_orphaned_segments

ROOT = Path(__file__).resolve().parents[3]
RUN = """
import sys
from orchestrator.supervisor.runtime_dir import make_runtime_dir
from workers.shm_ring import ShmRingWriter
ring = ShmRingWriter(1, 4096)
print(make_runtime_dir().name, ring.name, flush=True)
sys.stdin.read()  # a run in progress, until the test kills it
"""
FOREIGN_PID = int(Path("/proc/sys/kernel/pid_max").read_text())
"""Above every pid of this namespace: a live owner's pid as a process in another namespace writes it."""


@pytest.fixture
def temp_root(tmp_path: Path) -> Path:
    """The runs' temporary folder (their TMPDIR)."""
    (tmp_path / "tmp").mkdir()
    return tmp_path / "tmp"


@pytest.fixture
def runs(tmp_path: Path, temp_root: Path) -> Iterator:
    started: list[subprocess.Popen[str]] = []

    def start() -> tuple[subprocess.Popen[str], Path, Path]:
        environ = {**os.environ, "TMPDIR": str(temp_root), "PYTHONPATH": str(ROOT)}
        with open(tmp_path / f"stderr-{len(started)}", "w") as stderr:  # its resource tracker's complaints too
            proc = subprocess.Popen([sys.executable, "-c", RUN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=stderr, text=True, env=environ, cwd=ROOT, start_new_session=True)
        started.append(proc)
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, (tmp_path / f"stderr-{len(started) - 1}").read_text()
        folder, ring = line.split()
        return proc, temp_root / folder, Path(SHM_DIR) / ring

    yield start
    for proc in started:
        kill(proc)
    for pid in (FOREIGN_PID, 1):
        for item in Path(SHM_DIR).glob(f"*-{pid}-*"):
            item.unlink(missing_ok=True)


def kill(run: subprocess.Popen[str]) -> None:
    """SIGKILL the run with its resource tracker, as a killed container or node goes: nothing cleans up."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def as_if_owned_by(pid: int, owner: subprocess.Popen[str], roots: tuple[Path, ...]) -> None:
    """Rename everything `owner` made in `roots` to carry `pid` instead of its own."""
    for root in roots:
        for item in root.iterdir():
            if f"-{owner.pid}-" in item.name:
                item.rename(root / item.name.replace(f"-{owner.pid}-", f"-{pid}-"))


def renamed(path: Path, owner: subprocess.Popen[str], pid: int) -> Path:
    return path.with_name(path.name.replace(f"-{owner.pid}-", f"-{pid}-"))


def cleanup(temp_root: Path) -> None:
    remove_orphaned_runtime_dirs(temp_root)
    remove_orphaned_segments()


def test_a_live_run_keeps_its_folder_and_ring_whatever_its_pid_says(runs, temp_root: Path) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(FOREIGN_PID, 0)
    roots = (temp_root, Path(SHM_DIR))
    dead, dead_folder, dead_ring = runs()
    kill(dead)
    as_if_owned_by(1, dead, roots)  # pid 1 is alive: a pid reused by another process
    dead_folder, dead_ring = renamed(dead_folder, dead, 1), renamed(dead_ring, dead, 1)
    live, live_folder, live_ring = runs()
    as_if_owned_by(FOREIGN_PID, live, roots)
    live_folder, live_ring = renamed(live_folder, live, FOREIGN_PID), renamed(live_ring, live, FOREIGN_PID)

    cleanup(temp_root)
    assert live_folder.is_dir() and live_ring.exists()
    assert not dead_folder.exists() and not dead_ring.exists()

    kill(live)
    cleanup(temp_root)
    assert not live_folder.exists() and not live_ring.exists()
    assert [item.name for item in temp_root.iterdir()] == []  # their lock files went with them
