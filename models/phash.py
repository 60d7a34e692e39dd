"""Perceptual hash and DCT embedding of a clip: the built-in duplicate signal, with no weights at all.

    frames (N, H, W, 3) uint8 RGB --> each frame's luma at 32x32 --> its 2-D DCT
        --> phash: the 8x8 lowest frequencies, averaged over the frames, against their median (16 hex digits)
        --> embedding: half structure, the 16x16 lowest frequencies less the DC term (255 values), and half
            colour, each frame's mean chroma (RGB less its grey level) over a 4x4 grid (48 values); each half
            unit length per frame, averaged over the frames, then weighted equally (303 float32, unit length)

Re-encoding at another resolution or bitrate changes fine detail, which these low frequencies and grid means
do not hold. On the test footage (tests/models/test_clip_embedders.py), copies re-encoded at another resolution
and bitrate and sampled at the same instants score a cosine of 0.990 to 0.999 and lie 2 to 4 bits apart, while
other shots of the same scene score at most 0.795 and lie 12 bits or more apart. Luma alone cannot tell apart
shots that share a layout and differ in colour (the bundled sample's shots score 0.99 on structure alone, and
pHash puts two of them 0 bits apart), hence the colour half of the embedding, with which they score at most
0.78; the hash stays plain pHash. The dedup stage compares `phash` by Hamming distance and `embedding` by cosine
similarity; `examples/dedup.yaml` runs it at cosine 0.9 (or 10 bits), inside those gaps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models import conda_utils
from models.model_interface import ModelInterface

if conda_utils.is_running_in_env("ocr"):
    import cv2

THUMBNAIL_SIDE = 32
"""Each frame's luma is shrunk (area average) to this square before its DCT."""
HASH_SIDE = 8
"""The hash reads the HASH_SIDE x HASH_SIDE lowest frequencies: 64 bits."""
EMBED_SIDE = 16
"""The embedding reads the EMBED_SIDE x EMBED_SIDE lowest frequencies, less the DC (mean brightness) term."""
COLOUR_GRID = 4
"""The colour half reads each frame's mean RGB in a COLOUR_GRID x COLOUR_GRID grid."""
STRUCTURE_SIZE = EMBED_SIDE * EMBED_SIDE - 1
EMBEDDING_SIZE = STRUCTURE_SIZE + COLOUR_GRID * COLOUR_GRID * 3


class PerceptualHashEmbedder(ModelInterface):
    """A 64-bit pHash and a DCT vector for each clip, over the frames the stage samples from it.

    The hash and the vector summarise every sampled frame (their mean), not one keyframe, so a clip
    sampled at the same instants in two encodings gets the same summary, and a moving shot is
    described by all of it. A clip of flat frames (no detail at all) gets a zero embedding, which is
    no cosine match for anything.
    """

    outputs: ClassVar[dict[str, str] | None] = {
        "phash": "string",
        "embedding": f"fixed_size_list<float32>[{EMBEDDING_SIZE}]",
    }

    @property
    def conda_env_name(self) -> str:
        return "ocr"

    @property
    def num_gpus(self) -> float:
        return 0.0

    def setup(self) -> None:
        """Nothing to load: the hash is arithmetic on the frames."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Return `phash` (16 lowercase hex digits) and `embedding` (EMBEDDING_SIZE float32, unit length)."""
        frames = batch["frames"]
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"frames must have shape (N >= 1, H, W, 3), got {frames.shape}")
        spectra = np.stack([_spectrum(frame) for frame in frames])
        colours = np.stack([_colour_grid(frame) for frame in frames])
        return {"phash": _hash(spectra[:, :HASH_SIDE, :HASH_SIDE]), "embedding": _embedding(spectra, colours)}


def _spectrum(frame: np.ndarray) -> np.ndarray:
    """The frame's luma, area-shrunk to THUMBNAIL_SIDE square, as its orthonormal 2-D DCT (float32)."""
    luma = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float32)
    side = (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    interpolation = cv2.INTER_AREA if min(luma.shape) >= THUMBNAIL_SIDE else cv2.INTER_LINEAR
    return cv2.dct(cv2.resize(luma, side, interpolation=interpolation))


def _colour_grid(frame: np.ndarray) -> np.ndarray:
    """The frame's mean chroma in each cell of a COLOUR_GRID square grid: each cell's mean RGB less its own grey
    level, so the hue counts and brightness (which the structure half reads) does not; float32."""
    grid = cv2.resize(np.ascontiguousarray(frame), (COLOUR_GRID, COLOUR_GRID), interpolation=cv2.INTER_AREA)
    grid = grid.astype(np.float32)
    return (grid - grid.mean(axis=-1, keepdims=True)).ravel()


def _hash(low: np.ndarray) -> str:
    """One bit per coefficient of the frames' mean low block: set where it exceeds the block's median."""
    mean = low.mean(axis=0).ravel()
    bits = mean > np.median(mean)
    return f"{int(''.join('1' if bit else '0' for bit in bits), 2):016x}"


def _embedding(spectra: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Each frame's low frequencies less DC (scaled to unit length, so contrast does not count) and its colour
    grid (unit length), each averaged over the frames and scaled to unit length again, then joined with equal
    weight: the cosine of two clips is the mean of their structure and colour cosines."""
    structure = spectra[:, :EMBED_SIDE, :EMBED_SIDE].reshape(len(spectra), -1)[:, 1:].astype(np.float64)
    halves = [_unit(_unit(part).mean(axis=0)) for part in (structure, colours.astype(np.float64))]
    return _unit(np.concatenate(halves)).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    """`vectors` scaled to unit length along the last axis; a zero vector stays zero."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
