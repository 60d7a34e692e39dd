"""The tutorial's model (docs/adding-a-model.md): one embedding per clip from a small vision transformer.

    frames (N, H, W, 3) uint8 ──resize, scale──▶ ViT (video_splitting env) ──▶ [CLS] per frame
                                                  ──mean over frames, unit length──▶ embedding (hidden,) float32

The weights are named `tutorial/tiny-vit` and read from the weights cache; `id_file_mapping` asks for
just the two files `from_pretrained` needs, whatever else the source holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models import conda_utils, model_utils
from models.model_interface import ModelInterface

if conda_utils.is_running_in_env("video_splitting"):
    import torch
    from transformers import AutoModel

WEIGHTS = "tutorial/tiny-vit"


class TinyFrameEmbedder(ModelInterface):
    """Embeds a clip's sampled frames; similar clips get a cosine similarity near 1."""

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize

    @property
    def conda_env_name(self) -> str:
        return "video_splitting"

    @property
    def weights_names(self) -> list[str]:
        return [WEIGHTS]

    @property
    def id_file_mapping(self) -> dict[str, list[str] | None]:
        return {WEIGHTS: ["config.json", "model.safetensors"]}

    @property
    def num_gpus(self) -> float:
        return 0.0

    def setup(self) -> None:
        torch.set_grad_enabled(False)
        directory = model_utils.get_local_dir_for_weights_name(WEIGHTS)
        self.model = AutoModel.from_pretrained(directory, local_files_only=True).eval()
        self.size = self.model.config.image_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        frames = batch["frames"]
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"frames must have shape (N>0, H, W, 3), got {frames.shape}")
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        pixels = torch.nn.functional.interpolate(pixels, size=(self.size, self.size), mode="bilinear")
        embedding = self.model(pixel_values=pixels).last_hidden_state[:, 0].mean(dim=0)
        if self.normalize:
            embedding = torch.nn.functional.normalize(embedding, dim=0)
        return {"embedding": embedding.numpy(), "frames": len(frames)}
