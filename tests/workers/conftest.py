"""Fixtures for the worker-side tests."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.conda_utils import WORKER_ENV_VAR
from orchestrator.envs import Env, EnvRegistry
from workers.shm_ring import ShmRingReader, ShmRingWriter


@pytest.fixture
def ring() -> Iterator[tuple[ShmRingWriter, ShmRingReader]]:
    """A writer with four 8 MiB slots (room for a 1920x1080x3 frame each) and a reader attached to it."""
    writer = ShmRingWriter(n_slots=4, slot_bytes=8 * 1024 * 1024)
    reader = ShmRingReader.attach(writer.name, writer.n_slots, writer.slot_bytes)
    yield writer, reader
    reader.close()
    writer.close()


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def video_splitting() -> Env:
    """The env with torch, built once per session (a no-op when it is built already)."""
    return EnvRegistry().ensure("video_splitting")


def run_in_env(env: Env, script: str, *args: str, worker: bool = True) -> Any:
    """Run `script` with `env`'s interpreter as a worker would (the project's `workers` and `models` on
    its path; `worker=False`: without the worker marker, as models are described) and return the JSON
    it prints last."""
    environ = env.launch_environ(os.environ) | {"PYTHONPATH": str(ROOT)}
    if not worker:
        del environ[WORKER_ENV_VAR]
    done = subprocess.run([str(env.python), "-c", script, *args], env=environ, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"failed in env {env.name!r}:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])
