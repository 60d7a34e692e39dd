"""NVDEC/NVENC are used only where they open: on a machine without a GPU's video engines (this one), a run
that has GPUs says once why media stays on the CPU, and a run without GPUs (or with `hardware: off`) says
nothing. The probe is real: it opens FFmpeg's NVENC encoder."""

from __future__ import annotations

import pytest

from orchestrator.pipeline.media.hardware import hardware_problem, use_hardware

pytestmark = pytest.mark.skipif(hardware_problem() is None, reason="this machine can use NVENC")


def test_a_run_with_gpus_but_no_usable_video_engines_warns_once_and_stays_on_the_cpu() -> None:
    said: list[str] = []
    assert use_hardware("auto", 2, said.append) is False
    assert len(said) == 1 and said[0].startswith("media workers decode and encode on the CPU: the run has 2 GPU(s)")
    assert "h264_nvenc" in said[0] and "hardware: off" in said[0]


@pytest.mark.parametrize(("setting", "gpus"), [("auto", 0), ("off", 2)])
def test_no_gpu_or_hardware_off_uses_the_cpu_silently(setting: str, gpus: int) -> None:
    said: list[str] = []
    assert use_hardware(setting, gpus, said.append) is False
    assert said == []
