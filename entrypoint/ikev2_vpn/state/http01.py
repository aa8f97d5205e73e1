"""The HTTP-01 responder: answers the CA's challenge requests on TCP port 80 during an order.

It listens only while an order is being validated and serves nothing but the key
authorizations of that order; every other path gets 404.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, ClassVar

from ..errors import ConfigError

log = logging.getLogger(__name__)

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6

    def __init__(self, port: int, answers: Mapping[str, str]) -> None:
        self.answers = answers
        try:
            super().__init__(("::", port), _Handler)
        except OSError as exc:
            if exc.errno not in {97, 99}:  # EAFNOSUPPORT, EADDRNOTAVAIL: no IPv6 here
                raise
            self.address_family = socket.AF_INET
            super().__init__(("0.0.0.0", port), _Handler)  # noqa: S104 - the CA is remote

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:  # one socket for IPv4 and IPv6
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ikev2-vpn"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    timeout: ClassVar[float] = 10.0

    def do_GET(self) -> None:
        answer = self.server.answers.get(self.path)
        if answer is None:
            self._reply(404, b"not found\n")
            return
        log.info("ACME: answered the HTTP-01 challenge request from %s", self.client_address[0])
        self._reply(200, answer.encode("ascii"))

    def do_HEAD(self) -> None:
        self._reply(200 if self.path in self.server.answers else 404, b"")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # challenge answers are logged above; scanners hitting port 80 are not news


@contextlib.contextmanager
def responder(port: int, answers: Mapping[str, str]) -> Iterator[None]:
    """Serve ``answers`` (request path -> body) on ``port`` while the block runs."""
    try:
        server = _Server(port, MappingProxyType(dict(answers)))
    except OSError as exc:
        raise ConfigError(
            "VPN_CERT",
            f"cannot listen on TCP port {port} for the ACME HTTP-01 challenge ({exc.strerror})",
            f"make sure nothing else in the container uses port {port}",
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="http-01", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
