"""Where a worker's sockets live: ipc in the run's private (0700) folder, or tcp with CURVE authentication.

The parent binds, the worker connects: the parent never has to guess a free port the worker then fails
to bind. Over tcp every connection must present the client key made for that worker's own two sockets
(another worker's key is refused there), and only while they are open; its keys reach the worker through
its environment (readable only by the same user), never its command line.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import weakref
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


@dataclass
class _Issued:
    """One pair's client key, and the pair (weakly: a forgotten socket closes it too)."""

    client_key: bytes
    sockets: list[weakref.ref[zmq.Socket]]

    def open(self) -> bool:
        return any((sock := ref()) is not None and not sock.closed for ref in self.sockets)


class _CurveGate:
    """The context's one ZAP handler (ZeroMQ allows one per context). Every tcp pair gets a ZAP domain of its
    own, which admits the one client key issued with it and only while one of the pair's sockets is open: a
    worker's key opens no other worker's socket, and it is forgotten once its worker's sockets are closed."""

    _lock = threading.Lock()
    _instances: dict[int, _CurveGate] = {}

    def __init__(self, context: zmq.Context) -> None:
        self._issued: dict[str, _Issued] = {}
        self._issued_lock = threading.Lock()
        self.auth = zmq.auth.thread.ThreadAuthenticator(context)
        self.auth.start()

    @classmethod
    def of(cls, context: zmq.Context) -> _CurveGate:
        with cls._lock:
            if id(context) not in cls._instances:
                cls._instances[id(context)] = cls(context)
            return cls._instances[id(context)]

    def issue(self, sockets: list[zmq.Socket], client_key: bytes) -> None:
        """Admit `client_key`, and no other, on `sockets` (before they bind: a listener copies its options)."""
        domain = f"orch-{secrets.token_hex(8)}"
        with self._issued_lock:
            self._forget_closed()
            self._issued[domain] = _Issued(client_key, [weakref.ref(sock) for sock in sockets])
        for sock in sockets:
            sock.zap_domain = domain.encode()
        self.auth.configure_curve_callback(domain=domain, credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP asks, on its own thread, with the domain of the socket connected to and the client's
        z85-encoded public key."""
        with self._issued_lock:
            self._forget_closed()
            issued = self._issued.get(domain)
        return issued is not None and hmac.compare_digest(issued.client_key, key)

    def _forget_closed(self) -> None:
        for domain in [domain for domain, issued in self._issued.items() if not issued.open()]:
            del self._issued[domain]
            self.auth.credentials_providers.pop(domain, None)


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
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    sockets = [_pair(context, max_message_bytes) for _ in range(2)]
    _CurveGate.of(context).issue(sockets, client_public)
    urls = []
    for sock in sockets:
        sock.curve_secretkey, sock.curve_publickey, sock.curve_server = server_secret, server_public, True
        sock.bind(f"tcp://{host}:0")
        urls.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    keys = b" ".join((server_public, client_public, client_secret)).decode()
    return BoundPair(sockets[0], sockets[1], urls[0], urls[1], {CURVE_KEYS_VAR: keys})

