"""The shared HTTP server's limits, as a misbehaving client meets them: too many connections
from one address, a connection kept alive a byte at a time, oversized and malformed requests.
Small limits keep the tests short; the production values are in ikev2_vpn.httpd.LIMITS."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from ports import free_port, refused

from ikev2_vpn import httpd

SMALL = httpd.Limits(connections=16, per_address=3, lifetime_s=1.5, idle_s=1.0)
WAIT_S = 10.0  # bound on every wait for the server to act (a loaded machine is slow)


def hello(environ: dict[str, Any], start_response: httpd.StartResponse) -> list[bytes]:
    return httpd.reply(start_response, 200, b"hello\n")


@pytest.fixture
def server() -> Iterator[httpd.HttpServer]:
    with httpd.HttpServer(free_port(), hello, "test-http", SMALL) as running:
        yield running


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(WAIT_S)
    return sock


def exchange(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    """Send ``request``; everything the server answers until it closes."""
    with connect(port, source) as sock:
        sock.sendall(request)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    """Until the server closes; a reset after its answer (it closed with our bytes unread)
    ends the answer too."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        if not answer:
            raise
    return answer


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` within WAIT_S (it sends nothing else here)."""
    try:
        return read_all(sock) is not None
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


GET = b"GET / HTTP/1.1\r\nHost: vpn\r\nConnection: close\r\n\r\n"


def test_a_normal_request_is_answered(server: httpd.HttpServer) -> None:
    answer = exchange(server.port, GET)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nhello\n")
    assert b"Server: ikev2-vpn\r\n" in answer


def test_one_address_gets_only_its_share_of_connections(server: httpd.HttpServer) -> None:
    with ExitStack() as held:
        for _ in range(SMALL.per_address):
            held.enter_context(connect(server.port))
        time.sleep(0.2)  # let the server accept them (their own closing is what is tested)
        extra = held.enter_context(connect(server.port))
        assert closed_by_server(extra)
        # another address is still served while the first holds its share
        assert exchange(server.port, GET, source="127.0.0.2").startswith(b"HTTP/1.1 200")


def test_a_byte_at_a_time_does_not_keep_a_connection_open(server: httpd.HttpServer) -> None:
    """Slowloris: never idle for long, yet closed once its lifetime is up."""
    with connect(server.port) as sock:
        sock.settimeout(0.3)
        started = time.monotonic()
        request = b"GET / HTTP/1.1\r\nHost: vpn\r\n" + b"X-a: b\r\n" * 200
        closed = False
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass  # nothing from the server yet: go on trickling
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if time.monotonic() - started > WAIT_S:
                break
        assert closed


def test_a_silent_connection_is_closed(server: httpd.HttpServer) -> None:
    with connect(server.port) as sock:
        assert closed_by_server(sock)


def test_oversized_headers_are_refused(server: httpd.HttpServer) -> None:
    with connect(server.port) as sock:
        # never finished: the server answers as soon as the headers outgrow the limit
        sock.sendall(b"GET / HTTP/1.1\r\nHost: vpn\r\nX-Big: " + b"a" * 8300)
        assert read_all(sock).startswith(b"HTTP/1.0 431 ")


def test_a_body_is_refused(server: httpd.HttpServer) -> None:
    body = b"x" * 4096
    request = b"POST / HTTP/1.1\r\nHost: vpn\r\nContent-Length: 4096\r\n\r\n" + body
    assert exchange(server.port, request).startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: vpn\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: vpn\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: vpn\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\n Folded: header\r\n\r\n",
        b"\r\n\r\n",
    ],
)
def test_malformed_requests_get_an_error_and_no_traceback(
    server: httpd.HttpServer, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        answer = exchange(server.port, request_bytes)
        assert exchange(server.port, GET).startswith(b"HTTP/1.1 200")  # still serving
    assert answer == b"" or answer.startswith((b"HTTP/1.0 4", b"HTTP/1.1 4"))
    assert not [record for record in caplog.records if record.exc_info]
    assert "Traceback" not in caplog.text


def test_close_frees_the_port() -> None:
    port = free_port()
    with httpd.HttpServer(port, hello, "test-http", SMALL):
        held = connect(port)
    assert refused(port)
    held.close()
    with httpd.HttpServer(port, hello, "test-http", SMALL):  # and it can be opened again
        assert exchange(port, GET).startswith(b"HTTP/1.1 200")


def test_a_port_in_use_raises() -> None:
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            httpd.HttpServer(port, hello, "test-http", SMALL)
