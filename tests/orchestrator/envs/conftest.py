"""Fixtures: the project's envs built once per session, a tiny env for cache behaviour, a local conda channel."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.envs import Env, EnvRegistry
from orchestrator.envs.locking import compile_conda_lock, compile_uv_lock
from orchestrator.envs.spec import load_spec
from orchestrator.settings import Settings

PROJECT_ENVS = ("video_splitting", "ocr", "content_filter")
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
TINY_SPEC = """\
name: tiny
dependencies:
  - python=3.11
  - pip
  - pip:
      - six==1.17.0
"""


@pytest.fixture(scope="session")
def project_envs() -> dict[str, Env]:
    registry = EnvRegistry()
    return {name: registry.ensure(name) for name in PROJECT_ENVS}


@pytest.fixture(scope="session")
def tiny_envs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An envs folder holding one small env, locked once per session."""
    envs_dir = tmp_path_factory.mktemp("envs")
    (envs_dir / "tiny").mkdir()
    (envs_dir / "tiny" / "environment.yml").write_text(TINY_SPEC)
    compile_uv_lock(load_spec(envs_dir, "tiny"), Settings.from_environ().find_links)
    return envs_dir


@pytest.fixture
def tiny_settings(tiny_envs_dir: Path, tmp_path: Path) -> Settings:
    envs_dir = tmp_path / "envs"
    shutil.copytree(tiny_envs_dir, envs_dir)
    base = Settings.from_environ()
    return Settings(envs_dir=envs_dir, env_cache_dir=tmp_path / "cache", find_links=base.find_links)


def cli_env(settings: Settings) -> dict[str, str]:
    """Variables that point the `orchestrator` CLI at a test's envs folder and cache."""
    import os

    return {**os.environ, "ORCHESTRATOR_ENVS_DIR": str(settings.envs_dir),
            "ORCHESTRATOR_ENV_CACHE": str(settings.env_cache_dir)}


ORCHESTRATOR = [sys.executable, "-m", "orchestrator.cli"]


@pytest.fixture(scope="session")
def conda_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local conda channel (python from pyenv's 3.12, ffmpeg with an activate.d script, orchpkg 1.0/2.0)."""
    from orchestrator.envs.interpreters import find_interpreter
    from tests.support.conda_channel import build_channel

    interpreter = find_interpreter("3.12", "conda-test-channel")
    prefix = interpreter.path.resolve().parent.parent
    if not (prefix / "lib" / "python3.12" / "os.py").is_file():
        pytest.fail(f"the conda test channel repacks a self-contained CPython 3.12 prefix (pyenv's); {prefix} is "
                    f"not one: `pyenv install 3.12`")
    return build_channel(tmp_path_factory.mktemp("conda-channel") / "channel", prefix, interpreter.version)


@pytest.fixture(scope="session")
def http_channel(conda_channel: Path) -> Iterator[str]:
    """The same channel served over http on 127.0.0.1."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(conda_channel)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


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


@pytest.fixture(scope="session")
def conda_locked(conda_channel: Path, http_channel: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two envs pinning different orchpkg versions, one solved over file://, the other over http."""
    settings = conda_settings(tmp_path_factory.mktemp("conda-envs"))
    write_env(settings.envs_dir, "orch_one", conda_channel.as_uri(), "1.0")
    write_env(settings.envs_dir, "orch_two", http_channel, "2.0")
    for name in ("orch_one", "orch_two"):
        lock(settings, name)
    return settings


@pytest.fixture(scope="session")
def conda_envs(conda_locked: Settings) -> dict[str, Env]:
    registry = EnvRegistry(conda_locked)
    return {name: registry.ensure(name) for name in ("orch_one", "orch_two")}
