"""A real worker sees exactly the GPU assignment the parent packed for it, and sets up with a share of one."""

from __future__ import annotations

import pytest

from orchestrator.pipeline.gpus import GpuAssignment


@pytest.mark.parametrize("assignment", [GpuAssignment((0,), 0.5), GpuAssignment((0, 1)), GpuAssignment(())])
def test_worker_sees_its_assignment(make_handle, monkeypatch, assignment: GpuAssignment) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # the parent's own restriction must not leak through
    monkeypatch.setenv("ORCHESTRATOR_GPU_MEMORY_FRACTION", "0.9")  # nor a cap set in the parent's environment
    environ = assignment.environ({})
    handle = make_handle({"returns": "environ"}, extra_environ=environ)
    assert handle.call({}) == {"cuda_visible_devices": environ["CUDA_VISIBLE_DEVICES"],
                               "memory_fraction": environ.get("ORCHESTRATOR_GPU_MEMORY_FRACTION")}
    assert handle.info["devices"] == environ["CUDA_VISIBLE_DEVICES"]
