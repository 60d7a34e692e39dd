"""Write the tutorial's weights, `tutorial/tiny-vit`, into a mirror folder laid out like the cache.

A real model names a hub repo and is downloaded from there; the tutorial's stand-in is a tiny,
randomly initialised vision transformer made on the spot, so the tutorial works without network
access. Run it with the env's interpreter (it needs transformers):

    $(orchestrator envs python video_splitting) examples/custom_model/make_tiny_weights.py MIRROR_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import ViTConfig, ViTModel


def main(mirror: Path) -> None:
    torch.manual_seed(0)
    target = mirror / "tutorial" / "tiny-vit"
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)
    ViTModel(config).save_pretrained(target)
    (target / "README.md").write_text("A tiny random ViT for the tutorial; not in its id_file_mapping.\n")
    print(target)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
