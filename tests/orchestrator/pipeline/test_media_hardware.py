"""NVDEC/NVENC are used only where they open: on a machine without a GPU's video engines (this one), a run
that has GPUs says once why media stays on the CPU, and a run without GPUs (or with `hardware: off`) says
nothing. The probe is real: it opens FFmpeg's NVENC encoder."""

from __future__ import annotations

import pytest

from orchestrator.pipeline.config import PipelineConfig
from orchestrator.pipeline.media.hardware import hardware_problem, use_hardware
from orchestrator.pipeline.media.steps import MEDIA_MODEL, media_env, media_stages
from orchestrator.pipeline.stages import LocalWorkers, ResolvedStage

NO_VIDEO_ENGINES = pytest.mark.skipif(hardware_problem() is None, reason="this machine can use NVENC")


@NO_VIDEO_ENGINES
def test_a_run_with_gpus_but_no_usable_video_engines_warns_once_and_stays_on_the_cpu() -> None:
    said: list[str] = []
    assert use_hardware("auto", 2, said.append) is False
    assert len(said) == 1 and said[0].startswith("media workers decode and encode on the CPU: the run has 2 GPU(s)")
    assert "h264_nvenc" in said[0] and "hardware: off" in said[0]


@NO_VIDEO_ENGINES
@pytest.mark.parametrize(("setting", "gpus"), [("auto", 0), ("off", 2)])
def test_no_gpu_or_hardware_off_uses_the_cpu_silently(setting: str, gpus: int) -> None:
    said: list[str] = []
    assert use_hardware(setting, gpus, said.append) is False
    assert said == []


@pytest.mark.parametrize("hardware", [True, False])
def test_media_workers_see_the_gpus_only_when_they_use_their_video_engines(tmp_path, hardware: bool) -> None:
    config = PipelineConfig.model_validate({"inputs": ["v.mp4"], "output": "out",
                                            "stages": [{"name": "shots", "split": "m.Split"}]})
    media = {stage.name: ResolvedStage(stage, MEDIA_MODEL, media_env())
             for stage in media_stages(config, tmp_path, hardware)}
    workers = LocalWorkers({}, tmp_path, tmp_path, lambda *_: None, media, tmp_path)
    environ = workers.make(media["cut"].config, 0).spec.extra_environ
    assert ("CUDA_VISIBLE_DEVICES" not in environ) is hardware  # else hidden ("") like any GPU-less worker
