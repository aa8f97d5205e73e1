"""The shared HTTP server over TLS, as a browser and as a misbehaving client meet it: a
verified handshake and answer, large answers that leave through a slow reader, keep-alive,
plain HTTP or garbage sent to the TLS port, a handshake trickled a byte at a time, and many
clients at once. Small limits keep the tests short."""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from certfactory import Issued, current_chain, make_ca, make_leaf
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from ports import free_port

from ikev2_vpn import httpd

SMALL = httpd.Limits(connections=16, per_address=8, lifetime_s=2.0, idle_s=1.5)
WAIT_S = 10.0
HOST = "vpn.example.com"
BIG = bytes(range(256)) * 8192  # 2 MiB: many TLS records, more than the pending bound


def app(environ: dict[str, Any], start_response: httpd.StartResponse) -> list[bytes]:
    if environ["PATH_INFO"] == "/big":
        return httpd.reply(start_response, 200, BIG, "application/octet-stream")
    scheme = environ["wsgi.url_scheme"].encode()
    return httpd.reply(start_response, 200, b"hello over " + scheme + b"\n")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Issued, Issued, Path]:
    """A root, a leaf for HOST issued by an intermediate, and the leaf's key file."""
    root, intermediate, leaf = current_chain(HOST)
    key = tmp_path_factory.mktemp("tls") / "server.key"
    key.write_bytes(leaf.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    key.chmod(0o600)
    chain_pem = leaf.cert.public_bytes(Encoding.PEM) + intermediate.cert.public_bytes(Encoding.PEM)
    (key.parent / "chain.pem").write_bytes(chain_pem)
    return root, leaf, key


@pytest.fixture
def server(chain: tuple[Issued, Issued, Path]) -> Iterator[httpd.HttpServer]:
    _, _, key = chain
    context = httpd.tls_context((key.parent / "chain.pem").read_text(), key)
    with httpd.HttpServer(free_port(), app, "test-https", SMALL, tls=context) as running:
        yield running


def client_context(chain: tuple[Issued, Issued, Path]) -> ssl.SSLContext:
    """What a browser does: trusts the root only, checks the name."""
    root = chain[0]
    return ssl.create_default_context(cadata=root.cert.public_bytes(Encoding.PEM).decode())


def tls_connect(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    return context.wrap_socket(raw, server_hostname=HOST)


def get(port: int, context: ssl.SSLContext, path: str = "/") -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=WAIT_S, context=context)
    try:
        # The name the certificate holds, as a browser would send it.
        connection.sock = tls_connect(port, context)
        connection.request("GET", path, headers={"Host": HOST})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_a_browser_that_trusts_the_root_gets_the_answer_over_https(
    server: httpd.HttpServer, chain: tuple[Issued, Issued, Path]
) -> None:
    status, body = get(server.port, client_context(chain))
    assert (status, body) == (200, b"hello over https\n")


def test_the_server_sends_its_intermediate_and_nothing_older_than_tls_1_2(
    server: httpd.HttpServer, chain: tuple[Issued, Issued, Path]
) -> None:
    with tls_connect(server.port, client_context(chain)) as sock:  # verified: chain is whole
        assert sock.version() in {"TLSv1.2", "TLSv1.3"}
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cadata=chain[0].cert.public_bytes(Encoding.PEM).decode())
    with warnings.catch_warnings():  # deprecated is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        tls_connect(server.port, old).close()


def test_a_client_that_does_not_trust_the_root_refuses_the_server(
    server: httpd.HttpServer,
) -> None:
    other_root = make_ca("Someone Else")
    stranger = ssl.create_default_context(
        cadata=other_root.cert.public_bytes(Encoding.PEM).decode()
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(server.port, stranger).close()


def test_a_large_answer_arrives_whole_through_a_slow_reader(
    server: httpd.HttpServer, chain: tuple[Issued, Issued, Path]
) -> None:
    with tls_connect(server.port, client_context(chain)) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: vpn.example.com\r\nConnection: close\r\n\r\n")
        received = b""
        time.sleep(0.5)  # the server fills the socket and its pending bound meanwhile
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == BIG


def test_keep_alive_serves_several_requests_on_one_connection(
    server: httpd.HttpServer, chain: tuple[Issued, Issued, Path]
) -> None:
    connection = http.client.HTTPSConnection(HOST, server.port, context=client_context(chain))
    connection.sock = tls_connect(server.port, client_context(chain))
    try:
        for _ in range(3):
            connection.request("GET", "/")
            answer = connection.getresponse()
            assert (answer.status, answer.read()) == (200, b"hello over https\n")
    finally:
        connection.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: vpn\r\n\r\n",  # plain HTTP to the TLS port
        b"\x16\x03\x01\x00\x05garbage-that-is-no-client-hello" * 4,
        bytes(range(256)),
    ],
)
def test_what_is_not_tls_is_closed_without_a_traceback(
    server: httpd.HttpServer,
    chain: tuple[Issued, Issued, Path],
    payload: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.DEBUG),
        socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock,
    ):
        sock.sendall(payload)
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/" not in answer  # nothing in clear text
    assert get(server.port, client_context(chain))[0] == 200  # still serving
    assert not [record for record in caplog.records if record.exc_info]


def test_a_handshake_trickled_a_byte_at_a_time_is_closed_at_the_lifetime(
    server: httpd.HttpServer, chain: tuple[Issued, Issued, Path]
) -> None:
    """Slowloris on the handshake: the ClientHello of a real client, a byte every 0.2 s."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    hello = client_context(chain).wrap_bio(incoming, outgoing, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        hello.do_handshake()
    client_hello = outgoing.read()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
        sock.settimeout(0.2)
        closed = False
        for byte in client_hello[:-1]:  # never complete
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if time.monotonic() - started > WAIT_S:
                break
    assert closed
    assert time.monotonic() - started < SMALL.lifetime_s + 2.0


def test_many_clients_at_once_are_all_answered(
    server: httpd.HttpServer, chain: tuple[Issued, Issued, Path]
) -> None:
    context = client_context(chain)
    # Fewer at once than one address may open: the limit itself is test_httpd.py's.
    with ThreadPoolExecutor(SMALL.per_address // 2) as pool:
        results = list(pool.map(lambda _: get(server.port, context, "/big"), range(24)))
    assert all(result == (200, BIG) for result in results)


def test_a_context_for_a_key_that_does_not_match_is_refused(
    chain: tuple[Issued, Issued, Path], tmp_path: Path
) -> None:
    other = make_leaf(None, dns=[HOST], key="p256")
    with pytest.raises(ssl.SSLError):
        httpd.tls_context(other.cert.public_bytes(Encoding.PEM).decode(), chain[2])


def test_the_chain_file_is_gone_after_the_context_is_made(
    chain: tuple[Issued, Issued, Path],
) -> None:
    temporary = Path(tempfile.gettempdir())
    before = set(temporary.glob("ikev2-vpn-tls-*"))
    httpd.tls_context((chain[2].parent / "chain.pem").read_text(), chain[2])
    assert set(temporary.glob("ikev2-vpn-tls-*")) == before


def test_close_ends_tls_connections_too(
    chain: tuple[Issued, Issued, Path],
) -> None:
    _, _, key = chain
    context = httpd.tls_context((key.parent / "chain.pem").read_text(), key)
    port = free_port()
    running = httpd.HttpServer(port, app, "test-https", SMALL, tls=context)
    held = tls_connect(port, client_context(chain))
    closing = threading.Thread(target=running.close, daemon=True)
    closing.start()
    closing.join(WAIT_S)
    assert not closing.is_alive()
    held.settimeout(WAIT_S)
    try:
        answer = held.recv(1)
    except (ConnectionResetError, ssl.SSLError):
        answer = b""  # closed without a TLS goodbye: closed all the same
    assert answer == b""
    held.close()
