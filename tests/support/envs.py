"""The model envs the tests run code in: each built (or found) once per session, entered by subprocess."""

from __future__ import annotations

import functools
import json
import os
import stat
import subprocess
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from models.conda_utils import WORKER_ENV_VAR
from orchestrator.envs import Env, EnvRegistry
from tests.support.paths import ROOT

PROJECT_ENVS = ("video_splitting", "ocr", "content_filter")
"""The envs the project ships (envs/), which the setup builds."""


@functools.cache
def ensure_env(name: str) -> Env:
    """A project env from its lock; a build that fails fails the test that needs it (it never skips)."""
    return EnvRegistry().ensure(name)


def run_in_env(env: Env, script: str, *args: str, environ: Mapping[str, str] | None = None,
               unset: Collection[str] = (), worker: bool = True) -> str:
    """Run a Python `script` with `env`'s interpreter as a worker is started (the env's own variables, this
    checkout on PYTHONPATH, `environ` on top, `unset` removed; `worker=False`: without the worker marker, as
    models are described) and return what it printed; a non-zero exit fails the test."""
    full = env.launch_environ(os.environ) | {"PYTHONPATH": str(ROOT), **(environ or {})}
    if not worker:
        del full[WORKER_ENV_VAR]
    full = {name: value for name, value in full.items() if name not in unset}
    done = subprocess.run([str(env.python), "-c", script, *args], env=full, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"script failed in env {env.name!r}:\n{done.stderr[-4000:]}"
    return done.stdout


def fake_env(tmp_path: Path, script: str, name: str = "fake") -> Env:
    """An env whose 'interpreter' is a shell script: stands in for a broken or foreign worker."""
    python = tmp_path / f"{name}-python"
    python.write_text("#!/bin/sh\n" + script + "\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return Env(name, "existing", tmp_path, python)


def last_json(output: str) -> Any:
    """The JSON value a script printed last."""
    return json.loads(output.strip().splitlines()[-1])
