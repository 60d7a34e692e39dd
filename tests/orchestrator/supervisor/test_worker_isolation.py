"""Real workers see their env's packages first, never the user's site-packages, and only the parent variables
they may: no loader injection, no credentials unless declared or passed on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.envs import Env
from orchestrator.supervisor.launch import worker_environ
from orchestrator.supervisor.passthrough import PASS_ENV_VAR, is_credential
from tests.orchestrator.supervisor.conftest import FIXTURES

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


def test_loader_injection_never_passes_and_credentials_only_when_asked(make_handle,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    parent = {"LD_PRELOAD": "/nonexistent/inject.so", "LD_AUDIT": "/nonexistent/audit.so",
              "HF_TOKEN": "hf_secret", "AWS_SECRET_ACCESS_KEY": "aws_secret", "GITHUB_TOKEN": "gh_secret",
              "PGPASSWORD": "pg_secret", "TOKENIZERS_PARALLELISM": "false", "MY_MODEL_SETTING": "kept",
              PASS_ENV_VAR: "GITHUB_TOKEN, LD_AUDIT"}
    for name, value in parent.items():
        monkeypatch.setenv(name, value)
    environ = make_handle(class_path=PROBE).call({})["environ"]
    assert {name: environ.get(name) for name in parent if name != PASS_ENV_VAR} == {
        "LD_PRELOAD": None, "LD_AUDIT": None, "HF_TOKEN": None, "AWS_SECRET_ACCESS_KEY": None,
        "GITHUB_TOKEN": "gh_secret", "PGPASSWORD": None, "TOKENIZERS_PARALLELISM": "false",
        "MY_MODEL_SETTING": "kept"}


def test_a_model_declared_credential_passes(ocr_env: Env, tmp_path: Path) -> None:
    base = {"HF_TOKEN": "hf_secret", "AWS_PROFILE": "team", "LD_PRELOAD": "/x.so", "PATH": "/usr/bin"}
    environ = worker_environ(ocr_env, tmp_path, base=base, pass_names=("HF_TOKEN", "LD_PRELOAD"))
    assert (environ.get("HF_TOKEN"), environ.get("AWS_PROFILE"), environ.get("LD_PRELOAD")) == ("hf_secret", None, None)
    assert environ["PATH"] == "/usr/bin"


@pytest.mark.parametrize(("name", "secret"), [
    ("HF_TOKEN", True), ("HUGGING_FACE_HUB_TOKEN", True), ("GOOGLE_APPLICATION_CREDENTIALS", True),
    ("AZURE_STORAGE_CONNECTION_STRING", True), ("AWS_PROFILE", True), ("OPENAI_API_KEY", True),
    ("SSH_AUTH_SOCK", True), ("hf_token", True), ("TOKENIZERS_PARALLELISM", False), ("MAX_TOKENS", False),
    ("HF_HOME", False), ("CUDA_VISIBLE_DEVICES", False), ("PATH", False)])
def test_what_counts_as_a_credential(name: str, secret: bool) -> None:
    assert is_credential(name) is secret
