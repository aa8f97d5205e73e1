"""Logins through RADIUS as the operator reads them: a refused password counts towards a ban
like a local one; a RADIUS server that does not answer is named, and nobody is blamed.

The events are what charon 6.0.1 logged over VICI in the end-to-end test (FreeRADIUS 3.2).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from vicifake import FakeVici, now

from ikev2_vpn.run.bans import BanGuard, FailedLogin, LoginWatch, RadiusSilence

CLIENT = "203.0.113.3"
SERVERS = {"radius-1": "radius.example.test:1812", "radius-2": "[2001:db8::1]:1812"}


def events(sa: int, lines: list[str]) -> list[dict[str, Any]]:
    return [
        {"group": b"IKE", "level": b"1", "ikesa-uniqueid": str(sa).encode(), "msg": line.encode()}
        for line in lines
    ]


def opening(address: str, user: str) -> list[str]:
    return [
        f"{address} is initiating an IKE_SA",
        "selected peer config 'ikev2-vpn'",
        "initiating EAP_IDENTITY method (id 0x00)",
        f"received EAP identity '{user}'",
        "sending RADIUS Access-Request to server 'radius-1'",
    ]


REJECTED = [
    "received RADIUS Access-Challenge from server 'radius-1'",
    "initiating EAP_MSCHAPV2 method (id 0x01)",
    "sending RADIUS Access-Request to server 'radius-1'",
    "received RADIUS Access-Reject from server 'radius-1'",
    "RADIUS authentication of 'carol' failed",
    "EAP method EAP_MSCHAPV2 failed for peer 203.0.113.3",
]
ACCEPTED = [
    "received RADIUS Access-Challenge from server 'radius-1'",
    "initiating EAP_MSCHAPV2 method (id 0x01)",
    "sending RADIUS Access-Request to server 'radius-1'",
    "received RADIUS Access-Accept from server 'radius-1'",
    "RADIUS authentication of 'carol' successful",
    "EAP method EAP_MSCHAPV2 succeeded, MSK established",
]
SILENT = [
    "retransmit 1 of RADIUS Access-Request (timeout: 2.8s)",
    "RADIUS Access-Request timed out after 2 attempts",
    "initiating EAP_RADIUS method failed",
]


def feed(lines: list[str], sa: int = 2) -> list[FailedLogin | RadiusSilence]:
    watch = LoginWatch()
    return [found for event in events(sa, lines) if (found := watch.feed(event, 0.0)) is not None]


def test_an_access_reject_is_a_failed_login_of_that_user() -> None:
    assert feed(opening(CLIENT, "carol") + REJECTED) == [FailedLogin("carol", CLIENT)]


def test_an_access_accept_is_no_failure() -> None:
    assert feed(opening(CLIENT, "carol") + ACCEPTED) == []


def test_a_silent_server_is_no_failed_login_but_a_silence() -> None:
    assert feed(opening(CLIENT, "carol") + SILENT) == [
        RadiusSilence("Access-Request", "radius-1", "carol", CLIENT)
    ]


def test_guesses_through_radius_lead_to_a_ban(caplog: pytest.LogCaptureFixture) -> None:
    commands: list[list[str]] = []
    guard = BanGuard(
        2, 20, connect=FakeVici, run=commands.append, radius_servers=SERVERS, in_background=now
    )
    with caplog.at_level(logging.INFO, logger="ikev2_vpn.run.bans"):
        for sa in (1, 2):
            for event in events(sa, opening(CLIENT, "carol") + REJECTED):
                guard.handle(event)
    assert caplog.messages[:2] == [
        f"login failed: user 'carol' from {CLIENT} (1 of 2 before a ban)",
        f"login failed: user 'carol' from {CLIENT} (2 of 2 before a ban)",
    ]
    assert len(commands) == 1 and CLIENT in commands[0][-1]


def test_a_silent_server_is_named_as_configured_and_nobody_is_banned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    commands: list[list[str]] = []
    guard = BanGuard(1, 20, connect=lambda: None, run=commands.append, radius_servers=SERVERS)
    with caplog.at_level(logging.INFO, logger="ikev2_vpn.run.bans"):
        for sa in (1, 2, 3):
            for event in events(sa, opening(CLIENT, "carol") + SILENT):
                guard.handle(event)
    assert commands == []
    assert len(caplog.records) == 3
    assert {record.levelno for record in caplog.records} == {logging.WARNING}
    assert caplog.messages[0] == (
        f"login refused: RADIUS server radius.example.test:1812 did not answer for user "
        f"'carol' from {CLIENT} (check that it runs, is reachable and knows this server's "
        "address and VPN_RADIUS_SECRET)"
    )


def test_a_silent_accounting_server_is_reported_without_refusing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = BanGuard(1, 20, connect=lambda: None, run=lambda _argv: None, radius_servers=SERVERS)
    lines = [
        *opening(CLIENT, "carol")[:4],
        *ACCEPTED,
        "sending RADIUS Accounting-Request to server 'radius-2'",
        "RADIUS Accounting-Request timed out after 2 attempts",
    ]
    with caplog.at_level(logging.INFO, logger="ikev2_vpn.run.bans"):
        for event in events(4, lines):
            guard.handle(event)
    assert caplog.messages == [
        "RADIUS server [2001:db8::1]:1812 did not answer an Accounting-Request for user "
        f"'carol' from {CLIENT}"
    ]
