"""Workers over tcp: frames without shared memory, and only the worker holding its key gets in."""

from __future__ import annotations

import contextlib

import numpy as np
import zmq

from orchestrator.supervisor.endpoints import bind_tcp
from orchestrator.supervisor.policy import WorkerPolicy
from workers.curve import CURVE_KEYS_VAR


def test_worker_over_tcp_round_trips_without_shared_memory(make_handle) -> None:
    handle = make_handle(policy=WorkerPolicy(transport="tcp"))
    frame = np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    assert np.array_equal(handle.call({"frame": frame})["frame"], frame)
    assert handle.wait_targets[0].getsockopt_string(zmq.LAST_ENDPOINT).startswith("tcp://127.0.0.1:")


def test_only_the_issued_client_key_is_admitted() -> None:
    context = zmq.Context.instance()
    bound = bind_tcp(context, "127.0.0.1")
    server_public, client_public, client_secret = (k.encode() for k in bound.worker_environ[CURVE_KEYS_VAR].split())
    intruders = []
    try:
        plain = context.socket(zmq.PAIR)
        plain.connect(bound.data_url)
        forged = context.socket(zmq.PAIR)
        forged.curve_serverkey = server_public
        forged.curve_publickey, forged.curve_secretkey = zmq.curve_keypair()
        forged.connect(bound.data_url)
        intruders = [plain, forged]
        for sock in intruders:
            with contextlib.suppress(zmq.Again):  # no handshake, so nowhere to queue it: also a refusal
                sock.send(b"let me in", zmq.NOBLOCK)
        assert bound.data.poll(500) == 0
        for sock in intruders:
            sock.close(linger=0)
        worker = context.socket(zmq.PAIR)
        worker.curve_serverkey, worker.curve_publickey, worker.curve_secretkey = (server_public, client_public,
                                                                                  client_secret)
        worker.connect(bound.data_url)
        worker.send(b"hello")
        assert bound.data.poll(5000) and bound.data.recv() == b"hello"
        worker.close(linger=0)
    finally:
        for sock in intruders:
            sock.close(linger=0)
        bound.data.close(linger=0)
        bound.control.close(linger=0)
