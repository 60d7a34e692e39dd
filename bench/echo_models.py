"""Trivial models for `bench/transport.py` and `bench/media.py`: they cost next to nothing, so a benchmark
measures only the transport, or only the media work around them."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.model_interface import ModelInterface, SplitWindow


class _BenchModel(ModelInterface):
    """No weights, no GPU, no setup work; runs in whichever env `conda_env_name` names."""

    def __init__(self, conda_env_name: str) -> None:
        self._env = conda_env_name

    @property
    def conda_env_name(self) -> str:
        return self._env

    @property
    def num_gpus(self) -> float:
        return 0.0

    def setup(self) -> None:
        pass


class ShapeOf(_BenchModel):
    """Replies with a few bytes about a frame, so only the request carries the frame."""

    def __call__(self, frames: np.ndarray) -> dict[str, Any]:
        return {"shape": list(frames.shape), "sum0": int(frames.flat[0])}


class Pong(_BenchModel):
    """Replies with the batch unchanged: a small batch measures a bare round trip."""

    def __call__(self, batch: Any) -> Any:
        return batch


class MeanCut(_BenchModel):
    """A split model for videos whose shots differ in colour (the generated samples): a cut wherever a
    channel's mean jumps between two frames, read in windows like TransNetV2's."""

    split_window: ClassVar[SplitWindow] = SplitWindow(step=50, context=1)
    jump: ClassVar[float] = 48.0
    """A change of any channel's mean by more than this between two frames is a cut."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        frames = batch["frames"]
        context = self.split_window.context
        means = frames.reshape(len(frames), -1, frames.shape[-1]).mean(axis=1)
        last_of_shot = np.abs(np.diff(means, axis=0)).max(axis=1) > self.jump  # [i]: frame i ends a shot
        return {"transitions": last_of_shot[context: len(frames) - context]}
