"""Round trips and refusals of the wire protocol, in process and over a real ZeroMQ socket pair."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from workers.headers import ErrorReport, WorkerInfo
from workers.protocol import PROTOCOL_VERSION, Decoder, Encoder, Kind, Message, ProtocolError
from workers.shm_ring import ShmRingReader, ShmRingWriter

NUMERIC_DTYPES = [
    "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16",
    "M8[ns]", "m8[s]", ">i4", ">f8",
]  # fmt: skip
DTYPES = ["?", *NUMERIC_DTYPES, "U5", "S3"]
LAYOUTS = ["c", "fortran", "strided", "empty", "0-d"]
PATHS = ["inline", "frame", "shm"]
BIG = np.arange(100_000, dtype=np.float64)  # 800 kB: out of band under the default thresholds


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values of `dtype` from random bits, so floats include NaNs with arbitrary payloads."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    count = math.prod(shape)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dt)
    if dt.kind in "SU":
        return np.array([f"s{i}"[: dt.itemsize] for i in rng.integers(0, 99, size=count)], dtype=dt).reshape(shape)
    return rng.integers(0, 256, size=count * dt.itemsize, dtype=np.uint8).view(dt).reshape(shape)


def layout(dtype: str, kind: str) -> np.ndarray:
    if kind == "c":
        return sample(dtype, (5, 7))
    if kind == "fortran":
        return np.asfortranarray(sample(dtype, (5, 7)))
    if kind == "strided":
        return sample(dtype, (10, 21))[::2, ::3]
    if kind == "empty":
        return sample(dtype, (0, 3))
    return sample(dtype, ())


def bits(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def assert_same(got: Any, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(bits(got), bits(want))
    if want.dtype.kind not in "fcmM":
        assert np.array_equal(got, want)


def codec(path: str, request: pytest.FixtureRequest) -> tuple[Encoder, Decoder]:
    """An encoder/decoder pair that sends every array through `path`."""
    if path == "inline":
        return Encoder(inline_threshold=1 << 30), Decoder()
    if path == "frame":
        return Encoder(inline_threshold=-1), Decoder()
    writer, reader = request.getfixturevalue("ring")
    return Encoder(inline_threshold=-1, ring=writer, shm_threshold=0), Decoder(ring=reader)


def transported(frames: list[bytes | memoryview]) -> list[bytes]:
    """The frames as a receiver gets them with copying receives: fresh bytes, no memory shared with the sender."""
    return [bytes(frame) for frame in frames]


def head(payload: Any = None, **fields: Any) -> bytes:
    """A hand-built header frame, for messages no `Encoder` would produce."""
    return msgpack.packb({"v": PROTOCOL_VERSION, "k": "batch", "id": 0, "h": {}, "p": payload, **fields})


def ext(code: int, *fields: Any) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(list(fields)))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_array_round_trip_is_bit_exact(dtype: str, kind: str, path: str, request: pytest.FixtureRequest) -> None:
    encoder, decoder = codec(path, request)
    arr = layout(dtype, kind)
    frames, slots = encoder.encode(Message(Kind.BATCH, 1, payload={"x": arr}))
    expected_frames, expected_slots = {"inline": (1, 0), "frame": (2, 0), "shm": (1, 1)}[path]
    assert (len(frames), len(slots)) == (expected_frames, expected_slots)
    assert_same(decoder.decode(transported(frames)).payload["x"], arr)
    if slots:
        request.getfixturevalue("ring")[0].release(slots)


@pytest.mark.parametrize("arr", [sample("f4", (64, 48)), np.asfortranarray(sample("f4", (64, 48)))], ids=["c", "f"])
def test_contiguous_arrays_are_sent_from_their_own_memory(arr: np.ndarray) -> None:
    frames, _ = Encoder().encode(Message(Kind.BATCH, payload=arr))
    assert np.shares_memory(frames[1].obj, arr)
    assert_same(Decoder().decode(transported(frames)).payload, arr)


def test_decoded_arrays_are_views_on_the_received_frames() -> None:
    received = transported(Encoder().encode(Message(Kind.RESULT, 3, payload=[BIG]))[0])
    got = Decoder().decode(received).payload[0]
    assert got.base is received[1]


def test_arrays_from_shared_memory_are_read_only(ring: tuple[ShmRingWriter, ShmRingReader]) -> None:
    writer, reader = ring
    frames, slots = Encoder(ring=writer).encode(Message(Kind.BATCH, 1, payload=BIG))
    got = Decoder(ring=reader).decode(frames).payload
    assert_same(got, BIG)
    assert not got.flags.writeable
    with pytest.raises(ValueError):
        got[0] = 1.0
    writer.release(slots)


def test_plain_values_and_numpy_scalars_round_trip() -> None:
    payload = {
        "none": None, "flag": True, "small": -(2**63), "big": 2**64 - 1, "ratio": 0.25, "name": "clip.mp4",
        "blob": b"\x00\xff", "nested": {"list": [1, [2, {"x": "y"}]], "pair": (1, "a")},
        "np": [np.float32(1.5), np.int64(-3), np.uint64(2**64 - 1), np.bool_(True), np.str_("s"), np.bytes_(b"b")],
    }  # fmt: skip
    msg = Message(Kind.SETUP, 0, {"pid": 42, "executable": "/usr/bin/python3", "sizes": [1, 2]}, payload)
    got = Decoder().decode(transported(Encoder().encode(msg)[0]))
    assert got.kind is Kind.SETUP and got.request_id == 0 and got.header == msg.header
    assert got.payload == {
        **payload,
        "nested": {"list": [1, [2, {"x": "y"}]], "pair": [1, "a"]},
        "np": [1.5, -3, 2**64 - 1, True, "s", b"b"],
    }
    assert [type(value) for value in got.payload["np"]] == [float, int, int, bool, str, bytes]


INFO = WorkerInfo(41, "stage/0", "ocr", "/envs/ocr/bin/python", "3.12.3", {"numpy": "2.1.0"}, "0,1")
REPORT = ErrorReport("batch", "KeyError", "'frames'", "Traceback ...", None)
HEADERS = {Kind.READY: INFO.to_header(), Kind.ERROR: REPORT.to_header(), Kind.DEAD: REPORT.to_header()}


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_round_trips(kind: Kind) -> None:
    got = Decoder().decode(Encoder().encode(Message(kind, 2**64 - 1, HEADERS.get(kind, {})))[0])
    assert (got.kind, got.request_id, got.header, got.payload) == (kind, 2**64 - 1, HEADERS.get(kind, {}), None)


def test_ready_error_and_item_headers_decode_into_typed_records() -> None:
    def decoded(kind: Kind, header: dict[str, Any], payload: Any = None) -> Message:
        return Decoder().decode(Encoder().encode(Message(kind, 5, header, payload))[0])

    assert decoded(Kind.READY, INFO.to_header()).worker_info() == INFO
    assert decoded(Kind.ERROR, REPORT.to_header()).error_report() == REPORT
    missing = ErrorReport("import", "ModuleNotFoundError", "No module named 'torch'", "", "torch")
    assert decoded(Kind.ERROR, missing.to_header()).error_report() == missing
    result = decoded(Kind.RESULT, {"failed": [[1, REPORT.to_header()]]}, [{"ok": 1}, None, {"ok": 3}])
    assert result.item_errors() == {1: REPORT}
    assert decoded(Kind.RESULT, {}, [1, 2]).item_errors() == {}


@pytest.mark.parametrize(
    ("kind", "header", "payload", "message"),
    [
        ("result", {"failed": "x"}, [None], "failed is a 'str', not a list"),
        ("result", {"failed": [[0, "boom"]]}, [None], r"failed item 0 is a 'str', not a map"),
        ("result", {"failed": [[0]]}, [None], r"failed entry \[0\] is not \[item index, error header\]"),
        ("result", {"failed": [["0", {}]]}, [None], r"is not \[item index, error header\]"),
        ("result", {"failed": [[True, {}]]}, [None], r"is not \[item index, error header\]"),
        ("result", {"failed": [[3, REPORT.to_header()]]}, [None], "failed item 3 is not one of its 1 results"),
        ("result", {"failed": [[0, REPORT.to_header()]] * 2}, [None], "failed item 0 .* named twice"),
        ("result", {"failed": [[0, REPORT.to_header()]]}, "not a list", "not one of its 0 results"),
        ("result", {"failed": [[0, {**REPORT.to_header(), "stage": ["x"]}]]}, [None], "stage is a 'list'"),
        ("error", {"stage": "batch", "type": "E"}, None, r"error header lacks \['message'\]"),
        ("error", {**REPORT.to_header(), "message": 3}, None, "message is a 'int', not a string"),
        ("error", {**REPORT.to_header(), "missing_module": 1}, None, "missing_module is a 'int'"),
        ("error", {**REPORT.to_header(), "extra": 1}, None, r"unknown fields \['extra'\]"),
        ("dead", {"traceback": "x"}, None, "error header lacks"),
        ("ready", {"pid": 1}, None, "READY header lacks"),
        ("ready", {**INFO.to_header(), "pid": "41"}, None, "pid is a 'str', not int"),
        ("ready", {**INFO.to_header(), "packages": {"numpy": 2}}, None, "packages must map names to version"),
    ],
)  # fmt: skip
def test_malformed_typed_headers_fail_the_request_they_name(kind: str, header: Any, payload: Any,
                                                            message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as caught:
        Decoder().decode([msgpack.packb({"v": PROTOCOL_VERSION, "k": kind, "id": 7, "h": header, "p": payload})])
    assert caught.value.request_id == 7


def test_a_bad_array_names_the_request_it_answers() -> None:
    with pytest.raises(ProtocolError, match="unknown array encoding") as caught:
        Decoder().decode([head({"a": ext(9, "|u1")}, id=12)])
    assert caught.value.request_id == 12


def test_torch_tensors_are_sent_as_arrays_without_importing_torch() -> None:
    arr = sample("f4", (3, 4))
    got = Decoder().decode(Encoder().encode(Message(Kind.RESULT, 1, payload={"t": FakeTensor(arr)}))[0])
    assert_same(got.payload["t"], arr)


def test_torch_tensor_without_numpy_equivalent_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"tensor at payload\['t'\]: torch tensor of dtype torch.bfloat16"):
        Encoder().encode(Message(Kind.RESULT, 1, payload={"t": FakeTensor(None)}))


def test_full_ring_and_oversized_arrays_fall_back_to_frames() -> None:
    writer = ShmRingWriter(n_slots=1, slot_bytes=BIG.nbytes)
    try:
        encoder = Encoder(ring=writer)
        frames, slots = encoder.encode(Message(Kind.BATCH, 1, payload=[BIG, BIG, np.zeros(BIG.size + 1)]))
        assert slots == [0] and len(frames) == 3 and writer.free_slots == 0
        frames, slots = encoder.encode(Message(Kind.BATCH, 2, payload=[BIG]))
        assert slots == [] and len(frames) == 2
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["frame", "shm"])
def test_full_hd_frame_over_a_zmq_pair(path: str, tmp_path: Any, request: pytest.FixtureRequest) -> None:
    encoder, decoder = codec(path, request) if path == "shm" else (Encoder(), Decoder())
    video = np.random.default_rng(1).integers(0, 256, size=(1080, 1920, 3), dtype=np.uint8)
    payload = {"frames": [video, video[:, ::-1]], "fps": np.float64(29.97), "ids": np.arange(2)}
    context = zmq.Context()
    sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    try:
        receiver.rcvtimeo = 10_000
        sender.bind(f"ipc://{tmp_path}/pair.sock")
        receiver.connect(f"ipc://{tmp_path}/pair.sock")
        frames, slots = encoder.encode(Message(Kind.BATCH, 9, {"model": "aesthetics"}, payload))
        sender.send_multipart(frames, copy=False)
        got = decoder.decode(receiver.recv_multipart(copy=False))
    finally:
        sender.close(linger=0)
        receiver.close(linger=0)
        context.term()
    assert (got.kind, got.request_id, got.header) == (Kind.BATCH, 9, {"model": "aesthetics"})
    assert_same(got.payload["frames"][0], video)
    assert_same(got.payload["frames"][1], video[:, ::-1])
    assert_same(got.payload["ids"], np.arange(2))
    assert got.payload["fps"] == 29.97
    if slots:
        request.getfixturevalue("ring")[0].release(slots)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "empty message"),
        ([b"\xc1garbage"], "header frame is not valid msgpack"),
        ([msgpack.packb(1) + b"trailing"], "header frame is not valid msgpack"),
        ([msgpack.packb([1, "batch"])], "header frame holds a 'list', not a message map"),
        ([head(v=1)], "peer speaks protocol version 1, this side speaks 2"),
        ([msgpack.packb({"k": "batch"})], "peer speaks protocol version None, this side speaks 2"),
        ([msgpack.packb({"v": PROTOCOL_VERSION, "k": "batch"})], r"header frame has keys \['k', 'v'\]"),
        ([head(k="reboot")], "unknown message kind 'reboot'"),
        ([head(id=-1)], "request id -1 is outside"),
        ([head(id="7")], "request id '7' is not an integer"),
        ([head(h=[])], "message header is a 'list', not a dict"),
        ([head(h={"a": ext(1, "|u1", [1], b"x")})], r"array at header\['a'\]: the header carries small metadata"),
        ([head({"a": ext(2, "|u1", [4], [1], 1)})], "frame index 1 is out of range: the message has 0 buffer"),
        ([head({"a": ext(2, "|u1", [4], [1], 5)}), b"abcd"], "frame index 5 is out of range"),
        ([head({"a": ext(2, "|u1", [4], [1], 0)}), b"abcd"], "frame index 0 is out of range"),
        ([head({"a": ext(2, "<u4", [10], [4], 1)}), bytes(8)], "holds 40 bytes, more than its 8-byte buffer"),
        ([head({"a": ext(2, "<u4", [2], [8], 1)}), bytes(8)], "spans bytes 0..12 of a 8-byte buffer"),
        ([head({"a": ext(2, "|u1", [4], [-1], 1)}), bytes(8)], r"strides \[-1\] of shape \[4\]: a dimension longer"),
        ([head({"a": ext(2, "|u1", [4, 1], [1], 1)}), bytes(8)], r"shape \[4, 1\] and strides \[1\] do not"),
        ([head({"a": ext(2, "|u1", [2**20, 2**20], [0, 0], 1)}), b"x"], r"strides \[0, 0\] of shape \[1048576, "),
        ([head({"a": ext(2, "<f8", [2**20, 2], [0, 8], 1)}), bytes(16)], "a dimension longer than one needs a pos"),
        ([head({"a": ext(2, "|u1", [1024, 1024], [1, 1], 1)}), bytes(2047)], "holds 1048576 bytes, more than its 2047"),
        ([head({"a": ext(2, "|u1", [-4], [1], 1)}), bytes(8)], "do not describe an array"),
        ([head({"a": ext(2, "|u1", ["4"], [1], 1)}), bytes(8)], r"shape \['4'\] is not a list of at most"),
        ([head({"a": ext(2, "|u1", [4], [1])}), bytes(8)], r"not a list of \(str, list, list, int\)"),
        ([head({"a": ext(2, "|u1", [4], [1], True)}), bytes(8)], r"not a list of \(str, list, list, int\)"),
        ([head({"a": msgpack.ExtType(2, b"\xc1")}), bytes(8)], "array description is not valid msgpack"),
        ([head({"a": ext(1, "|O", [1], bytes(8))})], r"dtype object \('\|O'\) is not a plain fixed-size type"),
        ([head({"a": ext(1, "|V4", [1], bytes(4))})], r"dtype \|V4 \('\|V4'\) is not a plain"),
        ([head({"a": ext(1, "<i4,<f8", [1], bytes(12))})], "is not a plain fixed-size type"),
        ([head({"a": ext(1, "nonsense", [1], bytes(4))})], "unknown dtype 'nonsense'"),
        ([head({"a": ext(1, "<i4", [2], bytes(12))})], r"inline array of shape \[2\] needs 8 bytes, got 12"),
        ([head({"a": ext(3, "|u1", [4], [1], 0, 4)})], "slot 0 but this side has no shared-memory ring"),
        ([head({"a": ext(9, "|u1")})], r"bad array at payload\['a'\]: unknown array encoding \(msgpack ext code 9\)"),
        ([head({}), b"stray"], r"message has 1 buffer frame\(s\) but its payload references frames \[\]"),
        ([head([ext(2, "|u1", [1], [1], 1)] * 2), b"x"], r"references frames \[1, 1\]"),
        ([msgpack.packb({1: 2})], "header frame is not valid msgpack"),
        ([head({"a": {b"k": 1}})], r"dict key b'k' of type 'bytes' at payload\['a'\] is not a string"),
    ],
)  # fmt: skip
def test_decoder_refuses_malformed_messages(frames: list[bytes], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        Decoder().decode(frames)


def test_decoder_refuses_a_truncated_frame_list() -> None:
    frames, _ = Encoder().encode(Message(Kind.BATCH, 1, payload=[BIG, BIG]))
    with pytest.raises(ProtocolError, match=r"payload\[1\]: frame index 2 is out of range: the message has 1 buffer"):
        Decoder().decode(transported(frames)[:-1])


def test_decoder_refuses_too_many_frames() -> None:
    with pytest.raises(ProtocolError, match="message has 3 frames, more than the limit of 2"):
        Decoder(max_frames=2).decode([head(), b"a", b"b"])


def test_decoder_refuses_slots_outside_its_ring(ring: tuple[ShmRingWriter, ShmRingReader]) -> None:
    frames = [head({"a": ext(3, "|u1", [4], [1], 4, 4)})]
    with pytest.raises(ProtocolError, match=r"bad array at payload\['a'\]: slot 4 with 4 bytes is outside the ring"):
        Decoder(ring=ring[1]).decode(frames)


class Opaque:
    pass


class FakeTensor:
    """Looks like a torch tensor to the codec, which only checks the module name and `detach`."""

    __module__ = "torch"

    def __init__(self, array: np.ndarray | None) -> None:
        self._array = array
        self.dtype = "torch.float32" if array is not None else "torch.bfloat16"

    def detach(self) -> FakeTensor:
        return self

    def cpu(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        if self._array is None:
            raise TypeError("Got unsupported ScalarType BFloat16")
        return self._array


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"x": [1, 2, {3}]}, r"cannot encode value of type 'set' at payload\['x'\]\[2\]: use lists, dicts"),
        ({"x": {"img": np.array([Opaque()])}}, r"cannot encode array at payload\['x'\]\['img'\]: dtype object"),
        ({"cfg": Opaque()}, r"cannot encode value of type 'Opaque' at payload\['cfg'\]"),
        ({"rec": np.zeros(2, dtype=[("a", "<i4")])}, r"array at payload\['rec'\]: dtype \[\('a', '<i4'\)\]"),
        ([1j], r"type 'complex' at payload\[0\]"),
        ([np.complex64(1j)], r"numpy scalar of type 'complex64' at payload\[0\]: send it as a 0-d array"),
        ([2**64], r"integer 18446744073709551616 at payload\[0\] does not fit in 64 bits"),
        ({1: "a"}, "dict key 1 of type 'int' at payload is not a string"),
        ([bytearray(b"x")], "type 'bytearray'"),
    ],
)
def test_encoder_refuses_values_it_cannot_send(payload: Any, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        Encoder().encode(Message(Kind.RESULT, 1, payload=payload))


def test_encoder_refuses_arrays_and_deep_nesting_in_the_header() -> None:
    with pytest.raises(ProtocolError, match=r"array at header\['a'\]: the header carries small metadata"):
        Encoder().encode(Message(Kind.SETUP, 0, {"a": np.zeros(2)}))
    nested: list[Any] = []
    nested.append(nested)
    with pytest.raises(ProtocolError, match="nested more than 100 levels deep"):
        Encoder().encode(Message(Kind.SETUP, 0, payload=nested))


def test_encoder_releases_its_slots_when_a_later_value_fails() -> None:
    writer = ShmRingWriter(n_slots=4, slot_bytes=BIG.nbytes)
    try:
        with pytest.raises(ProtocolError, match=r"type 'set' at payload\['c'\]"):
            Encoder(ring=writer).encode(Message(Kind.BATCH, 1, payload={"a": BIG, "b": BIG, "c": {1}}))
        assert writer.free_slots == 4
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "batch"}, "message kind 'batch' is not a Kind"),
        ({"kind": Kind.BATCH, "request_id": True}, "request id True is not an integer"),
        ({"kind": Kind.BATCH, "request_id": 2**64}, "request id 18446744073709551616 is outside"),
        ({"kind": Kind.BATCH, "header": [("a", 1)]}, "message header is a 'list', not a dict"),
    ],
)
def test_messages_are_checked_when_built(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        Message(**fields)
