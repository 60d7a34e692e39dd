"""Model envs for the tests that run code inside them, entered by subprocess."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orchestrator.envs import Env
from tests.support.envs import run_in_env as run_script_in_env

RunInEnv = Callable[..., str]
"""run_in_env(env_name, script, *args, environ=None, unset=()) -> the script's stdout."""


@pytest.fixture(scope="session")
def run_in_env(env_for: Callable[[str], Env]) -> RunInEnv:
    """Run a Python `script` with `args` in env `env_name` as a worker would be started."""

    def run(env_name: str, script: str, *args: str, **options) -> str:
        return run_script_in_env(env_for(env_name), script, *args, **options)

    return run
