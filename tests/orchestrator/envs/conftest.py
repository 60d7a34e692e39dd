"""Fixtures: the project's envs built once per session, a tiny env for cache behaviour, a local conda channel."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.envs import Env, EnvRegistry
from orchestrator.envs.locking import compile_uv_lock
from orchestrator.envs.spec import load_spec
from orchestrator.settings import Settings
from tests.support.env_settings import conda_settings, lock, write_env
from tests.support.envs import PROJECT_ENVS

TINY_SPEC = """\
name: tiny
dependencies:
  - python=3.11
  - pip
  - pip:
      - six==1.17.0
"""


@pytest.fixture(scope="session")
def project_envs(env_for: Callable[[str], Env]) -> dict[str, Env]:
    return {name: env_for(name) for name in PROJECT_ENVS}


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
