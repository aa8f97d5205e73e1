"""The HTTP-01 responder as the CA sees it: the token answered, nothing else, port closed after."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from ports import free_port, refused

from ikev2_vpn.errors import ConfigError
from ikev2_vpn.state import http01

TOKEN_PATH = "/.well-known/acme-challenge/evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = (
    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ"
)
ANSWERS = {TOKEN_PATH: KEY_AUTHORIZATION}

# No proxy from the environment: these requests must reach the responder itself.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(url: str, method: str = "GET") -> tuple[int, bytes, str]:
    """Status, body and Content-Type of one request."""
    try:
        sent = urllib.request.Request(url, method=method)  # noqa: S310 - http:// built above
        with _opener.open(sent, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(), error.headers["Content-Type"]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def serving() -> Iterator[str]:
    """One responder for the tests that only send requests (closing one takes half a second)."""
    port = free_port()
    with http01.responder(port, ANSWERS):
        yield f"http://127.0.0.1:{port}"


def test_the_challenge_token_gets_its_key_authorization(serving: str) -> None:
    status, body, content_type = request(serving + TOKEN_PATH)
    assert status == 200
    assert body == KEY_AUTHORIZATION.encode()
    assert content_type == "text/plain"


def test_head_request_for_the_token_is_answered_without_body(serving: str) -> None:
    assert request(serving + TOKEN_PATH, method="HEAD")[:2] == (200, b"")


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge/other-token",
        TOKEN_PATH + "x",
        TOKEN_PATH + "/",
        "/etc/passwd",
    ],
)
def test_anything_else_is_not_found(serving: str, path: str) -> None:
    status, body, _ = request(serving + path)
    assert status == 404
    assert KEY_AUTHORIZATION.encode() not in body


def test_head_for_another_path_is_not_found(serving: str) -> None:
    assert request(serving + "/index.html", method="HEAD")[0] == 404


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 on this host")
def test_the_ca_may_connect_over_ipv6_too(port: int) -> None:
    """One dual-stack socket: a VPN_HOST with an AAAA record is validated over IPv6."""
    with http01.responder(port, ANSWERS):
        assert request(f"http://[::1]:{port}{TOKEN_PATH}")[:2] == (200, KEY_AUTHORIZATION.encode())
        assert request(f"http://127.0.0.1:{port}{TOKEN_PATH}")[0] == 200


def test_the_port_is_closed_after_the_order(port: int) -> None:
    with http01.responder(port, ANSWERS):
        assert request(f"http://127.0.0.1:{port}{TOKEN_PATH}")[0] == 200
    assert refused(port)


def test_the_port_is_closed_when_the_order_fails(port: int) -> None:
    with pytest.raises(RuntimeError), http01.responder(port, ANSWERS):
        raise RuntimeError("the CA said no")
    assert refused(port)


def test_the_port_can_be_used_again_for_the_next_order(port: int) -> None:
    """A renewal opens the port again right after the first order."""
    with http01.responder(port, ANSWERS):
        pass
    with http01.responder(port, {"/.well-known/acme-challenge/next": "next.key"}):
        base = f"http://127.0.0.1:{port}"
        assert request(base + "/.well-known/acme-challenge/next")[:2] == (200, b"next.key")
        assert request(base + TOKEN_PATH)[0] == 404


def test_answers_given_later_are_not_served(port: int) -> None:
    answers = dict(ANSWERS)
    with http01.responder(port, answers):
        answers["/.well-known/acme-challenge/late"] = "late.key"
        assert request(f"http://127.0.0.1:{port}/.well-known/acme-challenge/late")[0] == 404


def test_a_port_in_use_is_one_line_naming_vpn_cert(port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", port))  # noqa: S104
        taken.listen()
        with pytest.raises(ConfigError) as caught, http01.responder(port, ANSWERS):
            pass
    error = caught.value
    assert error.setting == "VPN_CERT"
    assert f"cannot listen on TCP port {port}" in error.problem
    assert "in use" in error.problem.lower()
    assert f"port {port}" in error.fix
    assert "\n" not in error.line()
