"""GPU packing: whole GPUs, shares of one GPU, CPU, and the errors and warning a user sees."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.pipeline.scaling.gpus import (
    GpuAssignment,
    cpu_fallback_warning,
    detect_gpu_count,
    pack_replicas,
    place_replica,
)


def packed(demands: list[tuple[str, float]], n_gpus: int) -> list[tuple[tuple[int, ...], float | None]]:
    return [(a.devices, a.memory_fraction) for a in pack_replicas(demands, n_gpus)]


def test_four_quarters_share_one_gpu() -> None:
    assert packed([("ocr", 0.25)] * 4, 1) == [((0,), 0.25)] * 4


def test_halves_share_a_gpu_and_a_whole_gpu_stays_exclusive() -> None:
    assert packed([("ocr", 0.5), ("ocr", 0.5), ("embed", 1)], 2) == [((1,), 0.5), ((1,), 0.5), ((0,), None)]


def test_two_whole_gpus_and_a_half_on_three() -> None:
    assert packed([("big", 2), ("small", 0.5)], 3) == [((0, 1), None), ((2,), 0.5)]


def test_first_fit_decreasing_fills_gpus_and_keeps_input_order() -> None:
    demands = [("a", 0.25), ("b", 0.5), ("c", 0.75), ("d", 0.5), ("e", 0.1), ("f", 0.2), ("g", 0.7)]
    # largest first: c, g and b open GPUs 0, 1, 2; d tops up 2, a tops up 0, f and e top up 1 (all exactly full)
    assert packed(demands, 3) == [((0,), 0.25), ((2,), 0.5), ((0,), 0.75), ((2,), 0.5), ((1,), 0.1),
                                  ((1,), 0.2), ((1,), 0.7)]


def test_float_sums_that_reach_exactly_one_fit() -> None:
    assert {a.devices for a in pack_replicas([("a", 0.1), ("b", 0.2), ("c", 0.7)], 1)} == {(0,)}


@pytest.mark.parametrize(("placed", "num_gpus", "n_gpus", "expected"), [
    ([((0,), 0.5)], 0.5, 2, ((0,), 0.5)),                     # tops up the shared GPU before opening GPU 1
    ([((0,), 0.75), ((1,), 0.25)], 0.25, 2, ((0,), 0.25)),    # the fullest GPU it still fits on
    ([((0,), None), ((1,), 0.5)], 0.5, 2, ((1,), 0.5)),       # never onto a GPU a replica has whole
    ([((0,), None), ((1,), 0.5)], 0.75, 2, None),             # no room left
    ([((0,), None)], 1, 3, ((1,), None)),                     # a whole GPU on the lowest free one
    ([((0,), None), ((1,), 0.1)], 2, 3, None),                # two whole GPUs are not free
    ([((0,), 0.5)], 0.0, 1, ((), None)),                      # CPU stages need no GPU
    ([], 0.5, 0, ((), None)),                                 # no GPUs: every replica runs on CPU
])
def test_place_replica_follows_the_packing_rules_beside_replicas_already_placed(
    placed: list[tuple[tuple[int, ...], float | None]], num_gpus: float, n_gpus: int,
    expected: tuple[tuple[int, ...], float | None] | None
) -> None:
    got = place_replica([GpuAssignment(d, f) for d, f in placed], num_gpus, n_gpus)
    assert (None if got is None else (got.devices, got.memory_fraction)) == expected


def test_zero_gpus_demand_runs_on_cpu_even_when_gpus_exist() -> None:
    assert packed([("filter", 0.0), ("ocr", 1), ("filter", 0)], 1) == [((), None), ((0,), None), ((), None)]


def test_demand_beyond_the_gpus_names_totals_and_the_stage_to_lower() -> None:
    with pytest.raises(ConfigError) as caught:
        pack_replicas([("ocr", 0.5)] * 3 + [("embed", 1)] * 2, 3)
    message = str(caught.value)
    assert "ask for 3.5 GPUs in total (ocr 1.5, embed 2)" in message
    assert "4 GPUs once packed" in message and "but 3 are available" in message
    assert "lower replicas or num_gpus of stage 'embed'" in message


def test_shares_that_cannot_span_gpus_do_not_fit_although_their_sum_does() -> None:
    with pytest.raises(ConfigError, match=r"ask for 1\.8 GPUs in total .* 3 GPUs once packed .* but 2 are"):
        pack_replicas([("ocr", 0.6)] * 3, 2)


@pytest.mark.parametrize("num_gpus", [1.5, 2.25])
def test_fractions_above_one_are_rejected(num_gpus: float) -> None:
    with pytest.raises(ConfigError, match="stage 'ocr': num_gpus above 1 must be a whole number"):
        pack_replicas([("ocr", num_gpus)], 8)


@pytest.mark.parametrize("num_gpus", [-0.5, float("nan"), float("inf")])
def test_nonsense_demands_are_rejected(num_gpus: float) -> None:
    with pytest.raises(ConfigError, match="stage 'ocr': num_gpus must be 0"):
        pack_replicas([("ocr", num_gpus)], 8)


def test_no_gpus_puts_everything_on_cpu_with_one_warning_naming_the_models_that_declare_gpus() -> None:
    demands = [("ocr", 0.5), ("ocr", 0.5), ("filter", 0.0), ("embed", 2)]
    assert packed(demands, 0) == [((), None)] * 4
    warning = cpu_fallback_warning(demands, {"ocr": "models.rapidocr.RapidOCR", "embed": "my.Embedder"})
    assert warning is not None and "\n" not in warning
    assert warning.startswith("models 'models.rapidocr.RapidOCR' (stage 'ocr') declares num_gpus 0.5, "
                              "'my.Embedder' (stage 'embed') declares num_gpus 2, but no GPU was found")
    assert warning.endswith("they run on CPU, slowly") and "config" not in warning
    assert cpu_fallback_warning([("filter", 0.0)], {}) is None


def test_environ_for_cpu_whole_gpus_and_a_share() -> None:
    no_cap = {"ORCHESTRATOR_GPU_MEMORY_FRACTION": ""}
    assert GpuAssignment(()).environ({}) == {"CUDA_VISIBLE_DEVICES": "", **no_cap}
    assert GpuAssignment((0, 1)).environ({}) == {"CUDA_VISIBLE_DEVICES": "0,1", **no_cap}
    assert GpuAssignment((1,), 0.25).environ({}) == {"CUDA_VISIBLE_DEVICES": "1",
                                                      "ORCHESTRATOR_GPU_MEMORY_FRACTION": "0.25"}


def test_environ_translates_through_the_parents_own_restriction() -> None:
    parent = {"CUDA_VISIBLE_DEVICES": "2, GPU-abc"}
    assert GpuAssignment((0, 1)).environ(parent)["CUDA_VISIBLE_DEVICES"] == "2,GPU-abc"
    assert GpuAssignment((1,), 0.5).environ(parent)["CUDA_VISIBLE_DEVICES"] == "GPU-abc"


def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    binary = tmp_path / "nvidia-smi"
    binary.write_text("#!/bin/sh\n" + script + "\n")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))


LISTING = r"""printf 'GPU 0: NVIDIA H100 (UUID: GPU-a)\nGPU 1: NVIDIA H100 (UUID: GPU-b)\n'
printf '  MIG 1g.10gb Device 0: (UUID: MIG-c)\nGPU 2: NVIDIA H100 (UUID: GPU-d)\n'"""


@pytest.mark.parametrize(("visible", "expected"), [(None, 3), ("1,2", 2), ("0,1,2,3,4", 3), ("", 0)])
def test_detect_counts_listed_gpus_within_cuda_visible_devices(tmp_path, monkeypatch, visible, expected) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, LISTING)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert detect_gpu_count() == expected


def test_detect_is_zero_without_nvidia_smi_or_when_it_fails(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert detect_gpu_count() == 0
    fake_nvidia_smi(tmp_path, monkeypatch, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert detect_gpu_count() == 0
