"""The conda-lock backend, for real, where a conda executable and conda-lock exist."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.envs import EnvRegistry
from orchestrator.envs.backends import CondaBackend
from orchestrator.envs.locking import compile_conda_lock
from orchestrator.envs.tools import conda_executable, conda_lock_executable
from orchestrator.settings import Settings

pytestmark = pytest.mark.skipif(
    not CondaBackend.available(),
    reason=f"conda backend needs micromamba/mamba/conda (found: {conda_executable()}) and conda-lock "
    f"(found: {conda_lock_executable()}), plus reachable conda channels; none here",
)


def test_conda_env_builds_from_its_lock_and_captures_activation(tmp_path: Path) -> None:
    envs_dir = tmp_path / "envs"
    (envs_dir / "condatiny").mkdir(parents=True)
    (envs_dir / "condatiny" / "environment.yml").write_text(
        "name: condatiny\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pyzmq\n  - msgpack-python\n"
        "  - numpy\n"
    )
    settings = Settings(envs_dir=envs_dir, env_cache_dir=tmp_path / "cache", backend="conda")
    registry = EnvRegistry(settings)
    compile_conda_lock(registry.spec("condatiny"))
    env = registry.ensure("condatiny")
    assert env.backend == "conda"
    assert registry.ensure("condatiny") == env
    subprocess.run([str(env.python), "-c", "import zmq, msgpack, numpy"], env=env.launch_environ({}), check=True)
