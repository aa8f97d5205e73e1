"""Password guessing over IPv6: a ban covers the guesser's /64, not only its address.

A client usually holds a whole /64 and can take a fresh address for every guess. The lab's
networks are /64s of 2001:db8::/32, so two clients on one network are two addresses of one
/64: the one that guesses, and a neighbour that has done nothing and is shut out with it,
while a client dialling over IPv4 logs in as usual. Timings are printed (pytest -s).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import docker
import pytest

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_lab.lab import Lab

HOST = "vpn6.example.test"
BOB_PW = "Bob-pw-1"
BAN_AFTER = 2


@pytest.fixture(scope="module")
def lab(engine: docker.DockerClient, image: str) -> Iterator[Lab]:
    """A lab whose wan and egress networks are dual stack."""
    with Lab(engine, image=image, ipv6=True) as lab:
        yield lab


def server_log(server: Server) -> str:
    return str(server.container.logs(stdout=True, stderr=True).decode(errors="replace"))


def wait_for_log(server: Server, text: str, timeout_s: float) -> str:
    """The first log line containing ``text``, once it is there."""
    started = time.monotonic()
    while True:
        for line in server_log(server).splitlines():
            if text in line:
                return line
        assert time.monotonic() - started < timeout_s, f"no {text!r} in:\n{server.logs(40)}"
        time.sleep(0.2)


def test_a_ban_covers_the_guessers_64(lab: Lab) -> None:
    server = lab.start_server(
        {
            "VPN_HOST": HOST,
            "VPN_USERS": f"bob:{BOB_PW}",
            "VPN_BAN_AFTER": str(BAN_AFTER),
            "VPN_BAN_SECONDS": "300",
        },
        name=lab.name("bans6"),
    )
    guesser, neighbour = (lab.start_client(server, dial_ipv6=True) for _ in range(2))
    over_ipv4 = lab.start_client(server)
    before = neighbour.connect("bob", BOB_PW)
    assert before.connected, before.error  # over IPv6, before anyone guessed
    neighbour.disconnect()
    for number in range(1, BAN_AFTER + 1):
        assert not guesser.connect("bob", f"guess-{number}", timeout_s=10).connected
    line = wait_for_log(server, "[VPN] warning: banned 2001:db8:", 15)
    print(line)
    banned = ipaddress.IPv6Network(line.split("banned ", 1)[1].split(" ", 1)[0])
    assert banned.prefixlen == 64
    log = server_log(server)
    assert f"(2 of {BAN_AFTER} from {banned} before a ban)" in log

    listed = eng.run_checked(
        server.container, ["nft", "list", "set", "inet", "ikev2_vpn", "banned_v6"]
    )
    assert str(banned.network_address) in listed

    started = time.monotonic()
    refused = not neighbour.connect("bob", BOB_PW, timeout_s=10).connected
    print(
        f"bob's right password from another address of the /64: refused={refused} "
        f"after {time.monotonic() - started:.1f} s"
    )
    assert refused
    result = over_ipv4.connect("bob", BOB_PW)
    print(f"bob over IPv4 during the ban: connected={result.connected} in {result.connect_ms} ms")
    assert result.connected, result.error
