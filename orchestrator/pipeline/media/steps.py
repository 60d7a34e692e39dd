"""The media steps of a run, as stages the executor's pools run like any model stage.

    decode  the split stage's windows, decoded at its size     (before the split pool)
    cut     each clip's frames for every clip stage, sampled    (after the split, before the clip stages;
            and resized at full-size decode; with `encode: all`  it also encodes the clip)
    encode  each clip the filters kept, encoded                 (after the clip stages; `encode: kept`)

Their workers run `workers.media.model.MediaWorker` in this process's own interpreter (PyAV is a dependency
of the orchestrator, never of a model's env), so they start, die, restart and time out exactly as model
replicas do, and the orchestrator only moves requests and names of shared frames.
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.declarations import ModelDeclarations
from orchestrator.envs import Env
from orchestrator.pipeline.config import MEDIA_STEPS, PipelineConfig, StageConfig
from workers.media.model import OWN_ENV

MEDIA_MODEL = "workers.media.model.MediaWorker"
DECODE, CUT, ENCODE = MEDIA_STEPS
MEDIA_DECLARATIONS = ModelDeclarations("MediaWorker", OWN_ENV, num_gpus=0.0)


def media_env() -> Env:
    """This process's own environment, as the env media workers are started in."""
    return Env(OWN_ENV, "own", Path(sys.prefix), Path(sys.executable))


def media_stages(config: PipelineConfig, frames_dir: Path, hardware: bool = False) -> list[StageConfig]:
    """The run's media steps as stage configs, in pipeline order (no `encode` unless `encode: kept`);
    `hardware`: they decode and encode on the GPU's video engines."""
    names = [DECODE, CUT] + ([ENCODE] if config.clips.encode == "kept" else [])
    media = config.media
    return [StageConfig(name=name, model=MEDIA_MODEL, params={"frames_dir": str(frames_dir), "hardware": hardware},
                        replicas=media.replicas, threads=media.threads,
                        **({"max_replicas": media.max_replicas} if media.replicas == "auto" else {}))
            for name in names]
