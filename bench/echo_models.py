"""Trivial models for `bench/transport.py`: they cost nothing, so a benchmark measures only the transport."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.model_interface import ModelInterface


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
