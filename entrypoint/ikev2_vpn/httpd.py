"""The small HTTP servers the container runs: on its TCP port 80 for a while, the ACME HTTP-01
responder (state) and profile sharing (run); the metrics endpoint (run). Shared by several
pipeline steps, so it belongs to none of them. One listening socket for IPv4 and IPv6 where
the kernel has IPv6, IPv4 only where it does not."""

from __future__ import annotations

import errno
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL}


class DualStackServer(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        try:
            super().__init__(("::", port), handler)
        except OSError as exc:
            if exc.errno not in _NO_IPV6:
                raise
            self.address_family = socket.AF_INET
            super().__init__(("0.0.0.0", port), handler)  # noqa: S104 - the clients are remote

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:  # one socket for IPv4 and IPv6
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class QuietHandler(BaseHTTPRequestHandler):
    """No version banner, no keep-alive, a read timeout, and no line per request: callers
    log what matters (answers, downloads); scanners hitting port 80 are not news."""

    server_version = "ikev2-vpn"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    timeout: ClassVar[float] = 10.0

    def log_message(self, format: str, *args: Any) -> None:
        pass
