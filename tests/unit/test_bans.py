"""Failed logins and bans: what an operator reads in the log and which addresses get banned.

The events are what charon 6.0.1 sends over VICI for a client that guesses a password.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from vicifake import FakeVici, now

from ikev2_vpn import defaults
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
    return [found for event in events if (found := watch.feed(event, 0.0)) is not None]


def test_a_wrong_password_is_one_failed_login_with_user_and_address() -> None:
    assert failures(attempt(2, ATTACKER, "bob")) == [FailedLogin("bob", ATTACKER)]


def test_a_successful_login_is_no_failure() -> None:
    assert failures(attempt(2, ATTACKER, "bob", fail=False)) == []


def test_interleaved_logins_are_told_apart_by_their_ike_sa() -> None:
    first, second = attempt(5, ATTACKER, "bob"), attempt(6, COLLEAGUE, "alice", fail=False)
    mixed = [event for pair in zip(first, second, strict=True) for event in pair]
    assert failures(mixed) == [FailedLogin("bob", ATTACKER)]


def test_events_without_an_ike_sa_are_ignored() -> None:
    assert LoginWatch().feed({"msg": b"EAP-MS-CHAPv2 verification failed, retry (1)"}, 0.0) is None


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
    # IPv6: the /64 (the rules mask the sender's address to it)
    assert bans.ban_command("2001:db8:1:2::7", 20)[5:] == [
        "banned_v6",
        "{ 2001:db8:1:2:: timeout 20s }",
    ]
    assert bans.ban_command("2001:db8:1:2::/64", 20) == bans.ban_command("2001:db8:1:2::7", 20)
    for bad in ("203.0.113.7; flush ruleset", "203.0.113.0/24", "2001:db8::/48"):
        with pytest.raises(ValueError):
            bans.ban_command(bad, 600)


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
        BanGuard(3, 20, connect=FakeVici, run=commands.append, clock=clock, in_background=now),
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


# --- what a flood or an IPv6 /64 cannot do (issue 13, findings 1 and 2) -----------------------


def initiating(sa: int, address: str) -> dict[str, Any]:
    message = f"{address} is initiating an IKE_SA".encode()
    return {"group": b"IKE", "level": b"0", "ikesa-uniqueid": str(sa).encode(), "msg": message}


def test_a_flood_between_two_guesses_does_not_make_the_guess_forgotten() -> None:
    """~4,096 IKE_SA_INITs between the EAP identity and the failure evicted the guesser's
    IKE_SA from a memory of the last 4,096; now only time ends what is remembered."""
    watch = LoginWatch()
    opening, failure = attempt(2, ATTACKER, "bob")[:-1], attempt(2, ATTACKER, "bob")[-1]
    found = [watch.feed(event, 0.0) for event in opening]
    for number in range(3, 50_003):  # in one second: more than any memory by count held
        found.append(watch.feed(initiating(number, f"198.18.{number % 250}.{number % 200}"), 1.0))
    assert [*filter(None, found), watch.feed(failure, 2.0)] == [FailedLogin("bob", ATTACKER)]


def test_what_is_remembered_ends_with_charons_half_open_timeout() -> None:
    watch = LoginWatch()
    for number in range(1000):
        watch.feed(initiating(number, "198.18.0.9"), 0.0)
    assert len(watch) == 1000
    assert defaults.DOS_CONFIG["half_open_timeout"] < bans.REMEMBER_S
    watch.feed(initiating(5000, ATTACKER), bans.REMEMBER_S + 1)
    assert len(watch) == 1  # the flood is forgotten once charon has deleted its IKE_SAs


def test_a_login_that_succeeded_is_forgotten() -> None:
    watch = LoginWatch()
    for event in attempt(4, COLLEAGUE, "alice", fail=False):
        watch.feed(event, 0.0)
    line = "IKE_SA ikev2-vpn[4] established between 198.18.0.2[vpn]...198.51.100.20[alice]"
    watch.feed({"ikesa-uniqueid": b"4", "msg": line.encode()}, 0.0)
    assert len(watch) == 0


def test_an_ike_sa_not_seen_opening_is_looked_up_in_charon() -> None:
    asked: list[str] = []

    def lookup(sa_id: str) -> str | None:
        asked.append(sa_id)
        return ATTACKER if sa_id == "7" else None

    watch = LoginWatch(lookup=lookup)
    failed = {"ikesa-uniqueid": b"7", "msg": b"EAP-MS-CHAPv2 verification failed, retry (1)"}
    assert watch.feed(failed, 0.0) == FailedLogin(None, ATTACKER)
    assert watch.feed(failed, 1.0) == FailedLogin(None, ATTACKER)  # asked once per IKE_SA
    gone = {**failed, "ikesa-uniqueid": b"8"}
    assert watch.feed(gone, 1.0) == FailedLogin(None, None)
    assert asked == ["7", "8"]


def test_charon_is_asked_by_the_ike_sas_unique_id() -> None:
    vici = FakeVici([(3, COLLEAGUE, "ESTABLISHED"), (7, ATTACKER, "CONNECTING")])
    assert bans.address_from_charon(lambda: vici, "7") == ATTACKER
    assert bans.address_from_charon(lambda: vici, "9") is None

    def refused() -> FakeVici:
        raise OSError("charon is gone")

    assert bans.address_from_charon(refused, "7") is None


def test_a_failure_charon_forgot_is_logged_and_counted_but_bans_nobody(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[FailedLogin] = []
    commands: list[list[str]] = []
    watcher = BanGuard(
        1, 20, connect=FakeVici, run=commands.append, clock=Clock(), on_failure=counted.append
    )
    with caplog.at_level(logging.INFO, logger="ikev2_vpn.run.bans"):
        watcher.handle({"ikesa-uniqueid": b"9", "msg": b"EAP-MS-CHAPv2 verification failed"})
    assert counted == [FailedLogin(None, None)] and commands == []
    assert caplog.messages == [
        "login failed: an unnamed user from an address charon no longer knows"
    ]


def test_ipv6_addresses_of_one_64_count_together_and_the_64_is_banned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    commands: list[list[str]] = []
    watcher = BanGuard(
        3, 20, connect=FakeVici, run=commands.append, clock=Clock(), in_background=now
    )
    with caplog.at_level(logging.INFO, logger="ikev2_vpn.run.bans"):
        for sa, host in enumerate(
            ("2001:db8:1:2::a", "2001:db8:1:2:ffff::1", "2001:db8:1:2::b"), 1
        ):
            for event in attempt(sa, host, "bob"):
                watcher.handle(event)
        for event in attempt(9, "2001:db8:1:3::a", "bob"):  # the next /64 is someone else
            watcher.handle(event)
    assert commands == [bans.ban_command("2001:db8:1:2::/64", 20)]
    assert caplog.messages[2:4] == [
        "login failed: user 'bob' from 2001:db8:1:2::b "
        "(3 of 3 from 2001:db8:1:2::/64 before a ban)",
        "banned 2001:db8:1:2::/64 for 20 s after 3 failed logins (VPN_BAN_AFTER, VPN_BAN_SECONDS)",
    ]
    assert caplog.messages[4] == (
        "login failed: user 'bob' from 2001:db8:1:3::a (1 of 3 from 2001:db8:1:3::/64 before a ban)"
    )


def test_a_ban_ends_the_logins_under_way_from_the_source_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vici = FakeVici(
        [
            (11, ATTACKER, "CONNECTING"),  # a second IKE_SA that could keep guessing
            (12, ATTACKER, "ESTABLISHED"),  # a colleague behind the same NAT, logged in
            (13, COLLEAGUE, "CONNECTING"),  # someone else logging in
            (14, "2001:db8:1:2::9", "CONNECTING"),
            (15, "2001:db8:1:3::9", "CONNECTING"),
        ]
    )
    watcher = BanGuard(
        1, 20, connect=lambda: vici, run=lambda _argv: None, clock=Clock(), in_background=now
    )
    with caplog.at_level(logging.INFO, logger="ikev2_vpn.run.bans"):
        for event in attempt(1, ATTACKER, "bob") + attempt(2, "2001:db8:1:2::1", "bob"):
            watcher.handle(event)
    assert [sa["ike-id"] for sa in vici.terminated] == ["11", "14"]
    assert all(sa["force"] == "yes" for sa in vici.terminated)
    assert f"ended 1 login(s) under way from banned {ATTACKER}" in caplog.messages
    assert "ended 1 login(s) under way from banned 2001:db8:1:2::/64" in caplog.messages


def test_a_charon_that_cannot_be_reached_costs_the_ending_not_the_ban(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refused() -> FakeVici:
        raise OSError("charon is gone")

    commands: list[list[str]] = []
    watcher = BanGuard(
        1, 20, connect=refused, run=commands.append, clock=Clock(), in_background=now
    )
    with caplog.at_level(logging.INFO, logger="ikev2_vpn.run.bans"):
        for event in attempt(1, ATTACKER, "bob"):
            watcher.handle(event)
    assert commands == [bans.ban_command(ATTACKER, 20)]
    assert (
        f"could not end the logins under way from {ATTACKER}: OSError: charon is gone"
        in caplog.messages
    )
