"""The decoder both sides run, fed random and mutated messages: it answers with a message or a ProtocolError,
never another exception, and a header frame's request id is read back whenever it is still there. An array it
returns never holds more bytes than the frame that carried it, and a READY, ERROR or item RESULT it returns
always reads as its typed record."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.protocol import PROTOCOL_VERSION, Decoder, Encoder, Kind, Message, ProtocolError, peek_request_id

VALID = [
    Encoder(inline_threshold=-1).encode(Message(Kind.BATCH, 7, {"items": True}, [{"frames": np.zeros((2, 4, 3))}]))[0],
    Encoder().encode(Message(Kind.RESULT, 9, {"failed": [[0, {"type": "E"}]]}, [None, {"x": 1.5}]))[0],
    Encoder().encode(Message(Kind.READY, 0, {"pid": 1, "packages": {"numpy": "2"}}))[0],
]
FIELDS = ("v", "k", "id", "h", "p")
INTS = st.integers(-(2**63), 2**64 - 1)
"""What msgpack can carry."""


def decodes_or_refuses(frames: list[bytes]) -> Message | None:
    """The decoded message, or None when it was refused; a refusal after the header names its request."""
    try:
        message = Decoder().decode(frames)
    except ProtocolError as err:
        assert err.request_id is None or err.request_id == peek_request_id(frames[0])
        return None
    assert isinstance(message, Message)
    typed = {Kind.READY: message.worker_info, Kind.ERROR: message.error_report, Kind.DEAD: message.error_report,
             Kind.RESULT: message.item_errors}
    if message.kind in typed:
        typed[message.kind]()  # never raises on a message the decoder accepted
    return message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_random_frames_decode_or_are_refused(frames: list[bytes]) -> None:
    decodes_or_refuses(frames)
    if frames:
        assert peek_request_id(frames[0]) is None or isinstance(peek_request_id(frames[0]), int)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_mutated_messages_decode_or_are_refused(valid: list, data: st.DataObject) -> None:
    frames = [bytes(frame) for frame in valid]
    index = data.draw(st.integers(0, len(frames) - 1))
    frame = bytearray(frames[index])
    mutation = data.draw(st.sampled_from(["flip", "truncate", "extend", "drop", "duplicate"]))
    if mutation == "flip" and frame:
        at = data.draw(st.integers(0, len(frame) - 1))
        frame[at] ^= data.draw(st.integers(1, 255))
    elif mutation == "truncate":
        frame = frame[: data.draw(st.integers(0, len(frame)))]
    elif mutation == "extend":
        frame += data.draw(st.binary(min_size=1, max_size=16))
    frames[index] = bytes(frame)
    if mutation == "drop":
        del frames[index]
    elif mutation == "duplicate":
        frames.insert(index, frames[index])
    decodes_or_refuses(frames)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), st.none() | INTS | st.text(max_size=8)
                       | st.binary(max_size=8) | st.lists(INTS, max_size=3), min_size=1))
def test_header_maps_with_wrong_fields_are_refused_and_their_id_recovered(head: dict) -> None:
    frame = msgpack.packb(head)
    decodes_or_refuses([frame])
    request_id = head.get("id")
    expected = request_id if isinstance(request_id, int) and 0 <= request_id < 2**64 else None
    assert peek_request_id(frame) == expected


DIMS = st.lists(st.integers(0, 2**21), min_size=0, max_size=4)
STRIDES = st.integers(-(2**21), 2**21)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["|u1", "<u2", "<f4", "<f8"]), DIMS, st.data(), st.integers(0, 256))
def test_decoded_arrays_never_hold_more_bytes_than_their_frame(dtype: str, shape: list[int], data: st.DataObject,
                                                              frame_bytes: int) -> None:
    strides = data.draw(st.lists(STRIDES | st.sampled_from([0, -1]), min_size=len(shape), max_size=len(shape)))
    description = msgpack.packb([dtype, shape, strides, 1])
    head = {"v": PROTOCOL_VERSION, "k": "result", "id": 3, "h": {}, "p": msgpack.ExtType(2, description)}
    message = decodes_or_refuses([msgpack.packb(head), bytes(frame_bytes)])
    if message is not None:
        array = message.payload
        assert array.nbytes <= frame_bytes
        assert all(step > 0 for dim, step in zip(array.shape, array.strides, strict=True) if dim > 1) or not array.size


ERROR_FIELDS = st.sampled_from(["stage", "type", "message", "traceback", "missing_module", "other"])
FIELD_VALUES = st.none() | INTS | st.text(max_size=8) | st.lists(st.text(max_size=3), max_size=2) | st.booleans()
ERROR_HEADERS = st.dictionaries(ERROR_FIELDS, FIELD_VALUES, max_size=6) | FIELD_VALUES
FAILED = st.lists(st.lists(INTS | ERROR_HEADERS, min_size=0, max_size=3) | FIELD_VALUES, max_size=3) | FIELD_VALUES


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["error", "dead", "result", "ready"]), FAILED, ERROR_HEADERS,
       st.lists(st.none(), max_size=3) | st.none())
def test_malformed_error_and_failed_headers_fail_their_request(kind: str, failed: object, error: object,
                                                               payload: object) -> None:
    header = {"failed": failed} if kind == "result" else error
    frame = msgpack.packb({"v": PROTOCOL_VERSION, "k": kind, "id": 11, "h": header, "p": payload})
    try:
        message = Decoder().decode([frame])
    except ProtocolError as err:
        assert err.request_id == 11
        return
    typed = message.item_errors() if kind == "result" else (
        message.worker_info() if kind == "ready" else message.error_report())
    assert typed is not None
