"""Workers in real envs: a runtime dir per test and a factory for handles on the controlled model."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.envs import Env, EnvRegistry
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.policy import StopGrace, WorkerPolicy

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CONTROLLED = "controlled_model.ControlledModel"


@pytest.fixture(scope="session")
def ocr_env() -> Env:
    return EnvRegistry().ensure("ocr")


@pytest.fixture
def make_handle(tmp_path: Path, ocr_env: Env) -> Iterator[Callable[..., WorkerHandle]]:
    handles: list[WorkerHandle] = []

    def make(params: dict | None = None, *, env: Env | None = None, class_path: str = CONTROLLED,
             policy: WorkerPolicy | None = None, start: bool = True, code_dirs: tuple[Path, ...] = (),
             **spec_fields) -> WorkerHandle:
        env = env or ocr_env
        env_param = {"env": env.name} if class_path.startswith(("controlled_model.", "isolation_probe.")) else {}
        model = ModelRef(class_path, {**env_param, **(params or {})})
        spec = WorkerSpec(f"test/{len(handles)}", env, model, (FIXTURES, *code_dirs), **spec_fields)
        handle = WorkerHandle(spec, tmp_path, policy or WorkerPolicy(stop=StopGrace(2, 2)))
        handles.append(handle)
        if start:
            handle.start()
        return handle

    yield make
    for handle in handles:
        handle.close()


def fake_env(tmp_path: Path, script: str, name: str = "fake") -> Env:
    """An env whose 'interpreter' is a shell script: stands in for a broken or foreign worker."""
    python = tmp_path / f"{name}-python"
    python.write_text("#!/bin/sh\n" + script + "\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return Env(name, "existing", tmp_path, python)
