"""A clip stage's step: each clip's sampled frames to the stage's model, its result kept under the stage's name."""

from __future__ import annotations

from typing import Any

from orchestrator.pipeline.config import StageConfig
from orchestrator.pipeline.items import Clip
from orchestrator.pipeline.pool import StepLogic
from workers.shared_frames import SharedFramesDir


class ClipModelLogic(StepLogic):
    """A clip's sampled frames for this stage in, the model's result stored under the stage's name."""

    def __init__(self, stage: StageConfig, frames: SharedFramesDir) -> None:
        self.stage = stage
        self.frames = frames

    def wants(self, item: Any) -> bool:
        return isinstance(item, Clip) and item.active

    def payload(self, item: Clip) -> Any:
        return {"frames": item.frames[self.stage.name]}

    def node_of(self, item: Clip) -> str | None:
        return getattr(item.frames.get(self.stage.name), "node", None)  # frames in a cluster's object store

    def absorb(self, item: Clip, result: Any) -> None:
        self.frames.drop(item.frames.pop(self.stage.name, None))
        item.results[self.stage.name] = result

    def fail(self, item: Clip, reason: str) -> None:
        item.release_frames(self.frames)  # a failed clip goes to no later stage
        item.errors[self.stage.name] = reason
