"""Suite-wide guards (no test may leave a child process or a shared-memory segment behind), the project envs, and
a real S3-compatible server on loopback."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import psutil
import pytest

from orchestrator.envs import Env
from tests.fixtures.sentinels import parent_watched
from tests.support.envs import ensure_env
from tests.support.s3_store import aws_environ
from workers.shm_ring import NAME_PREFIX, SHM_DIR


@pytest.fixture(scope="session", autouse=True)
def resource_tracker_running() -> None:
    """Start multiprocessing's resource tracker up front: the first shared-memory ring would otherwise
    start it as a long-lived child inside whichever test creates that ring."""
    resource_tracker.ensure_running()


@pytest.fixture(scope="session")
def env_for() -> Callable[[str], Env]:
    """The one way tests get a project env: built (or found) from its lock once per session."""
    return ensure_env


@pytest.fixture(scope="session")
def ocr_env(env_for: Callable[[str], Env]) -> Env:
    """The env most worker tests run the controlled model in."""
    return env_for("ocr")


@pytest.fixture(scope="session")
def video_splitting(env_for: Callable[[str], Env]) -> Env:
    """The env with torch."""
    return env_for("video_splitting")


@pytest.fixture(autouse=True)
def no_leaked_shm_segments() -> Iterator[None]:
    ours = f"{NAME_PREFIX}{os.getpid()}-*"  # other processes on the machine may hold rings of their own
    before = set(Path(SHM_DIR).glob(ours))
    yield
    leaked = set(Path(SHM_DIR).glob(ours)) - before
    assert not leaked, f"test left shared-memory segments behind: {sorted(map(str, leaked))}"


@pytest.fixture(autouse=True)
def no_leaked_children():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    leaked = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    alive = []
    for proc in leaked:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
        proc.kill()
    assert not alive, f"test leaked child processes: {alive}"


@pytest.fixture
def parent_imports(tmp_path: Path) -> Iterator[Callable[[], list[str]]]:
    """Sentinel torch, transformers, onnxruntime and safetensors on this process's path for the test
    (tests/fixtures/sentinels): call the fixture's value to list those this process imported meanwhile."""
    with parent_watched(tmp_path / "sentinel-imports.log") as imported:
        yield imported


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto) on 127.0.0.1, one per session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; boto3 reaches it through the standard environment variables only."""
    for key, value in aws_environ(s3_endpoint).items():
        monkeypatch.setenv(key, value)
    import boto3.session

    bucket = f"bucket-{uuid.uuid4().hex[:12]}"
    boto3.session.Session().client("s3").create_bucket(Bucket=bucket)
    return bucket
