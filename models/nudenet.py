"""Content-safety labels with NudeNet (a small YOLO detector on CPU onnxruntime).

    frames (N, H, W, 3) uint8 RGB --> per frame [{label, score, box}] --> unsafe_score (max over *_EXPOSED)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models import conda_utils
from models.model_interface import ModelInterface

if conda_utils.is_running_in_env("content_filter"):
    from nudenet import NudeDetector

EXPOSED_SUFFIX = "_EXPOSED"
"""NudeNet 3 names uncovered body parts `<PART>_EXPOSED`; only those raise `unsafe_score`."""

_BATCH_SIZE = 16
"""Frames per onnxruntime call; the detector's input has a free batch axis."""


class NudeNetContentFilter(ModelInterface):
    """Labels body parts per frame; the detector ships inside the wheel, so nothing is downloaded."""

    outputs: ClassVar[dict[str, str]] = {
        "detections": "list<list<struct<label: string, score: float32, box: fixed_size_list<int32>[4]>>>",
        "unsafe_score": "float32",
    }

    def __init__(self, min_score: float = 0.2) -> None:
        self.min_score = min_score

    @property
    def conda_env_name(self) -> str:
        return "content_filter"

    @property
    def num_gpus(self) -> float:
        return 0.0

    def setup(self) -> None:
        self._detector = NudeDetector()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Return `detections` (one list per frame; box is [x, y, w, h] in pixels) and `unsafe_score`.

        `unsafe_score` is the highest score of any `*_EXPOSED` detection in the batch, 0.0 if none.
        NudeNet itself drops detections under 0.2, so a `min_score` below that changes nothing.
        """
        # NudeNet reads an ndarray as OpenCV's BGR, like the images it loads from disk.
        bgr = [np.ascontiguousarray(frame[..., ::-1]) for frame in batch["frames"]]
        raw = self._detector.detect_batch(bgr, batch_size=_BATCH_SIZE)
        detections = [
            [
                {"label": d["class"], "score": float(d["score"]), "box": [int(v) for v in d["box"]]}
                for d in frame if d["score"] >= self.min_score
            ]
            for frame in raw
        ]
        exposed = [d["score"] for frame in detections for d in frame if d["label"].endswith(EXPOSED_SUFFIX)]
        return {"detections": detections, "unsafe_score": max(exposed, default=0.0)}
