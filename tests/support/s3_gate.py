"""An HTTP hop in front of the S3 server that holds a listing open: its first pages pass, each later page's
request waits until the test releases it. So a test sees what a run does while its listing is still going."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class ListingGate:
    """Forwards every request to `upstream`; a ListObjectsV2 request past the first `open_pages` waits for
    `release()` (at most `hold_s`), or with `refuse` is answered AccessDenied at once (a listing cut off
    midway). `answered` counts the listing pages passed back; `held` is set once a page request waits."""

    def __init__(self, upstream: str, open_pages: int = 1, hold_s: float = 600.0, refuse: bool = False) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.open_pages, self.hold_s, self.refuse = open_pages, hold_s, refuse
        self.asked = self.answered = 0
        self.held, self.released = threading.Event(), threading.Event()
        self._counting = threading.Lock()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                gate.forward(self)

            do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _deny(request: BaseHTTPRequestHandler) -> None:
        body = (b"<?xml version='1.0' encoding='UTF-8'?>"
                b"<Error><Code>AccessDenied</Code><Message>denied</Message></Error>")
        request.send_response(403)
        request.send_header("Content-Type", "application/xml")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def forward(self, request: BaseHTTPRequestHandler) -> None:
        listing = request.command == "GET" and "list-type=2" in request.path
        if listing:
            with self._counting:
                self.asked += 1
                wait = self.asked > self.open_pages
            if wait and self.refuse:
                self._deny(request)
                return
            if wait:
                self.held.set()
                self.released.wait(self.hold_s)
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            upstream.request(request.command, request.path, body or None,
                             {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS})
            reply = upstream.getresponse()
            data = reply.read()
            request.send_response_only(reply.status)  # the server's own Date and Server headers follow
            for name, value in reply.getheaders():
                if name.lower() not in _HOP_HEADERS:
                    request.send_header(name, value)
            length = reply.getheader("Content-Length") if request.command == "HEAD" else None
            request.send_header("Content-Length", length or str(len(data)))
            request.end_headers()
            if request.command != "HEAD":
                request.wfile.write(data)
        finally:
            upstream.close()
        if listing:
            with self._counting:
                self.answered += 1
