"""Frames on a Ray cluster: object references the driver owns and forwards, never pixels it reads.

    media host (node A): its worker's answer names shared frames in A's frames folder
        ─▶ `slotted`: each array becomes one of the call's extra return values, the answer keeps a FramesSlot
    driver: `call.options(num_returns=1 + n)` ─▶ gets the answer only ─▶ `filled`: each slot becomes
        RayFrames(the return's object ref, shape, node A)  (the driver made the call, so it owns the refs:
        they outlive the media actor, and go when the last item holding them is done)
    driver, to a model replica: `unreffed` ─▶ slots in the payload, the refs as the call's own arguments,
        which Ray resolves on node B before the call runs (fetched from A's store, ahead of the call)
    model host (node B): `with_arrays` ─▶ each slot becomes the array its argument was resolved to

The pipeline treats RayFrames like any frames it forwards: it reads `shape`, drops the item's reference
when done, and asks the pool to prefer a replica on `node`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.shared_frames import SharedFrames, SharedFramesDir


@dataclass(frozen=True)
class FramesSlot:
    """Where a media answer's frames were: the call's extra return value `index` (0 = the first extra)."""

    index: int
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RayFrames:
    """Frames held in Ray's object store, owned by the driver: what a request carries instead of pixels."""

    ref: Any
    dtype: str
    shape: tuple[int, ...]
    node: str | None = None
    """The Ray node id whose object store holds them (where the media replica that read them ran)."""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def slotted(value: Any, frames: SharedFramesDir, arrays: list[np.ndarray]) -> Any:
    """`value` with each reference to shared frames replaced by a FramesSlot, its frames appended to
    `arrays` and its segment unlinked (the array stays valid until dropped)."""
    if isinstance(value, SharedFrames):
        arrays.append(frames.open(value))
        frames.release(value)
        return FramesSlot(len(arrays) - 1, value.dtype, tuple(value.shape))
    return _mapped(value, lambda item: slotted(item, frames, arrays))


def filled(value: Any, refs: list[Any], node: str | None) -> Any:
    """`value` with each FramesSlot replaced by RayFrames holding the object ref of that return value."""
    if isinstance(value, FramesSlot):
        return RayFrames(refs[value.index], value.dtype, value.shape, node)
    return _mapped(value, lambda item: filled(item, refs, node))


def unreffed(value: Any, refs: list[Any]) -> Any:
    """`value` with each RayFrames replaced by a FramesSlot, its object ref appended to `refs`: passed as
    a call's own arguments, refs are fetched by Ray ahead of the call, and nothing borrows them."""
    if isinstance(value, RayFrames):
        refs.append(value.ref)
        return FramesSlot(len(refs) - 1, value.dtype, value.shape)
    return _mapped(value, lambda item: unreffed(item, refs))


def with_arrays(value: Any, arrays: tuple[Any, ...]) -> Any:
    """`value` with each FramesSlot replaced by the array of that index."""
    if isinstance(value, FramesSlot):
        return arrays[value.index]
    return _mapped(value, lambda item: with_arrays(item, arrays))


def _mapped(value: Any, each: Callable[[Any], Any]) -> Any:
    if isinstance(value, dict):
        return {key: each(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(each(item) for item in value)
    return value
