"""A pixi workspace env (pixi.toml + pixi.lock) builds from its lock with rattler, conda and PyPI packages alike."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import rattler

from orchestrator.envs import EnvRegistry
from orchestrator.errors import EnvBuildError
from orchestrator.settings import Settings
from orchestrator.supervisor.launch import worker_environ
from tests.support.conda_channel import ACTIVATION_VARIABLE, tiny_wheel
from tests.support.env_settings import conda_settings

MANIFEST = """\
[workspace]
name = "curation"
channels = ["{channel}"]
platforms = ["linux-64"]

[dependencies]
python = "3.12.*"
ffmpeg = "*"
orchpkg = "2.*"

[pypi-dependencies]
pixiwheel = "*"
"""


def write_pixi_workspace(folder: Path, channel: str, wheel: Path) -> None:
    """What `pixi lock` writes, made with rattler's own lock writer (pixi is not installed here)."""

    async def locked() -> None:
        records = await rattler.solve([rattler.Channel(channel)], ["python 3.12.*", "ffmpeg", "orchpkg 2.*"],
                                      platforms=["linux-64", "noarch"])
        platform = rattler.LockPlatform("linux-64")
        lock = rattler.LockFile([platform])
        lock.set_channels("default", [rattler.LockChannel(channel)])
        for record in records:
            lock.add_conda_package("default", platform, record)
        lock.add_pypi_package("default", platform, "pixiwheel", "1.0", wheel.as_uri())
        lock.to_path(folder / "pixi.lock")

    folder.mkdir(parents=True)
    (folder / "pixi.toml").write_text(MANIFEST.format(channel=channel))
    asyncio.run(locked())
    gc.collect()
    sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
    text = (folder / "pixi.lock").read_text()
    entry = f"- pypi: {wheel.as_uri()}\n  name: pixiwheel\n  version: '1.0'\n"
    assert entry in text, text
    (folder / "pixi.lock").write_text(text.replace(entry, f"{entry}  sha256: {sha256}\n"))


@pytest.fixture
def pixi_settings(conda_channel: Path, conda_locked: Settings, tmp_path: Path) -> Settings:
    """A workspace beside the conda envs' download cache (its archives are keyed by their sha256)."""
    own = conda_settings(tmp_path)
    settings = Settings(envs_dir=own.envs_dir, env_cache_dir=own.env_cache_dir, conda_cache=conda_locked.conda_cache,
                        find_links=own.find_links)
    wheel = tiny_wheel(tmp_path, "pixiwheel", "1.0")
    write_pixi_workspace(settings.envs_dir / "orch_pixi", conda_channel.as_uri(), wheel)
    return settings


PROBE = """
import json, os, shutil, sys, orchpkg, pixiwheel
print(json.dumps({"orchpkg": orchpkg.__version__, "pixiwheel": pixiwheel.__version__, "prefix": sys.prefix,
                  "activation": os.environ.get(sys.argv[1]), "ffmpeg": shutil.which("ffmpeg")}))
"""


def test_pixi_env_builds_from_its_lock(pixi_settings: Settings, tmp_path: Path) -> None:
    registry = EnvRegistry(pixi_settings)
    assert registry.names() == ["orch_pixi"]
    env = registry.ensure("orch_pixi")
    assert env.backend == "pixi" and registry.check() == []
    out = subprocess.run([str(env.python), "-c", PROBE, ACTIVATION_VARIABLE], capture_output=True, text=True,
                         env=worker_environ(env, tmp_path), cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen == {"orchpkg": "2.0", "pixiwheel": "1.0", "prefix": str(env.prefix),
                    "activation": str(env.prefix / "share" / "ffmpeg"), "ffmpeg": str(env.prefix / "bin" / "ffmpeg")}
    assert registry.ensure("orch_pixi") == env


def test_pixi_pypi_package_whose_file_changed_is_refused(pixi_settings: Settings, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    tiny_wheel(other, "pixiwheel", "1.0", extra="changed = True\n").replace(tmp_path / "pixiwheel-1.0-py3-none-any.whl")
    with pytest.raises(EnvBuildError, match=r"installing the PyPI packages of env 'orch_pixi' failed") as refused:
        EnvRegistry(pixi_settings).ensure("orch_pixi")
    assert "hash" in str(refused.value).lower()
    assert not EnvRegistry(pixi_settings).status("orch_pixi").built
