"""On-screen text with RapidOCR (PP-OCR detection + recognition on CPU onnxruntime).

    frames (N, H, W, 3) uint8 RGB --> per frame [{text, score, box}] --> all distinct texts, joined
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models import conda_utils
from models.model_interface import ModelInterface

if conda_utils.is_running_in_env("ocr"):
    from rapidocr_onnxruntime import RapidOCR


class RapidOCRTextReader(ModelInterface):
    """Reads every line of text in each frame; the models ship inside the wheel, so nothing is downloaded."""

    outputs: ClassVar[dict[str, str]] = {
        "texts": "list<list<struct<text: string, score: float32, box: list<fixed_size_list<float32>[2]>>>>",
        "text": "string",
    }

    def __init__(self, min_score: float = 0.5) -> None:
        self.min_score = min_score

    @property
    def conda_env_name(self) -> str:
        return "ocr"

    @property
    def num_gpus(self) -> float:
        return 0.0

    def setup(self) -> None:
        """Build the engine with `min_score` as its own cut-off, so weaker lines never leave it."""
        self._engine = RapidOCR(text_score=self.min_score)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Return `texts` (one list of lines per frame, each with its four box corners) and `text`.

        `text` joins each distinct line once, in order of first appearance, so a caption that stays on
        screen for many frames counts once.
        """
        texts = [self._read(frame) for frame in batch["frames"]]
        distinct = dict.fromkeys(line["text"] for lines in texts for line in lines)
        return {"texts": texts, "text": " ".join(distinct)}

    def _read(self, frame: np.ndarray) -> list[dict[str, Any]]:
        # RapidOCR takes an ndarray as OpenCV's BGR; the reversed copy also frees it from read-only memory.
        result, _ = self._engine(np.ascontiguousarray(frame[..., ::-1]))
        return [
            {"text": text, "score": float(score), "box": [[float(x), float(y)] for x, y in box]}
            for box, text, score in result or []
        ]
