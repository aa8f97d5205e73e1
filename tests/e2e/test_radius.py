"""Users shared by several servers over RADIUS: two real servers, a real FreeRADIUS.

What users and operators notice: a user who exists only in RADIUS logs in through either
server and passes traffic; RADIUS accounting shows when the session started and stopped,
and which server (NAS) carried it; a wrong password or a user removed in RADIUS is refused
(and counted towards a ban like a local failure); a RADIUS server that does not answer
makes a login fail within seconds, with a log line saying which server was silent. The
shared secret appears nowhere but in the file it is mounted from. Timings are printed
(pytest -s).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.users import run_users
from ikev2_vpn_helper.vpnclient import VpnClient
from ikev2_vpn_lab.lab import Lab
from ikev2_vpn_lab.radius import FreeRadius, Login

# Characters strongswan.conf and FreeRADIUS both need quoted or escaped: a secret rendered
# or quoted wrongly on either side makes every login fail.
SECRET = 'Radius-secret "q" #1 {x} \\y'
CAROL_PW, DAVE_PW = "Carol-pw-1", "Dave-pw-1"
HOSTS = ("vpn1.example.test", "vpn2.example.test")
REFUSAL_LIMIT_S = 15  # what a user waits at most when RADIUS is silent (measured: ~5 s)
INTERIM_S = 3  # VPN_RADIUS_INTERIM_INTERVAL, short so that the test sees an update


@pytest.fixture(scope="module")
def radius(lab: Lab, radius_image: str) -> FreeRadius:
    return lab.start_radius(SECRET, {"carol": CAROL_PW, "dave": DAVE_PW}, image=radius_image)


@pytest.fixture(scope="module")
def servers(lab: Lab, radius: FreeRadius) -> list[Server]:
    """Two servers with the same RADIUS settings; only their names differ."""
    return [
        lab.start_server(
            {
                "VPN_HOST": host,
                "VPN_RADIUS_SERVERS": radius.alias,
                "VPN_RADIUS_INTERIM_INTERVAL": str(INTERIM_S),
                "VPN_BAN_AFTER": "3",
                "VPN_BAN_SECONDS": "20",
            },
            name=lab.name(f"server-{number}"),
            volume=lab.name(f"data-{number}"),
            secret_files={"VPN_RADIUS_SECRET_FILE": SECRET.encode()},
        )
        for number, host in enumerate(HOSTS, start=1)
    ]


def server_log(server: Server) -> str:
    return str(server.container.logs(stdout=True, stderr=True).decode(errors="replace"))


def wait_for(what: str, found: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while not found():
        assert time.monotonic() - started < timeout_s, f"no {what} after {timeout_s} s"
        time.sleep(0.2)
    return time.monotonic() - started


def accounted(
    radius: FreeRadius,
    status: str,
    host: str,
    user: str,
    where: Callable[[dict[str, str]], bool] = lambda _record: True,
) -> dict[str, str]:
    """The latest accounting record of ``status`` for ``user`` from NAS ``host`` that
    satisfies ``where``, once one came (the test opens one session per server)."""

    def found() -> list[dict[str, str]]:
        return [
            record
            for record in radius.accounting()
            if record.get("Acct-Status-Type") == status
            and record.get("NAS-Identifier") == host
            and record.get("User-Name") == user
            and where(record)
        ]

    waited = wait_for(f"{status} record from {host}", lambda: bool(found()), 10)
    print(f"  accounting {status} from {host} after {waited:.2f} s")
    return found()[-1]


def packets_in_at_least(count: int) -> Callable[[dict[str, str]], bool]:
    return lambda record: int(record.get("Acct-Input-Packets", "0")) >= count


def connect(client: VpnClient, user: str, password: str) -> tuple[bool, float]:
    started = time.monotonic()
    result = client.connect(user, password, timeout_s=30)
    return result.connected, time.monotonic() - started


def test_a_radius_user_connects_through_both_servers_and_is_accounted(
    lab: Lab, radius: FreeRadius, servers: list[Server]
) -> None:
    logins_before = len(radius.logins())
    for server, host in zip(servers, HOSTS, strict=True):
        client = lab.start_client(server)
        connected, seconds = connect(client, "carol", CAROL_PW)
        print(f"carol through {host}: connected={connected} in {seconds:.2f} s")
        assert connected, client.logs()
        traffic = client.send_traffic(lab.target(server))
        assert traffic.tcp_source == server.egress().address, traffic
        assert traffic.icmp_received == traffic.icmp_sent > 0, traffic

        start = accounted(radius, "Start", host, "carol")
        assert start["NAS-IP-Address"] == client.server_address
        assert start["Framed-IP-Address"] in {str(ip) for ip in server.pool}
        assert start["Calling-Station-Id"].startswith(client.address)
        # Interim updates every INTERIM_S seconds, with the traffic so far once it passed.
        interim = accounted(
            radius, "Interim-Update", host, "carol", packets_in_at_least(traffic.icmp_sent)
        )
        assert interim["Acct-Session-Id"] == start["Acct-Session-Id"]

        assert client.disconnect()
        stop = accounted(radius, "Stop", host, "carol")
        print(
            f"  session: {stop['Acct-Session-Time']} s, "
            f"{stop['Acct-Input-Octets']} bytes in, {stop['Acct-Output-Octets']} bytes out"
        )
        assert stop["Acct-Session-Id"] == start["Acct-Session-Id"]
        assert stop["Acct-Terminate-Cause"] == "User-Request"
        assert int(stop["Acct-Input-Packets"]) >= traffic.icmp_sent  # the pings, at least
        assert int(stop["Acct-Output-Packets"]) >= traffic.icmp_received

    assert radius.logins()[logins_before:] == [Login("carol", ok=True)] * len(servers)
    for server, host in zip(servers, HOSTS, strict=True):
        assert (
            f"[VPN] ready: clients connect to {host} (IKEv2, username and password) as: users "
            f"of RADIUS server {radius.alias}:1812 (NAS-Identifier {host})"
        ) in server_log(server)


def test_a_wrong_password_is_refused_and_counted(
    lab: Lab, radius: FreeRadius, servers: list[Server]
) -> None:
    server = servers[0]
    client = lab.start_client(server)
    connected, seconds = connect(client, "carol", "Not-carols-pw")
    print(f"carol with a wrong password: connected={connected} in {seconds:.2f} s")
    assert not connected
    wait_for(
        "failed-login line",
        lambda: (
            f"[VPN] login failed: user 'carol' from {client.address} (1 of 3" in server_log(server)
        ),
        10,
    )
    assert not radius.logins()[-1].ok
    assert "Not-carols-pw" not in server_log(server) + radius.logs()


def test_a_user_removed_in_radius_is_refused_on_the_next_login(
    lab: Lab, radius: FreeRadius, servers: list[Server]
) -> None:
    client = lab.start_client(servers[1])
    assert connect(client, "dave", DAVE_PW)[0], client.logs()
    assert client.disconnect()

    radius.set_users({"carol": CAROL_PW})  # dave removed
    connected, seconds = connect(client, "dave", DAVE_PW)
    print(f"dave after his removal in RADIUS: connected={connected} in {seconds:.2f} s")
    assert not connected
    assert radius.logins()[-1] == Login(user="dave", ok=False)
    # Nothing was cached on the server: carol still gets in there.
    assert connect(lab.start_client(servers[1]), "carol", CAROL_PW)[0]


@pytest.fixture
def silent_radius(radius: FreeRadius) -> Iterator[FreeRadius]:
    radius.pause()
    try:
        yield radius
    finally:
        radius.resume()


def test_a_silent_radius_server_means_a_quick_refusal_and_a_clear_log_line(
    lab: Lab, servers: list[Server], silent_radius: FreeRadius
) -> None:
    server = servers[0]
    client = lab.start_client(server)
    connected, seconds = connect(client, "carol", CAROL_PW)
    print(f"carol while RADIUS does not answer: connected={connected} in {seconds:.2f} s")
    assert not connected
    assert seconds < REFUSAL_LIMIT_S
    expected = (
        f"[VPN] warning: login refused: RADIUS server {silent_radius.alias}:1812 did not answer "
        f"for user 'carol' from {client.address}"
    )
    wait_for("RADIUS silence line", lambda: expected in server_log(server), 5)
    # The user is not to blame: no failed login counted, no step towards a ban.
    assert f"login failed: user 'carol' from {client.address}" not in server_log(server)


def test_the_secret_stays_in_its_file_and_users_are_managed_in_radius(
    servers: list[Server],
) -> None:
    for server in servers:
        container = server.container
        container.reload()
        script = "for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do tr '\\0' ' ' < $f; done"
        for where, text in {
            "log": server_log(server),
            "inspect": str(container.attrs),
            "processes": eng.run_checked(container, ["sh", "-c", script]),
            "strongswan.conf": eng.read_file(container, "/etc/strongswan.conf").decode(),
        }.items():
            assert SECRET not in text and "Radius-secret" not in text, f"secret in {where}"
        mode = eng.run_checked(
            container, ["stat", "-c", "%a %U", "/etc/ikev2-vpn/radius-secrets.conf"]
        )
        assert mode.split() == ["600", "root"]

        listing = run_users(container, ["list"])
        assert listing.exit_code == 2
        assert "users live in RADIUS" in listing.stderr
        assert "on the RADIUS server" in listing.stderr
