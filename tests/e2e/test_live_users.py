"""Users managed while the server runs: real server, real clients, `ikev2-vpn users` in it.

What a user notices: a removed colleague is cut off while everyone else keeps browsing; a
new colleague connects at once; a changed password locks out the old one; a fixed address
is always the same and nobody else's; all of it survives a restart.
"""

from __future__ import annotations

import ipaddress
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ikev2_vpn_helper import cli as helper_cli
from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.engine import ExecResult
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.users import run_users
from ikev2_vpn_helper.vpnclient import VpnClient
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
DNS = "198.51.100.53"
ALICE_PW = "Alice-pw-1"  # declared in the environment

# What charon's IKE_SAs are, asked over VICI inside the server (JSON on stdout).
LIST_SESSIONS = """
import json
from ikev2_vpn.run.vici_session import connect
found = []
for entry in connect().list_sas():
    for sa in entry.values():
        identity = sa.get("remote-eap-id") or sa.get("remote-id") or b""
        vips = [ip.decode() for ip in sa.get("remote-vips", [])]
        found.append({"id": sa["uniqueid"].decode(), "user": identity.decode(), "vips": vips,
                      "state": sa["state"].decode()})
print(json.dumps(found))
"""


def users(server: Server, *args: str, password: str | None = None) -> ExecResult:
    """`ikev2-vpn users ARGS` in the server, the password on standard input."""
    argv = [*args, "--password-stdin"] if password is not None else list(args)
    return run_users(server.container, argv, None if password is None else password.encode())


def ok(result: ExecResult) -> str:
    assert result.exit_code == 0, result.stderr + result.stdout
    return result.stdout


def sessions(server: Server) -> list[dict[str, object]]:
    out = eng.run_checked(server.container, ["/opt/ikev2-vpn/bin/python3", "-c", LIST_SESSIONS])
    found: list[dict[str, object]] = json.loads(out)
    return [sa for sa in found if sa["state"] == "ESTABLISHED"]


def session_ids(server: Server, user: str) -> list[str]:
    return [str(sa["id"]) for sa in sessions(server) if sa["user"] == user]


def charon_pid(server: Server) -> str:
    return eng.run_checked(server.container, ["cat", "/var/run/charon.pid"]).strip()


def passes_traffic(lab: Lab, server: Server, client: VpnClient) -> bool:
    traffic = client.send_traffic(lab.target(server), count=2, timeout_s=2)
    return traffic.icmp_received > 0 and traffic.tcp_source == server.egress().address


@pytest.fixture(scope="module")
def server(lab: Lab) -> Server:
    return lab.start_server(
        {"VPN_HOST": HOST, "VPN_DNS": DNS, "VPN_USER": "alice"},
        name=lab.name("users"),
        volume=lab.name("users-data"),
        secret_files={"VPN_PASSWORD_FILE": ALICE_PW.encode()},
    )


def test_removed_user_is_cut_off_while_others_keep_their_tunnel(lab: Lab, server: Server) -> None:
    ok(users(server, "add", "bob", password="Bob-pw-1"))
    alice, bob = lab.start_client(server), lab.start_client(server)
    assert alice.connect("alice", ALICE_PW).connected
    assert bob.connect("bob", "Bob-pw-1").connected
    assert passes_traffic(lab, server, alice) and passes_traffic(lab, server, bob)
    [alice_sa] = session_ids(server, "alice")
    pid = charon_pid(server)

    out = ok(users(server, "remove", "bob"))
    assert "removed user bob (1 session ended)" in out

    assert session_ids(server, "bob") == []  # his tunnel is gone on the server...
    assert not passes_traffic(lab, server, bob)  # ...and carries nothing
    refused = bob.connect("bob", "Bob-pw-1", timeout_s=15)
    assert not refused.connected
    # Alice never noticed: same IKE_SA, same charon, traffic before and after.
    assert passes_traffic(lab, server, alice)
    assert session_ids(server, "alice") == [alice_sa]
    assert charon_pid(server) == pid
    alice.disconnect()


def test_added_user_connects_without_a_restart(lab: Lab, server: Server) -> None:
    pid = charon_pid(server)
    out = ok(users(server, "add", "carol"))
    found = re.search(r"^password: (\S+) ", out, re.MULTILINE)
    assert found, out
    carol = lab.start_client(server)
    result = carol.connect("carol", found.group(1))
    assert result.connected, result.error
    assert passes_traffic(lab, server, carol)
    assert charon_pid(server) == pid
    carol.disconnect()
    assert found.group(1) not in server.container.logs().decode()  # shown to the caller only


def test_new_password_ends_the_session_and_only_it_works(lab: Lab, server: Server) -> None:
    ok(users(server, "add", "dan", password="Dan-old-1"))
    dan = lab.start_client(server)
    assert dan.connect("dan", "Dan-old-1").connected
    out = ok(users(server, "passwd", "dan", password="Dan-new-2 ü"))
    assert "its sessions were ended" in out
    assert session_ids(server, "dan") == []
    assert not dan.connect("dan", "Dan-old-1", timeout_s=15).connected
    assert dan.connect("dan", "Dan-new-2 ü").connected
    dan.disconnect()


def test_environment_users_stay_the_environments(server: Server) -> None:
    cases: tuple[tuple[str, str], ...] = (("remove", "alice"), ("passwd", "alice"))
    for args in cases:
        result = users(server, *args, password="x" if args[0] == "passwd" else None)
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines() == [
            f"ikev2-vpn: error: user 'alice' is declared in VPN_USER, which stays "
            f"authoritative; to {'remove' if args[0] == 'remove' else 'change the password of'} "
            "it, change VPN_USER and restart the container"
        ]
    listed = {row["name"]: row for row in json.loads(ok(users(server, "list", "--json")))}
    assert listed["alice"]["origin"] == "env"
    assert listed["carol"]["origin"] == "managed"
    assert "bob" not in listed
    assert ALICE_PW not in json.dumps(listed)


def test_parallel_adds_all_land(lab: Lab, server: Server) -> None:
    names = [f"par{n}" for n in range(8)]
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda n: users(server, "add", n, password=f"Pw-{n}"), names))
    assert [r.exit_code for r in results] == [0] * len(names), [r.stderr for r in results]
    listed = {row["name"] for row in json.loads(ok(users(server, "list", "--json")))}
    assert set(names) <= listed
    store = json.loads(eng.read_file(server.container, "/data/users.json"))
    assert {n: store["users"][n]["password"] for n in names} == {n: f"Pw-{n}" for n in names}
    assert lab.start_client(server).connect(names[-1], f"Pw-{names[-1]}").connected


def test_the_helper_command_pipes_the_password(
    lab: Lab, server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("Erin-pw-1\n")
    argv = ["users", server.name, "add", "erin", "--password-file", str(password_file)]
    assert helper_cli.main(argv) == 0
    assert "added user erin" in capsys.readouterr().out
    assert lab.start_client(server).connect("erin", "Erin-pw-1").connected


def test_changes_survive_a_restart_and_swanctl_shows_them(lab: Lab, server: Server) -> None:
    before = ok(users(server, "list"))
    server.restart()
    assert ok(users(server, "list")) == before
    assert lab.start_client(server).connect("dan", "Dan-new-2 ü").connected
    assert not lab.start_client(server).connect("bob", "Bob-pw-1", timeout_s=15).connected
    conf = eng.run_checked(server.container, ["cat", "/etc/swanctl/conf.d/users.conf"])
    assert "id = carol" in conf and "id = bob" not in conf


# --- static IPs ----------------------------------------------------------------------------------

# A tiny pool: three dynamic addresses (.1-.3), .4-.7 reserved, so "never hands out a reserved
# address" is observable: a fourth dynamic client is refused rather than given one.
SMALL_POOL = ipaddress.IPv4Network("10.10.10.0/29")
STATIC_BLOCK = ipaddress.IPv4Network("10.10.10.4/30")
DAVE_IP = "10.10.10.5"


@pytest.fixture(scope="module")
def static_server(lab: Lab) -> Server:
    return lab.start_server(
        {
            "VPN_HOST": HOST,
            "VPN_DNS": DNS,
            "VPN_POOL_V4": str(SMALL_POOL),
            "VPN_POOL_V4_STATIC": str(STATIC_BLOCK),
            "VPN_USERS": "erin:Erin-pw-1",
        },
        name=lab.name("static"),
        volume=lab.name("static-data"),
    )


def test_static_ip_is_always_the_users_and_never_anyone_elses(
    lab: Lab, static_server: Server
) -> None:
    server = static_server
    pid = charon_pid(server)
    ok(users(server, "add", "dave", password="Dave-pw-1"))
    ok(users(server, "static-ip", "dave", DAVE_IP))
    dave = lab.start_client(server)
    first = dave.connect("dave", "Dave-pw-1")
    assert first.connected, first.error
    assert first.virtual_ip == DAVE_IP
    assert passes_traffic(lab, server, dave)

    # Everyone else fills the dynamic range and never gets a reserved address.
    others = lab.start_clients(server, 4)
    results = [client.connect("erin", "Erin-pw-1", timeout_s=15) for client in others]
    given = [ipaddress.IPv4Address(r.virtual_ip) for r in results if r.connected and r.virtual_ip]
    assert len(given) == 3
    assert all(address not in STATIC_BLOCK for address in given)
    assert not results[-1].connected  # the pool is full: refused, not given a reserved one

    # Dave again (another device replaces the first): still exactly his address.
    again = lab.start_client(server).connect("dave", "Dave-pw-1")
    assert again.virtual_ip == DAVE_IP
    assert charon_pid(server) == pid
    listed = {row["name"]: row for row in json.loads(ok(users(server, "list", "--json")))}
    assert listed["dave"]["static_ip"] == DAVE_IP


def test_static_ip_survives_a_restart_and_matches_swanctl(lab: Lab, static_server: Server) -> None:
    server = static_server
    server.restart()
    result = lab.start_client(server).connect("dave", "Dave-pw-1")
    assert result.virtual_ip == DAVE_IP, result.error
    loaded = eng.run_checked(server.container, ["swanctl", "--list-conns", "--raw"])
    pools = eng.run_checked(server.container, ["swanctl", "--list-pools", "--raw"])
    eng.run_checked(server.container, ["swanctl", "--load-all", "--noprompt"])
    assert eng.run_checked(server.container, ["swanctl", "--list-conns", "--raw"]) == loaded
    assert eng.run_checked(server.container, ["swanctl", "--list-pools", "--raw"]) == pools


def test_static_ip_outside_the_block_is_refused_with_one_line(static_server: Server) -> None:
    result = users(static_server, "static-ip", "erin", "10.10.10.2")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "ikev2-vpn: error: 10.10.10.2 is not in VPN_POOL_V4_STATIC (10.10.10.4/30); "
        "choose an address in it"
    )
