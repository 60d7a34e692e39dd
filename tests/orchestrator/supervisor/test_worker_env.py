"""What a real worker finds in os.environ: the variables it needs, those asked for by name or pattern, never a
credential of the parent's (a database URL, an API key, a password, a proxy URL with a password) nor a loader
injection."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.envs import Env
from orchestrator.supervisor.launch import worker_environ
from orchestrator.supervisor.worker_variables import PASS_ENV_VAR, passed_environ

PROBE = "isolation_probe.IsolationProbe"

KEPT_BACK = {
    "DATABASE_URL": "postgres://app:hunter2@db.internal/prod", "KAGGLE_KEY": "0123456789abcdef",
    "KAGGLE_USERNAME": "someone", "MY_PASSWD": "hunter2", "SERVICE_PASS": "hunter2", "HF_TOKEN": "hf_secret",
    "AWS_SECRET_ACCESS_KEY": "aws_secret", "PGPASSWORD": "pg_secret", "SENTRY_DSN": "https://key@sentry.io/1",
    "https_proxy": "http://alice:s3cret@proxy.internal:3128", "ALL_PROXY": "socks5://bob:pw@proxy:1080",
    "MY_MODEL_SETTING": "not asked for", "LD_PRELOAD": "/nonexistent/inject.so", "LD_AUDIT": "/nonexistent/a.so",
}  # fmt: skip
NEEDED = {
    "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "Europe/Paris", "TERM": "xterm", "USER": "tester",
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "NVIDIA_DRIVER_CAPABILITIES": "compute", "OMP_SCHEDULE": "static",
    "MKL_CBWR": "AUTO", "HF_HOME": "/data/hf", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    "http_proxy": "http://proxy.internal:3128", "HTTPS_PROXY": "http://alice@proxy.internal:3128",
    "no_proxy": "localhost,127.0.0.1,.internal",
}  # fmt: skip
ASKED = {"GITHUB_TOKEN": "gh_secret", "MYAPP_MODE": "fast", "MYAPP_LEVEL": "3"}


def test_a_worker_sees_what_it_needs_and_what_was_asked_for_and_no_credential(
        make_handle, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**KEPT_BACK, **NEEDED, **ASKED}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(PASS_ENV_VAR, "GITHUB_TOKEN, MYAPP_*  LD_AUDIT")
    environ = make_handle(class_path=PROBE).call({})["environ"]
    assert {name: environ[name] for name in KEPT_BACK if name in environ} == {}
    assert {name: environ.get(name) for name in {**NEEDED, **ASKED}} == {**NEEDED, **ASKED}
    assert environ["PATH"] and environ["HOME"]


def test_a_name_asked_for_passes_and_loader_injection_never(ocr_env: Env, tmp_path: Path) -> None:
    base = {"HF_TOKEN": "hf_secret", "AWS_PROFILE": "team", "LD_PRELOAD": "/x.so", "PATH": "/usr/bin",
            "LD_LIBRARY_PATH": "/usr/local/cuda/lib64", PASS_ENV_VAR: "HF_TOKEN LD_PRELOAD"}
    environ = worker_environ(ocr_env, tmp_path, base=base)
    assert (environ.get("HF_TOKEN"), environ.get("AWS_PROFILE"), environ.get("LD_PRELOAD")) == ("hf_secret", None, None)
    assert (environ["PATH"], environ["LD_LIBRARY_PATH"]) == ("/usr/bin", "/usr/local/cuda/lib64")


@pytest.mark.parametrize(("value", "passed"), [
    ("http://proxy:3128", True), ("http://user@proxy:3128", True), ("proxy.internal:3128", True),
    ("http://user:pw@proxy:3128", False), ("user:pw@proxy:3128", False), ("https://:token@proxy", False),
    ("http://proxy:3128,http://u:p@other:3128", False), ("http://[::1@x", False)])
def test_a_proxy_passes_only_without_a_password(value: str, passed: bool) -> None:
    assert ("https_proxy" in passed_environ({"https_proxy": value})) is passed
