"""A worker whose parent dies while the worker is still starting exits by itself.

The parent names itself on the worker's command line: a worker that read its parent's pid only once its
imports were done would take init for its parent, and never notice it was orphaned."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"

LAUNCH_THEN_DIE = f"""
import os, subprocess, sys
from pathlib import Path
from orchestrator.envs import EnvRegistry
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.policy import WorkerPolicy

env = EnvRegistry().ensure("ocr")
spec = WorkerSpec("orphan/0", env, ModelRef("controlled_model.ControlledModel", {{"env": "ocr"}}),
                  (Path({str(FIXTURES)!r}),))
handle = WorkerHandle(spec, Path(sys.argv[1]), WorkerPolicy(use_shared_memory=False))  # nothing else to lose
handle.launch()
# Something must keep the worker's stdout and stderr open, or its first line would kill it by EPIPE.
process = handle._res.process
pipes = (process.stdout.fileno(), process.stderr.fileno())
holder = subprocess.Popen(["sleep", "120"], pass_fds=pipes, start_new_session=True, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(handle.pid, holder.pid, flush=True)
os._exit(0)  # gone before the worker has even imported its modules
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, waiting for init to reap it
    except psutil.NoSuchProcess:
        return True


def test_a_worker_whose_parent_dies_while_it_starts_exits(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", LAUNCH_THEN_DIE, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pid, holder = map(int, done.stdout.split()[-2:])
    deadline = time.monotonic() + 30  # imports on a loaded machine, then one idle poll of the control socket
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = not _gone(pid)
    for leftover in [holder] + ([pid] if alive else []):
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(leftover).kill()
    assert not alive, "the orphaned worker kept running"
