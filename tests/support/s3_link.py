"""A TCP hop between an S3 client and the server, to slow, cut or count what the server replies."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class S3Link:
    """A TCP hop between boto3 and the S3 server: replies pass at most `rate` bytes per second, and the
    first connection whose replies pass `cut_after` bytes is closed there, mid-body (a dropped link).
    `replied` counts the reply bytes passed (bodies and headers), to show what a client read; `sent` the
    request bytes, to show what it wrote."""

    PIECE = 64 * 1024

    def __init__(self, upstream: str, rate: float | None = None, cut_after: int | None = None) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.rate, self.cut_after = rate, cut_after
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.replied = self.sent = 0
        self._counting = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        passed = 0
        try:
            while data := source.recv(self.PIECE):
                if replies and self.cut_after is not None and not self.cut.is_set() \
                        and passed + len(data) > self.cut_after:
                    sink.sendall(data[:self.cut_after - passed])
                    self.cut.set()
                    break
                sink.sendall(data)
                passed += len(data)
                with self._counting:
                    if replies:
                        self.replied += len(data)
                    else:
                        self.sent += len(data)
                if replies and self.rate:
                    time.sleep(len(data) / self.rate)  # the link's bandwidth, not a synchronisation
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for end in self.sockets:
            with contextlib.suppress(OSError):
                end.close()
