"""Password guessing: real server, real clients at different addresses.

What a user notices: someone guessing bob's password is locked out after VPN_BAN_AFTER tries
(even with the right password) until VPN_BAN_SECONDS have passed, while everyone else, bob
included, keeps logging in; the operator reads each failure, the ban and its end in the log,
never a password. Timings are printed (pytest -s).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.vpnclient import VpnClient
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
ALICE_PW, BOB_PW = "Alice-pw-1", "Bob-pw-1"
GUESSES = ("guess-one", "guess-two", "guess-three")
BAN_AFTER, BAN_SECONDS = len(GUESSES), 20


def server_log(server: Server) -> str:
    return str(server.container.logs(stdout=True, stderr=True).decode(errors="replace"))


def wait_for_log(server: Server, text: str, timeout_s: float) -> float:
    """Seconds until ``text`` appears in the server's log."""
    started = time.monotonic()
    while text not in server_log(server):
        assert time.monotonic() - started < timeout_s, f"no {text!r} in:\n{server.logs(40)}"
        time.sleep(0.2)
    return time.monotonic() - started


def logged_at(server: Server, text: str) -> float:
    """When the server logged its first line containing ``text`` (seconds since the epoch)."""
    for line in server_log(server).splitlines():
        if text in line:
            stamp = line.split(" ", 1)[0]
            return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    raise AssertionError(f"no {text!r} in the server's log")


def timed(what: str, action: Callable[[], bool]) -> bool:
    started = time.monotonic()
    result = action()
    print(f"{what}: {'connected' if result else 'refused'} in {time.monotonic() - started:.1f} s")
    return result


def start(lab: Lab, role: str, ban_after: int) -> Server:
    return lab.start_server(
        {
            "VPN_HOST": HOST,
            "VPN_USERS": f"alice:{ALICE_PW} bob:{BOB_PW}",
            "VPN_BAN_AFTER": str(ban_after),
            "VPN_BAN_SECONDS": str(BAN_SECONDS),
        },
        name=lab.name(role),
    )


def guess(client: VpnClient, password: str) -> bool:
    return client.connect("bob", password, timeout_s=10).connected


@pytest.fixture(scope="module")
def server(lab: Lab) -> Server:
    return start(lab, "bans", BAN_AFTER)


def test_a_guesser_is_banned_until_the_ban_ends_and_nobody_else_notices(
    lab: Lab, server: Server
) -> None:
    guesser, alice, bob = (lab.start_client(server) for _ in range(3))
    assert len({guesser.address, alice.address, bob.address}) == 3
    assert timed("alice", lambda: alice.connect("alice", ALICE_PW).connected)

    for number, password in enumerate(GUESSES, 1):
        assert not timed(f"guess {number}", functools.partial(guess, guesser, password))
        assert timed(f"bob from elsewhere after guess {number}", lambda: guess(bob, BOB_PW))
    wait_for_log(server, f"banned {guesser.address} for {BAN_SECONDS} s", 10)

    # Banned: even the right password gets no answer; other addresses are unaffected.
    assert not timed("bob's right password from the banned address", lambda: guess(guesser, BOB_PW))
    assert timed("bob from elsewhere during the ban", lambda: guess(bob, BOB_PW))
    assert timed("alice during the ban", lambda: alice.connect("alice", ALICE_PW).connected)

    log = server_log(server)
    print("".join(line for line in log.splitlines(True) if "[VPN]" in line and "ban" in line))
    for number in range(1, BAN_AFTER + 1):
        assert (
            f"[VPN] login failed: user 'bob' from {guesser.address} "
            f"({number} of {BAN_AFTER} before a ban)"
        ) in log
    assert f"from {bob.address} (" not in log and f"from {alice.address} (" not in log
    for password in (*GUESSES, ALICE_PW, BOB_PW):
        assert password not in log

    # The ban ends by itself.
    wait_for_log(server, f"ban of {guesser.address} ended", BAN_SECONDS + 15)
    began, ended = (logged_at(server, f"{what} {guesser.address}") for what in ("banned", "ban of"))
    print(f"the ban lasted {ended - began:.0f} s by the server's log (VPN_BAN_SECONDS=20)")
    assert BAN_SECONDS - 1 <= ended - began <= BAN_SECONDS + 2
    time.sleep(1)  # nftables drops the element on its own clock
    assert timed("bob's right password after the ban", lambda: guess(guesser, BOB_PW))


def test_zero_never_bans(lab: Lab) -> None:
    server = start(lab, "nobans", 0)
    guesser = lab.start_client(server)
    for number in range(BAN_AFTER + 2):
        assert not timed(f"guess {number + 1} (VPN_BAN_AFTER=0)", lambda: guess(guesser, "nope"))
    assert timed("bob's right password after the guesses", lambda: guess(guesser, BOB_PW))
    log = server_log(server)
    assert log.count(f"[VPN] login failed: user 'bob' from {guesser.address}\n") == BAN_AFTER + 2
    assert "banned" not in log
