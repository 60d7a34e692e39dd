"""The decoder both sides run, fed random and mutated messages: it answers with a message or a ProtocolError,
never another exception, and a header frame's request id is read back whenever it is still there."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.protocol import Decoder, Encoder, Kind, Message, ProtocolError, peek_request_id

VALID = [
    Encoder(inline_threshold=-1).encode(Message(Kind.BATCH, 7, {"items": True}, [{"frames": np.zeros((2, 4, 3))}]))[0],
    Encoder().encode(Message(Kind.RESULT, 9, {"failed": [[0, {"type": "E"}]]}, [None, {"x": 1.5}]))[0],
    Encoder().encode(Message(Kind.READY, 0, {"pid": 1, "packages": {"numpy": "2"}}))[0],
]
FIELDS = ("v", "k", "id", "h", "p")
INTS = st.integers(-(2**63), 2**64 - 1)
"""What msgpack can carry."""


def decodes_or_refuses(frames: list[bytes]) -> None:
    try:
        message = Decoder().decode(frames)
    except ProtocolError:
        return
    assert isinstance(message, Message)


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
