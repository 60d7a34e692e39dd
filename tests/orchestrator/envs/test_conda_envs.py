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
from orchestrator.errors import EnvBuildError
from orchestrator.settings import Settings
from orchestrator.supervisor.launch import worker_environ
from tests.support.conda_channel import ACTIVATION_VARIABLE, FOREIGN_PLATFORM
from tests.support.env_settings import cli_env, conda_settings, lock, write_env
from tests.support.envs import ensure_env
from tests.support.paths import ORCHESTRATOR

PROBE = """
import json, os, shutil, sys, orchpkg, six
from models import conda_utils
print(json.dumps({"orchpkg": orchpkg.__version__, "activation": os.environ.get(sys.argv[1]),
                  "ffmpeg": shutil.which("ffmpeg"), "prefix": sys.prefix, "executable": sys.executable,
                  "conda_prefix": os.environ.get("CONDA_PREFIX"), "default_env": os.environ.get("CONDA_DEFAULT_ENV"),
                  "in_env": [n for n in ("orch_one", "orch_two") if conda_utils.is_running_in_env(n)]}))
"""


def probe(env: Env, runtime_dir: Path) -> dict:
    base = {**os.environ, "CONDA_PREFIX": "/opt/parent-conda", "CONDA_DEFAULT_ENV": "parent", "CONDA_SHLVL": "3"}
    out = subprocess.run([str(env.python), "-c", PROBE, ACTIVATION_VARIABLE], env=worker_environ(env, runtime_dir,
                         base=base), capture_output=True, text=True, cwd=runtime_dir, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize(("name", "version"), [("orch_one", "1.0"), ("orch_two", "2.0")])
def test_worker_sees_its_envs_package_activation_and_tool(conda_envs: dict[str, Env], tmp_path: Path, name: str,
                                                          version: str) -> None:
    env = conda_envs[name]
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


def test_lock_is_byte_identical_on_relock_and_parses_with_conda_lock(conda_locked: Settings) -> None:
    from conda_lock.lockfile import parse_conda_lock_file

    path = conda_locked.envs_dir / "orch_two" / "conda-lock.yml"
    first = path.read_bytes()
    environ = {**cli_env(conda_locked), "ORCHESTRATOR_CONDA_CACHE": str(conda_locked.conda_cache)}
    relock = subprocess.run([*ORCHESTRATOR, "envs", "lock", "orch_two"], env=environ, capture_output=True, text=True,
                            timeout=300)
    assert relock.returncode == 0, relock.stderr
    assert "conda-lock.yml" in relock.stderr and "requirements.lock" in relock.stderr
    assert path.read_bytes() == first
    parsed = parse_conda_lock_file(path)
    by_name = {p.name: p for p in parsed.package}
    assert set(by_name) == {"python", "ffmpeg", "orchpkg"}
    assert by_name["orchpkg"].version == "2.0" and by_name["orchpkg"].url.startswith("http://127.0.0.1:")
    assert all(len(p.hash.sha256 or "") == 64 and p.platform == "linux-64" for p in parsed.package)


def test_lock_covers_every_declared_platform_and_builds_from_this_ones(conda_channel: Path, conda_locked: Settings,
                                                                      tmp_path: Path) -> None:
    from conda_lock.lockfile import parse_conda_lock_file

    settings = Settings(envs_dir=tmp_path / "envs", env_cache_dir=tmp_path / "cache",
                        conda_cache=conda_locked.conda_cache, find_links=conda_locked.find_links)
    write_env(settings.envs_dir, "orch_one", conda_channel.as_uri(), "1.0")
    spec_file = settings.envs_dir / "orch_one" / "environment.yml"
    spec_file.write_text(spec_file.read_text() + f"platforms: [{FOREIGN_PLATFORM}, linux-64]\n")
    lock(settings, "orch_one")
    parsed = parse_conda_lock_file(settings.envs_dir / "orch_one" / "conda-lock.yml")
    assert sorted(parsed.metadata.platforms) == ["linux-64", FOREIGN_PLATFORM]
    foreign = {p.name: p.url for p in parsed.package if p.platform == FOREIGN_PLATFORM}
    assert set(foreign) == {"python", "ffmpeg", "orchpkg"}
    assert f"/{FOREIGN_PLATFORM}/python-" in foreign["python"] and "/noarch/orchpkg-1.0" in foreign["orchpkg"]
    registry = EnvRegistry(settings)
    assert registry.check() == []
    env = registry.ensure("orch_one")
    assert probe(env, tmp_path)["orchpkg"] == "1.0"


def test_second_build_is_a_no_op_from_the_stored_entry(conda_envs: dict[str, Env], conda_locked: Settings) -> None:
    assert EnvRegistry(conda_locked).ensure("orch_one") == conda_envs["orch_one"]
    assert EnvRegistry(conda_locked).status("orch_one").built


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


def test_concurrent_builds_of_one_env_make_one_build(conda_locked: Settings, tmp_path: Path) -> None:
    settings = Settings(envs_dir=conda_locked.envs_dir, env_cache_dir=tmp_path / "cache",
                        conda_cache=conda_locked.conda_cache, find_links=conda_locked.find_links)
    environ = {**cli_env(settings), "ORCHESTRATOR_CONDA_CACHE": str(settings.conda_cache)}
    procs = [subprocess.Popen([*ORCHESTRATOR, "envs", "build", "orch_one"], env=environ, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    entries = [p for p in settings.env_cache_dir.iterdir() if p.is_dir()]
    assert len(entries) == 1, entries
    assert sum("ready in" in out for out in outputs) == 3
    assert probe(EnvRegistry(settings).ensure("orch_one"), tmp_path)["orchpkg"] == "1.0"


def test_envs_check_reports_a_spec_changed_after_its_conda_lock(conda_locked: Settings, tmp_path: Path) -> None:
    envs_dir = tmp_path / "envs"
    shutil.copytree(conda_locked.envs_dir, envs_dir)
    settings = Settings(envs_dir=envs_dir, env_cache_dir=tmp_path / "cache", conda_cache=conda_locked.conda_cache)
    assert EnvRegistry(settings).check() == []
    spec_file = envs_dir / "orch_one" / "environment.yml"
    spec_file.write_text(spec_file.read_text().replace("orchpkg=1.0", "orchpkg=2.0"))
    problems = EnvRegistry(settings).check()
    assert len(problems) == 1 and "orch_one" in problems[0] and "out of date" in problems[0]


def test_offline_build_from_the_package_cache(conda_locked: Settings, conda_envs: dict[str, Env],
                                              tmp_path: Path) -> None:
    """The http env builds again on a second cache root with its channel unreachable: packages come from
    the conda cache the first build filled (the channel is mirrored to a closed port)."""
    envs_dir = tmp_path / "envs"
    shutil.copytree(conda_locked.envs_dir, envs_dir)
    unreachable = "http://127.0.0.1:9"
    settings = Settings(envs_dir=envs_dir, env_cache_dir=tmp_path / "cache", conda_cache=conda_locked.conda_cache,
                        find_links=conda_locked.find_links,
                        conda_mirrors=((EnvRegistry(conda_locked).spec("orch_two").channels[0], unreachable),))
    env = EnvRegistry(settings).ensure("orch_two")
    assert probe(env, tmp_path)["orchpkg"] == "2.0"


@pytest.mark.skipif(shutil.which("conda-lock") is None and not (Path(sys.executable).parent / "conda-lock").exists()
                    or not any(shutil.which(n) for n in ("micromamba", "mamba", "conda")),
                    reason="`conda-lock install` needs micromamba, mamba or conda, and none is installed here")
def test_conda_lock_install_of_the_same_file_gives_the_same_packages(conda_locked: Settings, conda_envs: dict[str, Env],
                                                                     tmp_path: Path) -> None:
    conda_lock = shutil.which("conda-lock") or str(Path(sys.executable).parent / "conda-lock")
    prefix = tmp_path / "by-conda-lock"
    subprocess.run([conda_lock, "install", "--prefix", str(prefix), str(conda_locked.envs_dir / "orch_one" /
                    "conda-lock.yml")], check=True, timeout=600)
    installed = sorted(p.name for p in (prefix / "conda-meta").glob("*.json"))
    assert installed == sorted(p.name for p in (conda_envs["orch_one"].prefix / "conda-meta").glob("*.json"))


CONDA_PIPELINE = """\
inputs: [{video}]
output: {output}
stages:
  - {{name: shots, split: models.transnetv2.TransNetV2ShotDetector, frames: {{size: [48, 27]}}}}
  - name: where
    model: controlled_model.ControlledModel
    params: {{env: orch_one, returns: info}}
    frames: {{sampling: per_second, rate: 2, size: [32, 24]}}
"""


def test_pipeline_stage_runs_in_a_conda_env(conda_locked: Settings, conda_envs: dict[str, Env], tmp_path: Path) -> None:
    """`orchestrator run`: the shot split in the project's uv env (given as an existing interpreter, so the
    test does not rebuild torch), a model stage in the conda env."""
    from orchestrator.sample_video import generate_sample
    from tests.orchestrator.pipeline.runs import FIXTURES, outputs, run

    splitting = ensure_env("video_splitting")
    envs_dir = tmp_path / "envs"
    shutil.copytree(conda_locked.envs_dir / "orch_one", envs_dir / "orch_one")
    shutil.copytree(Settings().envs_dir / "video_splitting", envs_dir / "video_splitting")
    video = tmp_path / "sample.mp4"
    shots = generate_sample(video)
    shutil.copy(FIXTURES / "controlled_model.py", tmp_path / "controlled_model.py")
    config = tmp_path / "conda.yaml"
    config.write_text(CONDA_PIPELINE.format(video=video, output=tmp_path / "out"))
    result = run(config, environ={"ORCHESTRATOR_ENVS_DIR": str(envs_dir),
                                  "ORCHESTRATOR_ENV_CACHE": str(conda_locked.env_cache_dir),
                                  "ORCHESTRATOR_CONDA_CACHE": str(conda_locked.conda_cache),
                                  "ORCHESTRATOR_ENV_PYTHON_VIDEO_SPLITTING": str(splitting.python)})
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(tmp_path / "out")
    assert len(rows) == len(shots) and summary["failures"] == []
    assert {row["where"]["executable"] for row in rows} == {str(conda_envs["orch_one"].python)}
    assert {row["where"]["python"] for row in rows} == {"3.12"}
