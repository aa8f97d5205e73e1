"""The HTTP-01 responder: answers the CA's challenge requests on TCP port 80 during an order.

It listens only while an order is being validated and serves nothing but the key
authorizations of that order; every other path gets 404.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from ..errors import ConfigError
from ..httpd import DualStackServer, QuietHandler

log = logging.getLogger(__name__)

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


class _Server(DualStackServer):
    def __init__(self, port: int, answers: Mapping[str, str]) -> None:
        self.answers = answers
        super().__init__(port, _Handler)


class _Handler(QuietHandler):
    server: _Server

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
