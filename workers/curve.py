"""Worker side of tcp authentication: connect with the CURVE keys the parent made for this worker."""

from __future__ import annotations

import os

import zmq

CURVE_KEYS_VAR = "ORCHESTRATOR_WORKER_CURVE"
"""`<server public> <client public> <client secret>`, z85-encoded; set only for workers reached over tcp."""


def apply_client_keys(sock: zmq.Socket) -> None:
    """Give `sock` this worker's keys, if it has any (ipc workers have none and need none)."""
    keys = os.environ.get(CURVE_KEYS_VAR)
    if not keys:
        return
    server_public, client_public, client_secret = (k.encode() for k in keys.split())
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, client_public, client_secret
