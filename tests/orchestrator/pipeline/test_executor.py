"""The executor's own guarantees: a step that raises ends the run with its error, never a hang, and every
step thread is gone afterwards."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psutil
import pytest

from orchestrator.declarations import ModelDeclarations
from orchestrator.errors import ConfigError, PipelineError
from orchestrator.pipeline.config import PipelineConfig, load_config
from orchestrator.pipeline.executor import PipelineExecutor, RunState
from orchestrator.pipeline.media.video import expand_inputs
from orchestrator.pipeline.output.writer import OutputWriter
from orchestrator.pipeline.stages import LocalWorkers, resolve_media
from orchestrator.supervisor.runtime_dir import make_runtime_dir
from workers.shared_frames import SharedFramesDir

CONFIG = {"inputs": ["x.mp4"], "output": "out",
          "stages": [{"name": "shots", "split": "models.transnetv2.TransNetV2ShotDetector"},
                     {"name": "keep", "filter": {"min_duration_s": 1.0}}]}


def test_a_step_that_raises_ends_the_run_with_its_error(sample, tmp_path: Path) -> None:
    shutil.copy(sample[0], tmp_path / "x.mp4")
    config = PipelineConfig.model_validate(CONFIG)
    videos, _ = expand_inputs(config.inputs, tmp_path)
    declared = {"shots": ModelDeclarations("Splitter", "video_splitting", num_gpus=0.0)}

    def make_worker(stage, replica):
        if stage.name == "shots":
            raise RuntimeError("no worker today")
        return real_workers.make(stage, replica)  # the media steps' workers start as usual

    frames = SharedFramesDir.make()
    runtime = make_runtime_dir()
    real_workers = LocalWorkers({}, tmp_path, runtime, lambda *_: None, resolve_media(config, frames.path), frames.path)
    writer = OutputWriter(tmp_path / "out", config.results_key(), videos)
    executor = PipelineExecutor(config, videos, writer, make_worker, RunState(len(videos)), declared, frames=frames)
    with pytest.raises(PipelineError, match=r"step 'shots' failed: RuntimeError: no worker today"):
        executor.run()
    assert not [t for t in executor.threads if t.is_alive()]
    assert not [t for t in threading.enumerate() if t.name.startswith("step-")]
    workers = [p.cmdline() for p in psutil.Process().children() if "workers.bootstrap" in p.cmdline()]
    assert not workers, "the media steps' workers were stopped"
    frames.remove()
    shutil.rmtree(runtime)


def test_an_unknown_clip_codec_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("inputs: [x.mp4]\noutput: out\nclip_codec: no_such_codec\nstages:\n"
                      "  - {name: shots, split: models.transnetv2.TransNetV2ShotDetector}\n")
    with pytest.raises(ConfigError, match="field 'clip_codec'.*no video encoder 'no_such_codec'"):
        load_config(config)
