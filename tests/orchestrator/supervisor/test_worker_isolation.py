"""Real workers see their env's packages first, never the user's site-packages, and nothing a user keeps in a
config folder or the current directory shadows an installed package. (Which variables they see:
test_worker_env.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.envs import Env
from tests.support.paths import FIXTURES

PROBE = "isolation_probe.IsolationProbe"
STRAY_NUMPY = 'raise ImportError("a stray numpy.py shadowed the installed numpy")\n'


def stray_folder(tmp_path: Path, name: str) -> Path:
    """A folder like a config folder or a working directory, holding a module named like an installed package."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "numpy.py").write_text(STRAY_NUMPY)
    return folder


def test_a_stray_module_in_a_user_code_folder_does_not_shadow_installed_packages(make_handle, tmp_path: Path,
                                                                                 ocr_env: Env) -> None:
    config_dir = stray_folder(tmp_path, "config")
    seen = make_handle(class_path=PROBE, code_dirs=(config_dir,)).call({})
    assert Path(seen["numpy"]).is_relative_to(ocr_env.prefix)
    path = seen["sys_path"]
    site_packages = max(i for i, entry in enumerate(path) if entry.startswith(str(ocr_env.prefix)))
    assert path.index(str(FIXTURES)) > site_packages and path.index(str(config_dir)) > site_packages


def test_a_stray_module_in_the_current_directory_does_not_shadow_installed_packages(
        make_handle, tmp_path: Path, ocr_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = stray_folder(tmp_path, "cwd")
    monkeypatch.chdir(cwd)
    seen = make_handle(class_path=PROBE).call({})
    assert Path(seen["numpy"]).is_relative_to(ocr_env.prefix)
    assert str(cwd) not in seen["sys_path"] and "" not in seen["sys_path"]


def test_the_user_site_packages_are_off(make_handle) -> None:
    """uv venvs already skip the user's site-packages, but conda envs and existing interpreters would not."""
    assert make_handle(class_path=PROBE).call({})["no_user_site"] == 1
