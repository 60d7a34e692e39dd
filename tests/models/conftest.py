"""Model envs for the tests that run code inside them: built once per session, entered by subprocess."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Collection, Mapping
from functools import cache
from pathlib import Path

import pytest

from orchestrator.envs import Env, EnvRegistry
from orchestrator.errors import OrchestratorError

REPO_ROOT = Path(__file__).resolve().parents[2]

RunInEnv = Callable[..., str]
"""run_in_env(env_name, script, *args, environ=None, unset=()) -> the script's stdout."""


@pytest.fixture(scope="session")
def env_for() -> Callable[[str], Env]:
    """Build (or find) an env once per session; skip the calling test if it cannot be had."""
    registry = EnvRegistry()

    @cache
    def ensure(name: str) -> Env | str:
        try:
            env = registry.ensure(name)
        except OrchestratorError as exc:
            return f"env {name!r} is not available here: {exc}"
        return env if env.python.exists() else f"env {name!r} has no interpreter at {env.python}"

    def get(name: str) -> Env:
        env = ensure(name)
        if isinstance(env, str):
            pytest.skip(env)
        return env

    return get


@pytest.fixture(scope="session")
def run_in_env(env_for: Callable[[str], Env]) -> RunInEnv:
    """Run a Python `script` with `args` in env `env_name` as a worker would be started (the env's own
    interpreter and variables, this checkout on PYTHONPATH, `environ` on top, `unset` removed); fail on
    a non-zero exit."""

    def run(env_name: str, script: str, *args: str, environ: Mapping[str, str] | None = None,
            unset: Collection[str] = ()) -> str:
        env = env_for(env_name)
        full = env.launch_environ(os.environ) | {"PYTHONPATH": str(REPO_ROOT), **(environ or {})}
        full = {name: value for name, value in full.items() if name not in unset}
        argv = [str(env.python), "-c", script, *args]
        done = subprocess.run(argv, env=full, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"script failed in env {env_name!r}:\n{done.stderr[-4000:]}"
        return done.stdout

    return run
