"""A clip model for the clip table's tests: per frame, one detection where the frame is bright and none where
it is dark (so a dark video's first results hold only empty lists), and the clip's mean colour as an embedding."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from models.model_interface import ModelInterface

BRIGHT = 128.0


class Detector(ModelInterface):
    """Declares nothing: the clip table infers its column from the results."""

    def __init__(self, env: str, delay_s: float = 0.0) -> None:
        self._env, self.delay_s = env, delay_s

    @property
    def conda_env_name(self) -> str:
        return self._env

    @property
    def num_gpus(self) -> float:
        return 0.0

    def setup(self) -> None:
        """Nothing to load."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.delay_s)
        frames = batch["frames"]
        means = frames.reshape(len(frames), -1, 3).mean(axis=1)
        height, width = frames.shape[1:3]
        detections = [[{"label": "bright", "score": float(m.mean() / 255), "box": [0, 0, width, height]}]
                      if m.mean() > BRIGHT else [] for m in means]
        return {"detections": detections, "embedding": means.mean(axis=0).astype(np.float32),
                "bright": sum(1 for d in detections if d)}


class DeclaredDetector(Detector):
    """Declares two of its three fields; `bright` is inferred."""

    outputs: ClassVar[dict[str, str]] = {
        "detections": "list<list<struct<label: string, score: float32, box: fixed_size_list<int32>[4]>>>",
        "embedding": "fixed_size_list<float32>[3]",
    }
