"""Where a worker's sockets live: ipc in the run's private (0700) folder, or tcp with CURVE authentication.

The parent binds, the worker connects: the parent never has to guess a free port the worker then fails
to bind. Over tcp every connection must present the client key made for that worker; its keys reach the
worker through its environment (readable only by the same user), never its command line.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth.thread

from workers.curve import CURVE_KEYS_VAR


@dataclass
class BoundPair:
    """A worker's data and control sockets, bound and ready for it to connect."""

    data: zmq.Socket
    control: zmq.Socket
    data_url: str
    control_url: str
    worker_environ: dict[str, str] = field(default_factory=dict)
    ipc_paths: list[Path] = field(default_factory=list)


class _CurveGate:
    """One authenticator per context, admitting only the client keys handed to our own workers."""

    _lock = threading.Lock()
    _instance: _CurveGate | None = None

    def __init__(self, context: zmq.Context) -> None:
        self.allowed: set[bytes] = set()
        self.auth = zmq.auth.thread.ThreadAuthenticator(context)
        self.auth.start()
        self.auth.configure_curve_callback(domain="*", credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP asks with the client's z85-encoded public key."""
        return key in self.allowed

    @classmethod
    def get(cls, context: zmq.Context) -> _CurveGate:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(context)
            return cls._instance


def _pair(context: zmq.Context, max_message_bytes: int) -> zmq.Socket:
    """A PAIR socket refusing bigger messages before they are in memory. Set before bind: a listener copies
    its options when it binds."""
    sock = context.socket(zmq.PAIR)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    return sock


def bind_ipc(context: zmq.Context, runtime_dir: Path, tag: str, max_message_bytes: int = -1) -> BoundPair:
    sockets, urls, paths = [], [], []
    for role in ("d", "c"):
        sock = _pair(context, max_message_bytes)
        path = runtime_dir / f"{tag}.{role}"
        sock.bind(f"ipc://{path}")
        sockets.append(sock)
        urls.append(f"ipc://{path}")
        paths.append(path)
    return BoundPair(sockets[0], sockets[1], urls[0], urls[1], ipc_paths=paths)


def bind_tcp(context: zmq.Context, host: str, max_message_bytes: int = -1) -> BoundPair:
    """Bind both sockets on a free port of `host`, CURVE-encrypted, admitting only a fresh client key."""
    gate = _CurveGate.get(context)
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    gate.allowed.add(client_public)
    sockets, urls = [], []
    for _ in range(2):
        sock = _pair(context, max_message_bytes)
        sock.curve_secretkey, sock.curve_publickey, sock.curve_server = server_secret, server_public, True
        sock.bind(f"tcp://{host}:0")
        sockets.append(sock)
        urls.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    keys = b" ".join((server_public, client_public, client_secret)).decode()
    return BoundPair(sockets[0], sockets[1], urls[0], urls[1], {CURVE_KEYS_VAR: keys})

