"""A real worker sees the GPUs the parent packed for it, translated through the parent's own CUDA_VISIBLE_DEVICES,
and torch in it is capped to its share of one GPU.

There is no GPU here, so the cap's decision (`workers.gpu.apply_memory_cap`, run by the worker before model
setup) is exercised against a stand-in `torch` (tests/fixtures/fake_torch) put on the worker's path: its `cuda`
reports a device when CUDA_VISIBLE_DEVICES names one and records each `set_per_process_memory_fraction` call.
The real allocator cap is checked on a GPU machine by bench/gpu_check.py.
"""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.pipeline.scaling.gpus import GpuAssignment
from tests.support.paths import FIXTURES
from workers.gpu import MEMORY_FRACTION_VAR

FAKE_TORCH = FIXTURES / "fake_torch"


@pytest.mark.parametrize(("assignment", "devices", "caps"), [
    (GpuAssignment((1,), 0.5), "7", [[0.5, 0]]),  # half of this process's second GPU, which is GPU 7
    (GpuAssignment((0, 1)), "5,7", None),          # whole GPUs: torch is not even imported for a cap
    (GpuAssignment(()), "", None),                 # CPU: no GPU, and the parent's own cap does not leak through
], ids=["share", "whole", "cpu"])
def test_worker_sees_its_translated_gpus_and_is_capped_to_its_share(
        make_handle, monkeypatch: pytest.MonkeyPatch, assignment: GpuAssignment, devices: str,
        caps: list | None) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # this process may use GPUs 5 and 7 only
    monkeypatch.setenv(MEMORY_FRACTION_VAR, "0.9")
    handle = make_handle(class_path="isolation_probe.IsolationProbe", code_dirs=(FAKE_TORCH,),
                         extra_environ=assignment.environ())
    seen = handle.call({})
    assert seen["environ"]["CUDA_VISIBLE_DEVICES"] == devices and handle.info.devices == devices
    assert seen["memory_fractions"] == caps


def test_a_gpu_beyond_those_the_parent_may_use_is_a_config_error() -> None:
    """`--gpus 3` while CUDA_VISIBLE_DEVICES names two GPUs: a clear error, not an IndexError."""
    with pytest.raises(ConfigError, match=r"GPU 2 .* CUDA_VISIBLE_DEVICES='5,7' lets this process use 2 GPUs"):
        GpuAssignment((2,)).environ({"CUDA_VISIBLE_DEVICES": "5,7"})
