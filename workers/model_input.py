"""Hand a model its input in the shape it was written for: a stage's `input:` settings, applied in the worker.

    payload {"frames": (N, H, W, 3) uint8, ...}
       │ layout NCHW: a transposed view (no copy)
       │ type torch: torch.from_numpy (shares memory); read-only memory is copied first
       │ dtype: converted (a copy)
       ▼
    form dict: {**payload, "frames": adapted}      form frames: adapted itself (what `__call__(images)` expects)

torch is imported only when a spec asks for a torch tensor, so envs without torch never pay for it.
Values are not rescaled: a float dtype holds 0..255, as the model would get from `images.to(dtype)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

FORMS = ("dict", "frames")
TYPES = ("numpy", "torch")
LAYOUTS = ("NHWC", "NCHW")
TORCH_ONLY_DTYPES = ("bfloat16",)
"""dtypes torch has and numpy lacks: converted by torch while it copies the frames."""


@dataclass(frozen=True)
class InputSpec:
    """What a model's `__call__` receives; the defaults give today's `{"frames": (N, H, W, 3) uint8}`."""

    form: str = "dict"
    """"dict": the payload with its frames adapted; "frames": the adapted frames alone."""
    type: str = "numpy"
    """"numpy" or "torch" (a CPU tensor made in the worker; the model moves it to its device)."""
    layout: str = "NHWC"
    """"NHWC" (frames, height, width, channels) or "NCHW" (channels first, as torch vision models take)."""
    dtype: str | None = None
    """None keeps uint8; else a dtype name such as "float32", "float16" or, for torch, "bfloat16"."""

    def __post_init__(self) -> None:
        for name, allowed in (("form", FORMS), ("type", TYPES), ("layout", LAYOUTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"input {name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.dtype is None:
            return
        if self.dtype in TORCH_ONLY_DTYPES:
            if self.type != "torch":
                raise ValueError(f"input dtype {self.dtype!r} needs type torch (numpy has no {self.dtype})")
            return
        try:
            resolved = np.dtype(self.dtype)
        except TypeError:
            resolved = None
        if resolved is None or resolved.kind not in "biuf" or resolved.name != self.dtype:
            raise ValueError(f"input dtype {self.dtype!r} is not a numeric dtype name like 'float32', 'float16' "
                             f"or 'uint8'")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> InputSpec:
        """From a config's or a SETUP header's plain dict; unknown keys are refused by name."""
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"input has unknown keys {unknown}: allowed are form, type, layout, dtype")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_default(self) -> bool:
        """True when the payload passes through untouched."""
        return self == InputSpec()


def adapt_input(payload: dict[str, Any], spec: InputSpec) -> Any:
    """The model's input for one clip's payload under `spec`; the payload itself when `spec` is the default."""
    if spec.is_default:
        return payload
    frames = payload["frames"]
    if not isinstance(frames, np.ndarray) or frames.ndim != 4:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"payload frames must be an (N, H, W, C) array, got {type(frames).__name__} shape {shape}")
    if spec.layout == "NCHW":
        frames = frames.transpose(0, 3, 1, 2)
    adapted = _as_torch(frames, spec.dtype) if spec.type == "torch" else _as_numpy(frames, spec.dtype)
    return {**payload, "frames": adapted} if spec.form == "dict" else adapted


def _as_numpy(frames: np.ndarray, dtype: str | None) -> np.ndarray:
    return frames if dtype is None or frames.dtype == dtype else frames.astype(dtype)


def _as_torch(frames: np.ndarray, dtype: str | None) -> Any:
    import torch

    if dtype in TORCH_ONLY_DTYPES:
        return torch.tensor(frames, dtype=getattr(torch, dtype))  # converted in its one copy
    if dtype is not None and frames.dtype != dtype:
        frames = frames.astype(dtype)  # a new, writable array: the conversion is the one copy
    elif not frames.flags.writeable:
        # torch makes no read-only tensors: wrapping shared memory a model might write to would be unsafe.
        frames = frames.copy()
    return torch.from_numpy(frames)
