"""Workers in real envs: a runtime dir per test and a factory for handles on the controlled model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.envs import Env
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.policy import StopGrace, WorkerPolicy
from tests.support.paths import FIXTURES

CONTROLLED = "controlled_model.ControlledModel"


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
