"""Failed logins and bans: what an operator reads in the log and which addresses get banned.

The events are what charon 6.0.1 sends over VICI for a client that guesses a password.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ikev2_vpn.run import bans
from ikev2_vpn.run.bans import BanBook, BanGuard, FailedLogin, LoginWatch, RadiusSilence

ATTACKER = "203.0.113.7"
COLLEAGUE = "198.51.100.20"


def attempt(sa: int, address: str, user: str | None, *, fail: bool = True) -> list[dict[str, Any]]:
    """charon's log events for one login on IKE_SA ``sa`` (bytes, as VICI delivers them)."""
    lines = [f"{address} is initiating an IKE_SA", "selected peer config 'ikev2-vpn'"]
    if user is not None:
        lines += [f"received EAP identity '{user}'", "initiating EAP_MSCHAPV2 method (id 0x6D)"]
    if fail:
        lines.append("EAP-MS-CHAPv2 verification failed, retry (1)")
    else:
        lines.append("EAP method EAP_MSCHAPV2 succeeded, MSK established")
    return [
        {"group": b"IKE", "level": b"1", "ikesa-uniqueid": str(sa).encode(), "msg": line.encode()}
        for line in lines
    ]


def failures(events: list[dict[str, Any]]) -> list[FailedLogin | RadiusSilence]:
    watch = LoginWatch()
    return [found for event in events if (found := watch.feed(event)) is not None]


def test_a_wrong_password_is_one_failed_login_with_user_and_address() -> None:
    assert failures(attempt(2, ATTACKER, "bob")) == [FailedLogin("bob", ATTACKER)]


def test_a_successful_login_is_no_failure() -> None:
    assert failures(attempt(2, ATTACKER, "bob", fail=False)) == []


def test_interleaved_logins_are_told_apart_by_their_ike_sa() -> None:
    first, second = attempt(5, ATTACKER, "bob"), attempt(6, COLLEAGUE, "alice", fail=False)
    mixed = [event for pair in zip(first, second, strict=True) for event in pair]
    assert failures(mixed) == [FailedLogin("bob", ATTACKER)]


def test_events_without_an_ike_sa_are_ignored() -> None:
    assert LoginWatch().feed({"msg": b"EAP-MS-CHAPv2 verification failed, retry (1)"}) is None


def test_the_log_line_names_user_address_and_count_but_nothing_else() -> None:
    line = bans.describe_failure(FailedLogin("bob", ATTACKER), bans.Verdict(3, False), 5)
    assert line == f"login failed: user 'bob' from {ATTACKER} (3 of 5 before a ban)"
    quiet = bans.describe_failure(FailedLogin(None, ATTACKER), bans.Verdict(1, False), 0)
    assert quiet == f"login failed: an unnamed user from {ATTACKER}"


def test_control_characters_in_a_user_name_cannot_forge_log_lines() -> None:
    line = bans.describe_failure(FailedLogin("x\n[VPN] ok", ATTACKER), bans.Verdict(1, False), 5)
    assert "\n" not in line


# --- counting ------------------------------------------------------------------------------


def test_the_nth_failure_within_the_window_bans() -> None:
    book = BanBook(ban_after=3, ban_seconds=60)
    verdicts = [book.failed(ATTACKER, t) for t in (0.0, 1.0, 2.0)]
    assert [(v.failures, v.ban) for v in verdicts] == [(1, False), (2, False), (3, True)]


def test_other_addresses_keep_their_own_count() -> None:
    book = BanBook(ban_after=3, ban_seconds=60)
    book.failed(ATTACKER, 0.0)
    book.failed(ATTACKER, 1.0)
    assert book.failed(COLLEAGUE, 1.5).failures == 1
    assert book.failed(ATTACKER, 2.0).ban


def test_failures_count_for_ten_minutes_or_the_ban_time_if_longer() -> None:
    book = BanBook(ban_after=3, ban_seconds=60)
    book.failed(ATTACKER, 0.0)
    book.failed(ATTACKER, 300.0)
    assert book.failed(ATTACKER, 601.0) == bans.Verdict(2, ban=False)
    long = BanBook(ban_after=3, ban_seconds=3600)
    long.failed(ATTACKER, 0.0)
    long.failed(ATTACKER, 1800.0)
    assert long.failed(ATTACKER, 3599.0).ban


def test_zero_never_bans() -> None:
    book = BanBook(ban_after=0, ban_seconds=60)
    assert not any(book.failed(ATTACKER, float(t)).ban for t in range(50))


def test_a_ban_ends_once_and_counting_starts_afresh() -> None:
    book = BanBook(ban_after=2, ban_seconds=20)
    book.failed(ATTACKER, 0.0)
    assert book.failed(ATTACKER, 1.0).ban
    assert book.ended(20.0) == []
    assert book.ended(21.0) == [ATTACKER]
    assert book.ended(22.0) == []
    assert book.failed(ATTACKER, 22.0) == bans.Verdict(1, ban=False)


def test_the_ban_command_is_an_argument_list_for_the_right_set() -> None:
    assert bans.ban_command(ATTACKER, 600) == [
        "nft",
        "add",
        "element",
        "inet",
        "ikev2_vpn",
        "banned_v4",
        f"{{ {ATTACKER} timeout 600s }}",
    ]
    assert bans.ban_command("2001:db8::7", 20)[5:] == ["banned_v6", "{ 2001:db8::7 timeout 20s }"]
    with pytest.raises(ValueError):
        bans.ban_command("203.0.113.7; flush ruleset", 600)


# --- the guard: events in, log lines and nft commands out -----------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def guard() -> Iterator[tuple[BanGuard, list[list[str]], Clock]]:
    commands: list[list[str]] = []
    clock = Clock()
    yield (
        BanGuard(3, 20, connect=lambda: None, run=commands.append, clock=clock),
        commands,
        clock,
    )


def test_guessing_bans_the_address_and_the_ban_ends(
    guard: tuple[BanGuard, list[list[str]], Clock], caplog: pytest.LogCaptureFixture
) -> None:
    watcher, commands, clock = guard
    with caplog.at_level(logging.INFO, logger="ikev2_vpn.run.bans"):
        for sa in range(1, 4):
            clock.now += 1
            for event in attempt(sa, ATTACKER, "bob"):
                watcher.handle(event)
        for event in attempt(9, COLLEAGUE, "bob", fail=False):
            watcher.handle(event)
        assert commands == [bans.ban_command(ATTACKER, 20)]
        clock.now += 25
        watcher.tick()
    assert caplog.messages == [
        f"login failed: user 'bob' from {ATTACKER} (1 of 3 before a ban)",
        f"login failed: user 'bob' from {ATTACKER} (2 of 3 before a ban)",
        f"login failed: user 'bob' from {ATTACKER} (3 of 3 before a ban)",
        f"banned {ATTACKER} for 20 s after 3 failed logins (VPN_BAN_AFTER, VPN_BAN_SECONDS)",
        f"ban of {ATTACKER} ended",
    ]


def test_a_failing_nft_is_logged_and_the_guard_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(_argv: list[str]) -> None:
        raise OSError("nft: not found")

    watcher = BanGuard(1, 20, connect=lambda: None, run=refuse, clock=Clock())
    with caplog.at_level(logging.INFO, logger="ikev2_vpn.run.bans"):
        for event in attempt(1, ATTACKER, "bob") + attempt(2, COLLEAGUE, "eve"):
            watcher.handle(event)
    assert f"could not ban {ATTACKER}: OSError: nft: not found" in caplog.messages
    assert f"login failed: user 'eve' from {COLLEAGUE} (1 of 1 before a ban)" in caplog.messages


class FakeSession:
    """charon's VICI: some log events, then charon goes away."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def listen(self, labels: list[str], timeout: float) -> Iterator[tuple[Any, Any]]:
        assert labels == ["log"]
        yield None, None  # a quiet second
        for event in self.events:
            yield b"log", event
        raise OSError("Connection closed")


def test_the_guard_follows_charon_across_restarts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bans, "RECONNECT_S", (0.01, 0.01))
    steps: list[OSError | FakeSession] = [
        OSError("charon not up yet"),
        FakeSession(attempt(1, ATTACKER, "bob")),
        FakeSession(attempt(1, COLLEAGUE, "eve")),  # a new charon numbers IKE_SAs from 1 again
    ]
    sessions = iter(steps)
    done = threading.Event()

    def connect() -> FakeSession:
        answer = next(sessions, None)
        if answer is None:
            done.set()
            raise OSError("gone")
        if isinstance(answer, OSError):
            raise answer
        return answer

    with caplog.at_level(logging.INFO, logger="ikev2_vpn.run.bans"):
        BanGuard(5, 20, connect=connect, run=lambda _argv: None, clock=Clock()).start()
        assert done.wait(5)
    assert [m for m in caplog.messages if m.startswith("login failed")] == [
        f"login failed: user 'bob' from {ATTACKER} (1 of 5 before a ban)",
        f"login failed: user 'eve' from {COLLEAGUE} (1 of 5 before a ban)",
    ]
