"""Garbled messages between real processes: a worker answers what it cannot read with an error naming the
request and keeps serving; the parent fails the one request a bad reply names, drops replies for unknown
requests, and kills a worker whose messages cannot be read at all. Neither side crashes or hangs."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from orchestrator.errors import WorkerDied, WorkerError
from orchestrator.supervisor.events import Answer, Died, Failed
from orchestrator.supervisor.policy import StopGrace, WorkerPolicy
from tests.support.envs import fake_env
from workers.protocol import Decoder, Encoder, Kind, Message

FAKE_WORKER = """
import os, sys
import zmq
from workers.protocol import Decoder, Encoder, Kind, Message, PROTOCOL_VERSION
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
sock = zmq.Context().socket(zmq.PAIR)
sock.connect(args["--data"])
encoder, decoder, mode = Encoder(), Decoder(), os.environ["FAKE_MODE"]
from workers.headers import WorkerInfo
info = WorkerInfo(os.getpid(), "fake", "", sys.executable, "3", {}, "")
sock.send_multipart(encoder.encode(Message(Kind.READY, 0, info.to_header()))[0])
while sock.poll(30000):
    msg = decoder.decode(sock.recv_multipart())
    if msg.kind is not Kind.BATCH:
        sock.send_multipart(encoder.encode(Message(Kind.RESULT, msg.request_id, {"model": "Fake"}))[0])
    elif mode == "garbage":
        sock.send_multipart([b"\\xc1 not msgpack"])
    elif mode == "bad-array":
        import msgpack
        head = {"v": PROTOCOL_VERSION, "k": "result", "id": msg.request_id, "h": {}, "p": msgpack.ExtType(99, b"?")}
        sock.send_multipart([msgpack.packb(head)])
    elif mode == "bad-failed":
        sock.send_multipart(encoder.encode(Message(Kind.RESULT, msg.request_id, {"failed": [[0, "boom"]]}, [None]))[0])
    elif mode == "unknown-id":
        sock.send_multipart(encoder.encode(Message(Kind.RESULT, 987654321, {}, "stray"))[0])
        sock.send_multipart(encoder.encode(Message(Kind.RESULT, msg.request_id, {}, "real"))[0])
    elif mode == "huge":
        sock.send_multipart([b"x" * 4096])
"""


def fake_worker(make_handle, tmp_path: Path, mode: str, **policy: float):
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)
    env = fake_env(tmp_path, f'shift 2; exec {sys.executable} {tmp_path / "fake_worker.py"} "$@"')
    handle = make_handle(env=env, extra_environ={"FAKE_MODE": mode},
                         policy=WorkerPolicy(stop=StopGrace(0.5, 0.5), **policy))
    return handle


def test_a_reply_that_cannot_be_decoded_fails_only_its_request(make_handle, tmp_path: Path) -> None:
    handle = fake_worker(make_handle, tmp_path, "bad-array")
    with pytest.raises(WorkerError, match=r"its reply could not be decoded: bad array"):
        handle.call({"x": 1}, timeout=5)  # reported at once, not when the wait runs out
    assert handle.poll() is None and not handle.in_flight


def test_a_reply_with_a_malformed_failed_header_fails_only_its_request(make_handle, tmp_path: Path) -> None:
    handle = fake_worker(make_handle, tmp_path, "bad-failed")
    for _ in range(2):  # the worker goes on serving: each request fails alone
        handle.submit([{"x": 1}], items=True)
        with pytest.raises(WorkerError, match=r"its reply could not be decoded: .*failed item 0 is a 'str', not a map"):
            handle.receive(timeout=30)
    assert handle.poll() is None and not handle.in_flight


def test_a_reply_for_an_unknown_request_is_dropped(make_handle, tmp_path: Path) -> None:
    handle = fake_worker(make_handle, tmp_path, "unknown-id")
    assert handle.call({"x": 1}, timeout=30) == "real"


def test_a_worker_whose_messages_cannot_be_read_is_killed_and_reported(make_handle, tmp_path: Path) -> None:
    handle = fake_worker(make_handle, tmp_path, "garbage")
    handle.submit({"x": 1})
    with pytest.raises(WorkerDied, match="killed by SIGKILL because it sent a message that could not be decoded"):
        handle.receive(timeout=30)
    assert handle.poll() is not None


def test_a_message_over_the_size_limit_never_reaches_memory_and_the_request_times_out(make_handle,
                                                                                     tmp_path: Path) -> None:
    handle = fake_worker(make_handle, tmp_path, "huge", max_message_bytes=1024, request_timeout_s=1.0)
    request_id = handle.submit({"x": 1})
    events: list = []
    while not any(isinstance(e, Died) for e in events):
        handle.wait_targets[0].poll(200)
        events += handle.events()
    died = events[-1]
    assert isinstance(died, Died) and died.hung and died.requests == (request_id,)
    assert "exceeded request_timeout_s=1.0s" in str(died.error)
    assert not [e for e in events if isinstance(e, (Answer, Failed))]


def test_a_real_worker_answers_garbled_requests_with_errors_and_keeps_serving(make_handle) -> None:
    handle = make_handle()
    data = handle.wait_targets[0]
    rng = random.Random(11)
    valid = [bytes(f) for f in Encoder(inline_threshold=-1).encode(
        Message(Kind.BATCH, 0, {}, {"frames": np.arange(24, dtype=np.uint8).reshape(2, 4, 3)}))[0]]
    for request_id in range(1000, 1100):
        head = msgpack.unpackb(valid[0])
        head["id"] = request_id
        frames = [bytearray(msgpack.packb(head)), bytearray(valid[1])]
        which = rng.randrange(2)
        target = frames[which]
        if rng.random() < 0.5 and target:
            del target[rng.randrange(len(target)):]
        else:
            target[rng.randrange(len(target))] ^= rng.randrange(1, 256)
        data.send_multipart([bytes(f) for f in frames])
        assert data.poll(30_000), f"the worker stopped answering after request {request_id}"
        reply = Decoder().decode(data.recv_multipart())
        if which == 1:  # the header is intact: the answer names the request, whatever the array became
            assert reply.kind in (Kind.ERROR, Kind.RESULT) and reply.request_id == request_id
    assert handle.call({"x": 5}, timeout=30) == {"x": 5}
    assert handle.poll() is None
    with pytest.raises(zmq.Again):
        data.recv(zmq.NOBLOCK)
