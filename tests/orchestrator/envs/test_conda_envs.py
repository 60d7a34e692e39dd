"""Conda envs for real: rattler solves and installs from a local channel (file:// and http), workers run in them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.envs import Env, EnvRegistry
from orchestrator.envs.locking import compile_conda_lock, compile_uv_lock
from orchestrator.errors import EnvBuildError
from orchestrator.settings import Settings
from orchestrator.supervisor.launch import worker_environ
from tests.orchestrator.envs.conftest import ORCHESTRATOR, cli_env
from tests.support.conda_channel import ACTIVATION_VARIABLE

SPEC = """\
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
PROBE = """
import json, os, shutil, sys, orchpkg, six
from models import conda_utils
print(json.dumps({"orchpkg": orchpkg.__version__, "activation": os.environ.get(sys.argv[1]),
                  "ffmpeg": shutil.which("ffmpeg"), "prefix": sys.prefix, "executable": sys.executable,
                  "conda_prefix": os.environ.get("CONDA_PREFIX"), "default_env": os.environ.get("CONDA_DEFAULT_ENV"),
                  "in_env": [n for n in ("orch_one", "orch_two") if conda_utils.is_running_in_env(n)]}))
"""


def write_env(envs_dir: Path, name: str, channel: str, version: str) -> None:
    (envs_dir / name).mkdir(parents=True, exist_ok=True)
    (envs_dir / name / "environment.yml").write_text(SPEC.format(name=name, channel=channel, version=version))


def conda_settings(root: Path) -> Settings:
    return Settings(envs_dir=root / "envs", env_cache_dir=root / "cache", conda_cache=root / "rattler",
                    find_links=Settings.from_environ().find_links)


def lock(settings: Settings, name: str) -> None:
    spec = EnvRegistry(settings).spec(name)
    compile_conda_lock(spec, settings)
    compile_uv_lock(spec, settings.find_links)


@pytest.fixture(scope="module")
def locked(conda_channel: Path, http_channel: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two envs pinning different orchpkg versions, one solved over file://, the other over http."""
    settings = conda_settings(tmp_path_factory.mktemp("conda-envs"))
    write_env(settings.envs_dir, "orch_one", conda_channel.as_uri(), "1.0")
    write_env(settings.envs_dir, "orch_two", http_channel, "2.0")
    for name in ("orch_one", "orch_two"):
        lock(settings, name)
    return settings


@pytest.fixture(scope="module")
def built(locked: Settings) -> dict[str, Env]:
    registry = EnvRegistry(locked)
    return {name: registry.ensure(name) for name in ("orch_one", "orch_two")}


def probe(env: Env, runtime_dir: Path) -> dict:
    base = {**os.environ, "CONDA_PREFIX": "/opt/parent-conda", "CONDA_DEFAULT_ENV": "parent", "CONDA_SHLVL": "3"}
    out = subprocess.run([str(env.python), "-c", PROBE, ACTIVATION_VARIABLE], env=worker_environ(env, runtime_dir,
                         base=base), capture_output=True, text=True, cwd=runtime_dir, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize(("name", "version"), [("orch_one", "1.0"), ("orch_two", "2.0")])
def test_worker_sees_its_envs_package_activation_and_tool(built: dict[str, Env], tmp_path: Path, name: str,
                                                          version: str) -> None:
    env = built[name]
    seen = probe(env, tmp_path)
    assert env.backend == "conda"
    assert seen["orchpkg"] == version
    assert seen["activation"] == str(env.prefix / "share" / "ffmpeg")
    assert seen["ffmpeg"] == str(env.prefix / "bin" / "ffmpeg")
    assert Path(seen["prefix"]) == env.prefix and Path(seen["executable"]).is_relative_to(env.prefix)
    assert seen["conda_prefix"] == str(env.prefix) and seen["default_env"] != "parent"
    assert seen["in_env"] == [name]
    ffmpeg = subprocess.run(["ffmpeg", "-version"], env=env.launch_environ({"PATH": "/usr/bin:/bin"}),
                            capture_output=True, text=True, timeout=60)
    assert ffmpeg.stdout.startswith("ffmpeg version")


def test_lock_is_byte_identical_on_relock_and_parses_with_conda_lock(locked: Settings) -> None:
    from conda_lock.lockfile import parse_conda_lock_file

    path = locked.envs_dir / "orch_two" / "conda-lock.yml"
    first = path.read_bytes()
    compile_conda_lock(EnvRegistry(locked).spec("orch_two"), locked)
    assert path.read_bytes() == first
    parsed = parse_conda_lock_file(path)
    by_name = {p.name: p for p in parsed.package}
    assert set(by_name) == {"python", "ffmpeg", "orchpkg"}
    assert by_name["orchpkg"].version == "2.0" and by_name["orchpkg"].url.startswith("http://127.0.0.1:")
    assert all(len(p.hash.sha256 or "") == 64 and p.platform == "linux-64" for p in parsed.package)


def test_second_build_is_a_no_op_from_the_stored_entry(built: dict[str, Env], locked: Settings) -> None:
    assert EnvRegistry(locked).ensure("orch_one") == built["orch_one"]
    assert EnvRegistry(locked).status("orch_one").built


def test_a_package_that_no_longer_matches_the_lock_is_refused_naming_it(conda_channel: Path, tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    shutil.copytree(conda_channel, channel)
    settings = conda_settings(tmp_path)
    write_env(settings.envs_dir, "orch_one", channel.as_uri(), "1.0")
    lock(settings, "orch_one")
    shutil.copy(channel / "noarch" / "orchpkg-2.0-0.conda", channel / "noarch" / "orchpkg-1.0-0.conda")
    with pytest.raises(EnvBuildError) as refused:
        EnvRegistry(settings).ensure("orch_one")
    message = str(refused.value)
    assert "\n" not in message and "'orchpkg'" in message and "sha256" in message
    assert not EnvRegistry(settings).status("orch_one").built
    assert not [p for p in settings.env_cache_dir.iterdir() if p.is_dir()]


def test_concurrent_builds_of_one_env_make_one_build(locked: Settings, tmp_path: Path) -> None:
    settings = Settings(envs_dir=locked.envs_dir, env_cache_dir=tmp_path / "cache", conda_cache=locked.conda_cache,
                        find_links=locked.find_links)
    environ = {**cli_env(settings), "ORCHESTRATOR_CONDA_CACHE": str(settings.conda_cache)}
    procs = [subprocess.Popen([*ORCHESTRATOR, "envs", "build", "orch_one"], env=environ, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    entries = [p for p in settings.env_cache_dir.iterdir() if p.is_dir()]
    assert len(entries) == 1, entries
    assert sum("ready in" in out for out in outputs) == 3
    assert probe(EnvRegistry(settings).ensure("orch_one"), tmp_path)["orchpkg"] == "1.0"


def test_envs_check_reports_a_spec_changed_after_its_conda_lock(locked: Settings, tmp_path: Path) -> None:
    envs_dir = tmp_path / "envs"
    shutil.copytree(locked.envs_dir, envs_dir)
    settings = Settings(envs_dir=envs_dir, env_cache_dir=tmp_path / "cache", conda_cache=locked.conda_cache)
    assert EnvRegistry(settings).check() == []
    spec_file = envs_dir / "orch_one" / "environment.yml"
    spec_file.write_text(spec_file.read_text().replace("orchpkg=1.0", "orchpkg=2.0"))
    problems = EnvRegistry(settings).check()
    assert len(problems) == 1 and "orch_one" in problems[0] and "out of date" in problems[0]


def test_offline_build_from_the_package_cache(locked: Settings, built: dict[str, Env], tmp_path: Path) -> None:
    """The http env builds again on a second cache root with its channel unreachable: packages come from
    rattler's package cache the first build filled."""
    envs_dir = tmp_path / "envs"
    shutil.copytree(locked.envs_dir, envs_dir)
    unreachable = "http://127.0.0.1:9"
    settings = Settings(envs_dir=envs_dir, env_cache_dir=tmp_path / "cache", conda_cache=locked.conda_cache,
                        find_links=locked.find_links,
                        conda_mirrors=((EnvRegistry(locked).spec("orch_two").channels[0], unreachable),))
    env = EnvRegistry(settings).ensure("orch_two")
    assert probe(env, tmp_path)["orchpkg"] == "2.0"


@pytest.mark.skipif(shutil.which("conda-lock") is None and not (Path(sys.executable).parent / "conda-lock").exists()
                    or not any(shutil.which(n) for n in ("micromamba", "mamba", "conda")),
                    reason="`conda-lock install` needs micromamba, mamba or conda, and none is installed here")
def test_conda_lock_install_of_the_same_file_gives_the_same_packages(locked: Settings, built: dict[str, Env],
                                                                     tmp_path: Path) -> None:
    conda_lock = shutil.which("conda-lock") or str(Path(sys.executable).parent / "conda-lock")
    prefix = tmp_path / "by-conda-lock"
    subprocess.run([conda_lock, "install", "--prefix", str(prefix), str(locked.envs_dir / "orch_one" /
                    "conda-lock.yml")], check=True, timeout=600)
    installed = sorted(p.name for p in (prefix / "conda-meta").glob("*.json"))
    assert installed == sorted(p.name for p in (built["orch_one"].prefix / "conda-meta").glob("*.json"))
