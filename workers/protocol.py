"""The messages a worker and its parent exchange, and their layout on the wire.

    frame 0      msgpack map {"v": version, "k": kind, "id": request id, "h": header, "p": payload}
    frame 1..N   out-of-band array buffers, referenced from the payload by frame index

Arrays in the payload travel as msgpack extension objects (`workers.tensor_codec`): small ones inline,
big ones in a frame of their own (zero-copy) or, on one host, in a shared-memory ring slot. The headers of
READY, ERROR, DEAD and item RESULT messages are checked against `workers.headers` and read back as typed
records. Both sides import this module, and a peer speaking another `PROTOCOL_VERSION` is refused on its
first message. The control socket carries one raw message, `SHUTDOWN`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack
import numpy as np
import zmq

from workers.headers import ErrorReport, HeaderError, WorkerInfo, item_errors
from workers.shared_frames import SharedFrames, SharedFramesDir
from workers.tensor_codec import (
    SHARED_CODE,
    ArrayFormatError,
    check_dtype,
    decode_ext,
    decode_shared,
    frame_ext,
    inline_ext,
    shared_ext,
    slot_ext,
    to_wire_array,
)

if TYPE_CHECKING:
    from workers.shm_ring import ShmRingReader, ShmRingWriter

PROTOCOL_VERSION = 2

_HEAD_KEYS = frozenset({"v", "k", "id", "h", "p"})
_MAX_DEPTH = 100
_INT_RANGE = range(-(2**63), 2**64)
_REQUEST_IDS = range(2**64)
_PLAIN_HINT = "use lists, dicts, numbers, strings, bytes or arrays"

_T = TypeVar("_T")

# Where a value sits in a message: the root's name, or (parent path, key). Formatted only for errors.
_Path = str | tuple["_Path", Any]


SHUTDOWN = b"shutdown"
"""The one message of a worker's control socket: exit now. Raw bytes, not a `Message`: the worker's control
thread reads it without a decoder, and it never waits behind batches queued on the data socket."""


class ProtocolError(Exception):
    """A message that is malformed, of another protocol version, or not encodable.

    `request_id` names the request a malformed reply answers, when its header frame still says so: that
    request fails, and the worker goes on with the others."""

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class Kind(str, enum.Enum):
    """What a message is for; the value is what travels."""

    READY = "ready"
    DESCRIBE = "describe"
    SETUP = "setup"
    BATCH = "batch"
    RESULT = "result"
    ERROR = "error"
    HEARTBEAT = "heartbeat"
    DEAD = "dead"


@dataclass(frozen=True)
class Message:
    """One message.

    `request_id` pairs a RESULT or ERROR with its BATCH (0 when the message answers no request);
    `header` holds small metadata, `payload` the data, arrays and torch tensors included.
    """

    kind: Kind
    request_id: int = 0
    header: dict[str, Any] = field(default_factory=dict)
    payload: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind):
            raise ProtocolError(f"message kind {self.kind!r} is not a Kind")
        if not isinstance(self.request_id, int) or isinstance(self.request_id, bool):
            raise ProtocolError(f"request id {self.request_id!r} is not an integer")
        if self.request_id not in _REQUEST_IDS:
            raise ProtocolError(f"request id {self.request_id} is outside 0..2**64-1")
        if not isinstance(self.header, dict):
            raise ProtocolError(f"message header is a {type(self.header).__name__!r}, not a dict")

    def worker_info(self) -> WorkerInfo:
        """A READY message's header."""
        return self._typed(lambda: WorkerInfo.from_header(self.header))

    def error_report(self) -> ErrorReport:
        """An ERROR or DEAD message's header: why the request (or the worker) failed."""
        return self._typed(lambda: ErrorReport.from_header(self.header))

    def item_errors(self) -> dict[int, ErrorReport]:
        """A RESULT's failed items, by position in its list of results (empty for other requests)."""
        n_items = len(self.payload) if isinstance(self.payload, list) else None
        return self._typed(lambda: item_errors(self.header, n_items))

    def _typed(self, read: Callable[[], _T]) -> _T:
        """The header read as a typed record; a `Decoder` already refused the messages where this raises."""
        try:
            return read()
        except HeaderError as err:
            raise ProtocolError(f"{self.kind.value} message for request {self.request_id}: {err}",
                                self.request_id) from err


@dataclass
class _Outgoing:
    frames: list[memoryview] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)


@dataclass
class _Incoming:
    buffers: Sequence[memoryview]
    used: list[int] = field(default_factory=list)


class Encoder:
    """Turns messages into frames for `socket.send_multipart(frames, copy=False)`.

    The whole message is validated and built before `encode` returns, so a bad value never leaves half a
    message on the socket. Arrays sent in a frame of their own are not copied: leave them unchanged until
    the send completes. Arrays of at most `inline_threshold` bytes go inside the header frame (a negative
    threshold sends every array out of band); with a `ring`, arrays of at least `shm_threshold` bytes go
    through shared memory while it has a slot that fits them.
    """

    def __init__(
        self, inline_threshold: int = 4096, ring: ShmRingWriter | None = None, shm_threshold: int = 65536
    ) -> None:
        self._inline_threshold = inline_threshold
        self._ring = ring
        self._shm_threshold = shm_threshold

    def encode(self, msg: Message) -> tuple[list[bytes | memoryview], list[int]]:
        """The frames of `msg`, and the ring slots they use, which the caller releases on the ring when the
        reply to this request arrives or the worker dies."""
        out = _Outgoing()
        try:
            head = {
                "v": PROTOCOL_VERSION,
                "k": msg.kind.value,
                "id": msg.request_id,
                "h": self._to_wire(msg.header, "header", 0, None),
                "p": self._to_wire(msg.payload, "payload", 0, out),
            }
            first = msgpack.packb(head, use_bin_type=True)
        except BaseException:
            if self._ring is not None:
                self._ring.release(out.slots)
            raise
        return [first, *out.frames], out.slots

    def _to_wire(self, value: Any, path: _Path, depth: int, out: _Outgoing | None) -> Any:
        """`value` as msgpack-ready data with arrays replaced by extension objects; `out` None forbids arrays."""
        if depth > _MAX_DEPTH:
            raise ProtocolError(f"{_format(path)} is nested more than {_MAX_DEPTH} levels deep")
        if isinstance(value, np.generic):
            value = _python_scalar(value, path)
        if value is None or isinstance(value, (bool, float, str, bytes)):
            return value
        if isinstance(value, int):
            if value not in _INT_RANGE:
                raise ProtocolError(f"integer {value} at {_format(path)} does not fit in 64 bits")
            return value
        if isinstance(value, dict):
            return {_key(key, path): self._to_wire(item, (path, key), depth + 1, out) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._to_wire(item, (path, i), depth + 1, out) for i, item in enumerate(value)]
        if isinstance(value, SharedFrames) and out is not None:
            return shared_ext(value)
        try:
            array = to_wire_array(value)
        except ArrayFormatError as err:
            raise ProtocolError(f"cannot encode tensor at {_format(path)}: {err}") from err
        if array is None:
            raise ProtocolError(
                f"cannot encode value of type {type(value).__name__!r} at {_format(path)}: {_PLAIN_HINT}"
            )
        if out is None:
            raise ProtocolError(f"array at {_format(path)}: the header carries small metadata, not arrays")
        return self._pack_array(array, path, out)

    def _pack_array(self, array: np.ndarray, path: _Path, out: _Outgoing) -> msgpack.ExtType:
        try:
            check_dtype(array.dtype)
        except ArrayFormatError as err:
            raise ProtocolError(f"cannot encode array at {_format(path)}: {err}") from err
        if array.nbytes <= self._inline_threshold:
            return inline_ext(array)
        if self._ring is not None and array.nbytes >= self._shm_threshold:
            slot = self._ring.try_write(array)
            if slot is not None:
                out.slots.append(slot)
                return slot_ext(array, slot)
        ext, frame = frame_ext(array, len(out.frames) + 1)
        out.frames.append(frame)
        return ext


class Decoder:
    """Turns received frames back into a `Message`, refusing anything malformed with a `ProtocolError`.

    Arrays are views on the received frames or on the shared-memory ring, not copies, and may be
    read-only (always so in shared memory). An array in shared memory keeps its values until the parent
    releases the slot, which it does once the reply to that request arrives. Frames left in the run's
    frames folder are mapped from `frames_dir` (a model worker's side); without one (the orchestrator's
    side) they stay `SharedFrames` references, never read.
    """

    def __init__(self, ring: ShmRingReader | None = None, max_frames: int = 4096,
                 frames_dir: SharedFramesDir | None = None) -> None:
        self._ring = ring
        self._max_frames = max_frames
        self._frames_dir = frames_dir

    def decode(self, frames: Sequence[bytes | memoryview | zmq.Frame]) -> Message:
        """The message `frames` carry. A `ProtocolError` raised once the header frame is read names the
        request (`request_id`) when that frame holds a valid id."""
        if not frames:
            raise ProtocolError("empty message: expected at least the header frame")
        if len(frames) > self._max_frames:
            raise ProtocolError(f"message has {len(frames)} frames, more than the limit of {self._max_frames}")
        buffers = [frame.buffer if isinstance(frame, zmq.Frame) else memoryview(frame) for frame in frames]
        head = _unpack_head(buffers[0])
        try:
            return self._message(head, buffers)
        except ProtocolError as err:
            if err.request_id is None and _is_request_id(head["id"]):
                err.request_id = head["id"]
            raise

    def _message(self, head: dict[str, Any], buffers: list[memoryview]) -> Message:
        try:
            kind = Kind(head["k"])
        except ValueError:
            raise ProtocolError(f"unknown message kind {head['k']!r}") from None
        incoming = _Incoming(buffers)
        header = self._from_wire(head["h"], "header", 0, None)
        payload = self._from_wire(head["p"], "payload", 0, incoming)
        if sorted(incoming.used) != list(range(1, len(buffers))):
            raise ProtocolError(
                f"message has {len(buffers) - 1} buffer frame(s) but its payload references frames "
                f"{sorted(incoming.used)}"
            )
        message = Message(kind, head["id"], header, payload)
        _check_typed_header(message)
        return message

    def _from_wire(self, value: Any, path: _Path, depth: int, incoming: _Incoming | None) -> Any:
        """`value` with extension objects rebuilt as arrays; `incoming` None forbids arrays."""
        if depth > _MAX_DEPTH:
            raise ProtocolError(f"{_format(path)} is nested more than {_MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            return {
                _key(key, path): self._from_wire(item, (path, key), depth + 1, incoming) for key, item in value.items()
            }
        if isinstance(value, list):
            return [self._from_wire(item, (path, i), depth + 1, incoming) for i, item in enumerate(value)]
        if not isinstance(value, msgpack.ExtType):
            return value
        if incoming is None:
            raise ProtocolError(f"array at {_format(path)}: the header carries small metadata, not arrays")
        if value.code == SHARED_CODE:
            try:
                return decode_shared(value, self._frames_dir)
            except ArrayFormatError as err:
                raise ProtocolError(f"bad shared frames at {_format(path)}: {err}") from err
        try:
            array, frame_index = decode_ext(value, incoming.buffers, self._ring)
        except ArrayFormatError as err:
            raise ProtocolError(f"bad array at {_format(path)}: {err}") from err
        if frame_index is not None:
            incoming.used.append(frame_index)
        return array


def _check_typed_header(message: Message) -> None:
    """Refuse a READY, ERROR, DEAD or item RESULT whose header is not what `workers.headers` describes."""
    if message.kind is Kind.READY:
        message.worker_info()
    elif message.kind in (Kind.ERROR, Kind.DEAD):
        message.error_report()
    elif message.kind is Kind.RESULT and "failed" in message.header:
        message.item_errors()


def peek_request_id(head: memoryview | bytes) -> int | None:
    """The request id in a header frame whose message failed to decode as a whole, if it still holds a valid
    one: an error can then answer that request instead of none."""
    try:
        value = msgpack.unpackb(head, raw=False, strict_map_key=False)
    except Exception:  # msgpack documents no common base class for its unpacking errors
        return None
    request_id = value.get("id") if isinstance(value, dict) else None
    return request_id if _is_request_id(request_id) else None


def _is_request_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in _REQUEST_IDS


def _unpack_head(buffer: memoryview) -> dict[str, Any]:
    """The header map of frame 0, with its version checked first so that any other layout is named."""
    try:
        head = msgpack.unpackb(buffer, raw=False, strict_map_key=True, use_list=True)
    except Exception as err:  # msgpack documents no common base class for its unpacking errors
        raise ProtocolError(f"header frame is not valid msgpack ({type(err).__name__}: {err})") from err
    if not isinstance(head, dict):
        raise ProtocolError(f"header frame holds a {type(head).__name__!r}, not a message map")
    version = head.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(f"peer speaks protocol version {version!r}, this side speaks {PROTOCOL_VERSION}")
    if set(head) != _HEAD_KEYS:
        raise ProtocolError(f"header frame has keys {sorted(map(str, head))}, expected {sorted(_HEAD_KEYS)}")
    return head


def _python_scalar(value: np.generic, path: _Path) -> Any:
    if isinstance(value, (np.bool_, np.integer, np.floating, np.str_, np.bytes_)):
        return value.item()
    raise ProtocolError(
        f"cannot encode numpy scalar of type {type(value).__name__!r} at {_format(path)}: send it as a 0-d "
        "array with np.asarray(value)"
    )


def _key(key: Any, path: _Path) -> str:
    if not isinstance(key, str):
        raise ProtocolError(
            f"dict key {key!r} of type {type(key).__name__!r} at {_format(path)} is not a string: keys must be strings"
        )
    return key


def _format(path: _Path) -> str:
    keys = []
    while isinstance(path, tuple):
        path, key = path
        keys.append(key)
    return path + "".join(f"[{key!r}]" for key in reversed(keys))
