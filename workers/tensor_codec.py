"""How one numpy array travels inside a message.

An array in a payload becomes a msgpack extension object whose code says where its bytes are:

    code 1  inline  [dtype, shape, C-order bytes]               small arrays, inside the header frame
    code 2  frame   [dtype, shape, strides, frame index]        the array's own buffer, sent zero-copy
    code 3  slot    [dtype, shape, strides, slot, nbytes]       a shared-memory ring slot (same host)
    code 4  shared  [dtype, shape, segment name]                frames left in the run's frames folder by the
                                                                process that decoded them (same host)

Decoding builds views on the received buffers without copying, after checking that every element the
description points at lies inside its buffer and that the array holds no more bytes than that buffer: a
malformed peer gets an `ArrayFormatError`, never a view past the end of a buffer nor one that repeats a
few bytes into a huge array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from workers.shared_frames import SharedFrames, SharedFramesDir, SharedFramesError

if TYPE_CHECKING:
    from workers.shm_ring import ShmRingReader

INLINE_CODE = 1
FRAME_CODE = 2
SLOT_CODE = 3
SHARED_CODE = 4

# Kinds whose bytes alone are the values: bool, integers, floats, complex, datetime, timedelta,
# fixed-width bytes and unicode strings.
_PLAIN_KINDS = frozenset("biufcmMSU")
_MAX_DIMS = 64


class ArrayFormatError(ValueError):
    """An array that cannot be sent, or an array description that does not match its buffer."""


def to_wire_array(value: Any) -> np.ndarray | None:
    """`value` as a numpy array when it is one or a torch tensor, else None.

    Torch is recognised by its module name, never imported, so environments without it pay nothing.
    """
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        try:
            return value.detach().cpu().numpy()
        except (TypeError, RuntimeError) as err:
            raise ArrayFormatError(
                f"torch tensor of dtype {value.dtype} has no numpy equivalent ({err}): cast it first, "
                "e.g. with .float()"
            ) from err
    return None


def check_dtype(dtype: np.dtype) -> None:
    """Refuse dtypes whose raw bytes do not carry the values: objects, records, variable-size strings."""
    if dtype.kind not in _PLAIN_KINDS or dtype.itemsize == 0:
        raise ArrayFormatError(
            f"dtype {dtype} ({dtype.str!r}) is not a plain fixed-size type: use numeric, bool, datetime "
            "or fixed-width string dtypes"
        )


def inline_ext(arr: np.ndarray) -> msgpack.ExtType:
    """`arr` copied into the header frame: for small arrays a frame of their own costs more."""
    return _ext(INLINE_CODE, [arr.dtype.str, list(arr.shape), arr.tobytes(order="C")])


def frame_ext(arr: np.ndarray, frame_index: int) -> tuple[msgpack.ExtType, memoryview]:
    """Description of `arr` and the bytes to send as frame `frame_index`.

    C- and Fortran-contiguous arrays are sent from their own memory; others are made C-contiguous first.
    """
    if arr.flags.f_contiguous and not arr.flags.c_contiguous:
        flat = arr.T.reshape(-1)
    else:
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        flat = arr.reshape(-1)
    ext = _ext(FRAME_CODE, [arr.dtype.str, list(arr.shape), list(arr.strides), frame_index])
    return ext, memoryview(flat.view(np.uint8))


def slot_ext(arr: np.ndarray, slot: int) -> msgpack.ExtType:
    """Description of `arr` after the ring copied it, in C order, into `slot`."""
    strides = c_strides(arr.shape, arr.dtype.itemsize)
    return _ext(SLOT_CODE, [arr.dtype.str, list(arr.shape), strides, slot, arr.nbytes])


def shared_ext(ref: SharedFrames) -> msgpack.ExtType:
    """A reference to frames in the frames folder: a few bytes, whatever the frames weigh."""
    return _ext(SHARED_CODE, [ref.dtype, list(ref.shape), ref.name])


def decode_shared(ext: msgpack.ExtType, frames_dir: SharedFramesDir | None) -> SharedFrames | np.ndarray:
    """The reference `ext` carries; mapped as a read-only array when this side reads the frames folder."""
    dtype_text, shape, name = _fields(ext.data, (str, list, str))
    ref = SharedFrames(name, parse_dtype(dtype_text).str, _ints(shape, "shape"))
    if any(dim < 0 for dim in ref.shape):
        raise ArrayFormatError(f"shape {list(ref.shape)} does not describe an array")
    if frames_dir is None:
        return ref
    try:
        return frames_dir.open(ref)
    except (SharedFramesError, OSError) as err:
        raise ArrayFormatError(str(err)) from err


def decode_ext(
    ext: msgpack.ExtType, buffers: Sequence[memoryview], ring: ShmRingReader | None
) -> tuple[np.ndarray, int | None]:
    """The array `ext` describes, as a view on its buffer, and the index of the frame it used, if any."""
    if ext.code == INLINE_CODE:
        dtype_text, shape, raw = _fields(ext.data, (str, list, bytes))
        dtype, shape = parse_dtype(dtype_text), _ints(shape, "shape")
        arr = view_array(memoryview(raw), dtype, shape, c_strides(shape, dtype.itemsize))
        if arr.nbytes != len(raw):
            raise ArrayFormatError(f"inline array of shape {list(shape)} needs {arr.nbytes} bytes, got {len(raw)}")
        return arr, None
    if ext.code == FRAME_CODE:
        dtype_text, shape, strides, index = _fields(ext.data, (str, list, list, int))
        if not 1 <= index < len(buffers):
            raise ArrayFormatError(
                f"frame index {index} is out of range: the message has {len(buffers) - 1} buffer frame(s)"
            )
        return view_array(buffers[index], parse_dtype(dtype_text), shape, strides), index
    if ext.code == SLOT_CODE:
        dtype_text, shape, strides, slot, nbytes = _fields(ext.data, (str, list, list, int, int))
        if ring is None:
            raise ArrayFormatError(
                f"it lives in shared-memory slot {slot} but this side has no shared-memory ring attached"
            )
        return ring.view(slot, parse_dtype(dtype_text), shape, strides, nbytes), None
    raise ArrayFormatError(f"unknown array encoding (msgpack ext code {ext.code})")


def parse_dtype(text: str) -> np.dtype:
    """The dtype a peer named, refused unless `check_dtype` accepts it."""
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError) as err:
        raise ArrayFormatError(f"unknown dtype {text!r}") from err
    check_dtype(dtype)
    return dtype


def view_array(buffer: memoryview, dtype: np.dtype, shape: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """A view of `buffer` as the described array, after checking that every element lies inside it.

    Every dimension longer than one must step forward (a positive stride; an empty array has no elements
    for its strides to place), and the array may hold no more bytes than its buffer: a peer cannot make one
    byte stand for a terabyte of repeated elements that a reader would then copy out. So a decoded array is
    never bigger than the message (or ring slot) that carried it, which `WorkerPolicy.max_message_bytes`
    (ZMQ_MAXMSGSIZE) and the ring's slot size bound.
    """
    shape, strides = _ints(shape, "shape"), _ints(strides, "strides")
    if len(strides) != len(shape) or any(dim < 0 for dim in shape):
        raise ArrayFormatError(f"shape {list(shape)} and strides {list(strides)} do not describe an array")
    if 0 not in shape and any(dim > 1 and step <= 0 for dim, step in zip(shape, strides, strict=True)):
        raise ArrayFormatError(
            f"strides {list(strides)} of shape {list(shape)}: a dimension longer than one needs a positive stride"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > buffer.nbytes:
        raise ArrayFormatError(
            f"shape {list(shape)} of {dtype} holds {nbytes} bytes, more than its {buffer.nbytes}-byte buffer"
        )
    if nbytes:
        high = sum((dim - 1) * step for dim, step in zip(shape, strides, strict=True) if dim > 1) + dtype.itemsize
        if high > buffer.nbytes:
            raise ArrayFormatError(
                f"shape {list(shape)} with strides {list(strides)} spans bytes 0..{high} of a "
                f"{buffer.nbytes}-byte buffer"
            )
    try:
        return np.ndarray(shape, dtype, buffer=buffer, strides=strides)
    except (TypeError, ValueError) as err:
        raise ArrayFormatError(f"cannot view the buffer as {dtype} {list(shape)}: {err}") from err


def c_strides(shape: Sequence[int], itemsize: int) -> list[int]:
    """Byte strides of a C-order array of `shape`."""
    strides, step = [], itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return strides[::-1]


def _ext(code: int, fields: list[Any]) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(fields, use_bin_type=True))


def _fields(data: bytes, types: tuple[type, ...]) -> list[Any]:
    """The fields of an array description, checked against `types` (bools are not ints here)."""
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as err:  # msgpack documents no common base class for its unpacking errors
        raise ArrayFormatError(f"array description is not valid msgpack ({err})") from err
    if (
        not isinstance(fields, list)
        or len(fields) != len(types)
        or any(type(value) is not kind for value, kind in zip(fields, types, strict=True))
    ):
        expected = ", ".join(kind.__name__ for kind in types)
        raise ArrayFormatError(f"array description is not a list of ({expected})")
    return fields


def _ints(values: Sequence[Any], what: str) -> tuple[int, ...]:
    if len(values) > _MAX_DIMS or any(type(value) is not int for value in values):
        raise ArrayFormatError(f"{what} {list(values)!r} is not a list of at most {_MAX_DIMS} integers")
    return tuple(values)
