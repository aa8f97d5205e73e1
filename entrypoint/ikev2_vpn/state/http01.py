"""The HTTP-01 responder: answers the CA's challenge requests on TCP port 80 during an order.

It listens only while an order is being validated and serves nothing but the key
authorizations of that order; every other path gets 404.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..httpd import HttpServer, WsgiApp, client_address, plain, request_target, small_app

if TYPE_CHECKING:
    from flask import Response

log = logging.getLogger(__name__)

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


def _app(answers: Mapping[str, str]) -> WsgiApp:
    from flask import request

    def answer() -> Response:
        key_authorization = answers.get(request_target(request.environ))
        if request.method not in {"GET", "HEAD"} or key_authorization is None:
            return plain(404, b"not found\n")
        if request.method == "GET":
            log.info(
                "ACME: answered the HTTP-01 challenge request from %s",
                client_address(request.environ),
            )
        return plain(200, key_authorization.encode("ascii"))

    return small_app(__name__, answer)


@contextlib.contextmanager
def responder(port: int, answers: Mapping[str, str]) -> Iterator[None]:
    """Serve ``answers`` (request path -> body) on ``port`` while the block runs."""
    try:
        server = HttpServer(port, _app(MappingProxyType(dict(answers))), "http-01")
    except OSError as exc:
        raise ConfigError(
            "VPN_CERT",
            f"cannot listen on TCP port {port} for the ACME HTTP-01 challenge ({exc.strerror})",
            f"make sure nothing else in the container uses port {port}",
        ) from None
    with server:
        yield
