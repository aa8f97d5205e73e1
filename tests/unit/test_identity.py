"""Which name or address clients dial when VPN_HOST is unset (no network access: urlopen is
replaced by fakes that answer like the real services)."""

from __future__ import annotations

import io
import ipaddress
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from ikev2_vpn import defaults
from ikev2_vpn.probe import identity
from ikev2_vpn.probe.network import Egress
from ikev2_vpn.settings import Settings

EGRESS = Egress(
    interface="ens5",
    address=ipaddress.IPv4Address("198.51.100.7"),
    networks=(ipaddress.IPv4Network("198.51.100.0/24"),),
)


pytestmark = pytest.mark.usefixtures("clean_environment")


def answers(
    replies: dict[str, str | Exception], asked: list[tuple[str, float]]
) -> Callable[..., Any]:
    def urlopen(url: str, timeout: float) -> io.BytesIO:
        asked.append((url, timeout))
        reply = replies[url]
        if isinstance(reply, Exception):
            raise reply
        return io.BytesIO(reply.encode())

    return urlopen


def resolve(
    monkeypatch: pytest.MonkeyPatch, replies: dict[str, str | Exception], **env: str
) -> tuple[identity.ServerIdentity, list[tuple[str, float]]]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    asked: list[tuple[str, float]] = []
    monkeypatch.setattr(urllib.request, "urlopen", answers(replies, asked))
    return identity.resolve_identity(Settings(), EGRESS), asked


FIRST, SECOND = defaults.HOST_DETECT_URLS


def test_vpn_host_wins_and_nothing_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    found, asked = resolve(monkeypatch, {}, VPN_HOST="vpn.example.com")
    assert found.host == "vpn.example.com" and not found.is_address
    assert asked == []


def test_detection_off_uses_the_container_address_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found, asked = resolve(monkeypatch, {}, VPN_HOST_DETECT="off")
    assert asked == []
    assert found.host == "198.51.100.7" and found.is_address
    assert "VPN_HOST_DETECT=off" in found.reason and "ens5" in found.reason
    assert "set VPN_HOST" in found.reason


def test_detected_public_address(monkeypatch: pytest.MonkeyPatch) -> None:
    found, asked = resolve(monkeypatch, {FIRST: "8.8.4.4\n"})
    assert found.host == "8.8.4.4"
    assert FIRST in found.reason
    assert asked == [(FIRST, defaults.HOST_DETECT_TIMEOUT_S)]
    assert defaults.HOST_DETECT_TIMEOUT_S <= 5  # bounded: a dead service must not stall start


def test_second_service_when_the_first_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    found, asked = resolve(monkeypatch, {FIRST: TimeoutError("timed out"), SECOND: "9.9.9.9"})
    assert found.host == "9.9.9.9"
    assert [url for url, _ in asked] == [FIRST, SECOND]


@pytest.mark.parametrize(
    "reply", ["<html>blocked</html>", "10.1.2.3", "192.0.2.1", "", OSError("no route")]
)
def test_implausible_answers_fall_back_to_the_container_address(
    monkeypatch: pytest.MonkeyPatch, reply: str | Exception
) -> None:
    found, _ = resolve(monkeypatch, {FIRST: reply, SECOND: reply})
    assert found.host == "198.51.100.7"
    assert "detection failed" in found.reason
