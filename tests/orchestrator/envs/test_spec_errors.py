"""Bad declarations and stale locks give one clear line naming the file, field or env."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.envs import EnvRegistry
from orchestrator.envs.locking import check_uv_lock, reject_cuda_packages
from orchestrator.envs.spec import load_spec
from orchestrator.errors import EnvSpecError, LockError
from orchestrator.settings import Settings


def write_spec(envs_dir: Path, name: str, text: str) -> None:
    (envs_dir / name).mkdir(parents=True, exist_ok=True)
    (envs_dir / name / "environment.yml").write_text(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dependencies: [python=3.11\n  - pip", "line 2 is not valid YAML"),
        ("- just a list", "expected a mapping"),
        ("dependencies:\n  - pip\n", "needs the interpreter version"),
        ("dependencies:\n  - python\n", "field 'dependencies[0]' must pin a version"),
        ("dependencies:\n  - python=3.11\n  - pip: [3]\n", "field 'dependencies[1].pip[0]' must be a requirement"),
        ("dependencies:\n  - python=3.11\n  - pip: nope\n", "field 'dependencies[1]' must be 'pip:'"),
        ("name: other\ndependencies:\n  - python=3.11\n", "field 'name' is 'other' but the folder is 'bad'"),
        ("platforms: [linux64]\ndependencies:\n  - python=3.11\n", "field 'platforms' must be a list of conda subdirs"),
        ("channels: [1]\ndependencies:\n  - python=3.11\n", "field 'channels' must be a list of channel names"),
        ("dependencies: python\n", "field 'dependencies' must be a list"),
    ],
)
def test_malformed_spec_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    write_spec(tmp_path, "bad", text)
    with pytest.raises(EnvSpecError) as err:
        load_spec(tmp_path, "bad")
    assert message in str(err.value)
    assert str(tmp_path / "bad" / "environment.yml") in str(err.value)


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", ""])
def test_env_name_with_path_characters_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(EnvSpecError, match="is invalid"):
        EnvRegistry(Settings(envs_dir=tmp_path, env_cache_dir=tmp_path / "c")).spec(name)


def test_unknown_env_lists_known_ones(tmp_path: Path) -> None:
    write_spec(tmp_path, "alpha", "dependencies:\n  - python=3.11\n")
    with pytest.raises(EnvSpecError, match=r"unknown env 'beta'.*known envs: alpha"):
        EnvRegistry(Settings(envs_dir=tmp_path, env_cache_dir=tmp_path / "c")).spec("beta")


def test_conda_only_dependency_refused_by_uv_backend(tmp_path: Path) -> None:
    write_spec(tmp_path, "needs_conda", "dependencies:\n  - python=3.11\n  - ffmpeg=6\n")
    registry = EnvRegistry(Settings(envs_dir=tmp_path, env_cache_dir=tmp_path / "c", backend="uv"))
    with pytest.raises(EnvSpecError, match=r"conda packages \[.ffmpeg=6.\].*unset ORCHESTRATOR_ENV_BACKEND"):
        registry.ensure("needs_conda")


def test_missing_interpreter_version_is_named(tmp_path: Path) -> None:
    write_spec(tmp_path, "old", "dependencies:\n  - python=2.1\n")
    (tmp_path / "old" / "requirements.lock").write_text("")
    spec = load_spec(tmp_path, "old")
    from orchestrator.envs.interpreters import find_interpreter

    with pytest.raises(EnvSpecError, match=r"env 'old' needs Python 2.1 but none is installed.*pyenv install 2.1"):
        find_interpreter(spec.python_version, spec.name)


def test_missing_and_stale_locks_name_the_fix(tmp_path: Path, tiny_envs_dir: Path) -> None:
    write_spec(tmp_path, "unlocked", "dependencies:\n  - python=3.11\n")
    with pytest.raises(LockError, match="is missing; run `orchestrator envs lock unlocked`"):
        check_uv_lock(load_spec(tmp_path, "unlocked"))
    write_spec(tmp_path, "tiny", (tiny_envs_dir / "tiny" / "environment.yml").read_text() + "      - idna\n")
    (tmp_path / "tiny" / "requirements.lock").write_bytes((tiny_envs_dir / "tiny" / "requirements.lock").read_bytes())
    with pytest.raises(LockError, match="out of date with .*; run `orchestrator envs lock tiny`"):
        check_uv_lock(load_spec(tmp_path, "tiny"))
    check_uv_lock(load_spec(tiny_envs_dir, "tiny"))


def test_lock_pulling_cuda_builds_is_refused(tiny_envs_dir: Path) -> None:
    spec = load_spec(tiny_envs_dir, "tiny")
    with pytest.raises(LockError, match=r"CUDA builds \(nvidia-cublas-cu12, torch\)"):
        reject_cuda_packages(spec, "nvidia-cublas-cu12==12.1 \\\ntorch==2.5.0 \\\n")
    reject_cuda_packages(spec, "torch==2.13.0+cpu \\\n")


def test_project_locks_match_their_specs() -> None:
    assert EnvRegistry(Settings.from_environ()).check() == []


def test_conda_env_without_channels_is_named(tmp_path: Path) -> None:
    write_spec(tmp_path, "nochannels", "dependencies:\n  - python=3.12\n  - ffmpeg\n")
    (tmp_path / "nochannels" / "requirements.lock").write_text("")
    registry = EnvRegistry(Settings(envs_dir=tmp_path, env_cache_dir=tmp_path / "c"))
    from orchestrator.envs.locking import compile_conda_lock

    with pytest.raises(EnvSpecError, match=r"env 'nochannels' has conda packages but no 'channels:'"):
        compile_conda_lock(registry.spec("nochannels"), registry.settings)
    assert registry.backend_for(registry.spec("nochannels")).name == "conda"
    assert "conda-lock.yml is missing" in registry.check()[0]

