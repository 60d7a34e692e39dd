"""Envs folders and caches of a test's own: conda env specs on the local channel, settings, the CLI's variables."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.envs import EnvRegistry
from orchestrator.envs.locking import compile_conda_lock, compile_uv_lock
from orchestrator.settings import Settings

CONDA_SPEC = """\
name: {name}
channels:
  - {channel}
dependencies:
  - python=3.12
  - ffmpeg
  - orchpkg={version}
  - pip
  - pip:
      - six==1.17.0
"""


def cli_env(settings: Settings) -> dict[str, str]:
    """Variables that point the `orchestrator` CLI at a test's envs folder and cache."""
    return {**os.environ, "ORCHESTRATOR_ENVS_DIR": str(settings.envs_dir),
            "ORCHESTRATOR_ENV_CACHE": str(settings.env_cache_dir)}


def write_env(envs_dir: Path, name: str, channel: str, version: str) -> None:
    (envs_dir / name).mkdir(parents=True, exist_ok=True)
    (envs_dir / name / "environment.yml").write_text(CONDA_SPEC.format(name=name, channel=channel, version=version))


def conda_settings(root: Path) -> Settings:
    return Settings(envs_dir=root / "envs", env_cache_dir=root / "cache", conda_cache=root / "rattler",
                    find_links=Settings.from_environ().find_links)


def lock(settings: Settings, name: str) -> None:
    spec = EnvRegistry(settings).spec(name)
    compile_conda_lock(spec, settings)
    compile_uv_lock(spec, settings.find_links)
