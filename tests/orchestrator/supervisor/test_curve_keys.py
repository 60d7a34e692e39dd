"""CURVE over real tcp sockets: a worker's client key opens its own two sockets and no other worker's, and
it is refused once its worker's sockets are closed. Each connection attempt is judged by the client's own
handshake events (succeeded, or refused by the parent's ZAP handler), read from a socket monitor."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from orchestrator.supervisor.endpoints import BoundPair, _CurveGate, bind_tcp
from workers.curve import CURVE_KEYS_VAR

OUTCOMES = {zmq.EVENT_HANDSHAKE_SUCCEEDED: "admitted", zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused"}


@pytest.fixture
def bind() -> Iterator:
    pairs: list[BoundPair] = []

    def make() -> BoundPair:
        pairs.append(bind_tcp(zmq.Context.instance(), "127.0.0.1"))
        return pairs[-1]

    yield make
    for pair in pairs:
        pair.data.close(linger=0)
        pair.control.close(linger=0)


def keys_of(pair: BoundPair) -> tuple[bytes, bytes, bytes]:
    server_public, client_public, client_secret = pair.worker_environ[CURVE_KEYS_VAR].split()
    return server_public.encode(), client_public.encode(), client_secret.encode()


def handshake(url: str, server_public: bytes, client_public: bytes, client_secret: bytes) -> str:
    """Connect as a worker holding these keys: 'admitted' or 'refused', within ten seconds."""
    sock = zmq.Context.instance().socket(zmq.PAIR)
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, client_public, client_secret
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    try:
        sock.connect(url)
        deadline = time.monotonic() + 10
        while (left := deadline - time.monotonic()) > 0:
            if monitor.poll(int(left * 1000) + 1):
                return OUTCOMES[recv_monitor_message(monitor)["event"]]
        raise AssertionError(f"no CURVE handshake outcome for {url} within 10 s")
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


def test_a_worker_key_opens_its_own_sockets_and_no_other_workers(bind) -> None:
    first, second = bind(), bind()
    first_server, *first_client = keys_of(first)
    second_server, *second_client = keys_of(second)
    for url in (first.data_url, first.control_url):
        assert handshake(url, first_server, *second_client) == "refused"
        assert handshake(url, first_server, *first_client) == "admitted"
    for url in (second.data_url, second.control_url):
        assert handshake(url, second_server, *first_client) == "refused"
        assert handshake(url, second_server, *second_client) == "admitted"


def test_a_released_workers_key_is_refused_afterwards(bind) -> None:
    released, later = bind(), bind()
    released_server, *released_client = keys_of(released)
    later_server, *later_client = keys_of(later)
    assert handshake(released.data_url, released_server, *released_client) == "admitted"
    providers = _CurveGate.of(zmq.Context.instance()).auth.credentials_providers
    released_domain = released.data.zap_domain.decode()
    released.data.close(linger=0)
    released.control.close(linger=0)
    assert handshake(later.data_url, later_server, *released_client) == "refused"
    assert handshake(later.data_url, later_server, *later_client) == "admitted"
    assert released_domain not in providers and later.data.zap_domain.decode() in providers  # forgotten
