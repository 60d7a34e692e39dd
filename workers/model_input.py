"""Hand a model its input in the shape it was written for: a stage's `input:` settings, applied in the worker.

    payload {"frames": (N, H, W, 3) uint8, ...}
       │ layout NCHW: a transposed view (no copy)
       │ type torch: torch.from_numpy (shares memory); read-only memory is copied first
       │ dtype: converted (a copy)
       ▼
    form dict: {**payload, "frames": adapted}      form frames: adapted itself (what `__call__(images)` expects)

A stage without `input:` gets what the model's `__call__` annotates its first parameter with: an
annotation naming `torch.Tensor` (alone, in a Union, or in a batched model's list) gets an (N, 3, H, W)
uint8 tensor, the convention of torch vision models; one naming a numpy array gets the (N, H, W, 3) array;
anything else (a dict, `Any`, none) gets the dict. An explicit `input:` always wins.

torch is imported only when a spec asks for a torch tensor, so envs without torch never pay for it.
Values are not rescaled: a float dtype holds 0..255, as the model would get from `images.to(dtype)`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from workers.calls import Outcome

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


TORCH_FRAMES = InputSpec(form="frames", type="torch", layout="NCHW")
NUMPY_FRAMES = InputSpec(form="frames")
_CHOICES = (InputSpec(), NUMPY_FRAMES, TORCH_FRAMES)
INPUT_ERRORS = ("AttributeError", "TypeError", "IndexError", "KeyError")
"""What a model raises when its input is not the kind of object it was written for."""


def resolve_input(settings: Mapping[str, Any] | None, model: Any) -> InputSpec:
    """The stage's `input:` settings when it has them (None: it has none), else what `model` annotates."""
    return InputSpec.from_dict(settings) if settings is not None else infer_input(model)


def infer_input(model: Any) -> InputSpec:
    """What a model's `__call__` says it takes, from its first parameter's annotation (see the module doc)."""
    kinds = _array_kinds(_first_annotation(model))
    if "torch" in kinds:
        return TORCH_FRAMES
    return NUMPY_FRAMES if "numpy" in kinds else InputSpec()


def _first_annotation(model: Any) -> Any:
    call = type(model).__call__
    try:
        parameters = list(inspect.signature(call).parameters.values())[1:]  # after self
    except (TypeError, ValueError):
        return None
    if not parameters:
        return None
    try:
        hints = typing.get_type_hints(call)
    except Exception:  # a name the module does not define: the annotation's text is read instead
        hints = {}
    return hints.get(parameters[0].name, parameters[0].annotation)


def _array_kinds(annotation: Any) -> set[str]:
    """"torch" and/or "numpy" when the annotation names a tensor or an array outside a mapping's values."""
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        if annotation.replace("typing.", "").startswith(("dict", "Dict", "Mapping")):
            return set()
        return {kind for kind, words in (("torch", ("Tensor",)), ("numpy", ("ndarray", "NDArray")))
                if any(word in annotation for word in words)}
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return set()
    for kind, module, name in (("torch", "torch", "Tensor"), ("numpy", "numpy", "ndarray")):
        if _is_class(annotation, module, name) or _is_class(origin, module, name):
            return {kind}
    return set().union(*(_array_kinds(arg) for arg in typing.get_args(annotation)))


def _is_class(candidate: Any, module: str, name: str) -> bool:
    """True for `module.name` or a subclass, told by name: torch is never imported to check."""
    return isinstance(candidate, type) and any(
        cls.__name__ == name and cls.__module__.partition(".")[0] == module for cls in candidate.__mro__)


def received(spec: InputSpec) -> str:
    """What a model given input `spec` receives, in words."""
    dims = "3, H, W" if spec.layout == "NCHW" else "H, W, 3"
    frames = f"an (N, {dims}) {spec.dtype or 'uint8'} {'torch tensor' if spec.type == 'torch' else 'numpy array'}"
    return f"a dict whose 'frames' is {frames}" if spec.form == "dict" else frames


def as_setting(spec: InputSpec) -> str:
    """`spec` as a stage's `input:` line: the fields that differ from the default, in YAML flow style."""
    changed = {k: v for k, v in spec.to_dict().items() if v != getattr(InputSpec(), k)} or {"form": "dict"}
    return "input: {" + ", ".join(f"{k}: {v}" for k, v in changed.items()) + "}"


def with_input_hint(outcome: Outcome, spec: InputSpec) -> Outcome:
    """A model's failure on the kind of object it received, with what it received and the `input:` settings
    that would hand it something else; any other outcome as it is."""
    result, error = outcome
    if error is None or error.get("type") not in INPUT_ERRORS:
        return outcome
    others = "; ".join(f"`{as_setting(choice)}` gives {received(choice)}" for choice in _CHOICES if choice != spec)
    hint = f" (the model received {received(spec)}; set the stage's input to change that: {others})"
    return result, {**error, "message": f"{error.get('message')}{hint}"}
