"""Input that cannot poison /data, and charon without secrets (issue 13, findings 6 and 8).

The attack of finding 6: `ikev2-vpn users add --password-stdin` with a form feed saved the
user, loaded it into charon, crashed writing the Apple profile, and from then on every
start crashed. Now every such password is refused before anything is written, the server
restarts fine and the other users connect; a users.json that an older version left with
such an entry starts anyway, skipping (and naming) that user until its password is changed.

Finding 8: the network-facing daemon's environment (/proc/<charon pid>/environ, read as root
inside the container) holds no password and no setting at all.

Packets: only between the lab's client and server containers on the lab's networks.
"""

from __future__ import annotations

import json

import pytest

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.engine import ExecResult, FileSpec
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.users import run_users
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
DNS = "198.51.100.53"
ALICE_PW = "Alice-file-pw-1"  # in a mounted file
CAROL_PW = "Carol-env-pw-2"  # in the environment (VPN_USERS), as some operators do
# What the issue found, and the rest of the family: each must be refused with one line.
POISON = {
    "form feed": b"Poison\x0cFeed",
    "escape": b"Poison\x1b[31mEsc",
    "NUL": b"Poison\x00Nul",
    "carriage return": b"Poison\rReturn",
    "tab": b"Poison\tTab",
    "not UTF-8": b"Poison\xe9\xff",
    "CESU surrogate": b"Poison\xed\xa0\x80",
}


def users(server: Server, *args: str, stdin: bytes | None = None) -> ExecResult:
    argv = [*args, "--password-stdin"] if stdin is not None else list(args)
    return run_users(server.container, argv, stdin)


def connects(lab: Lab, server: Server, user: str, password: str) -> bool:
    return lab.start_client(server).connect(user, password).connected


@pytest.fixture(scope="module")
def server(lab: Lab) -> Server:
    return lab.start_server(
        {"VPN_HOST": HOST, "VPN_DNS": DNS, "VPN_USER": "alice", "VPN_USERS": f"carol:{CAROL_PW}"},
        name=lab.name("poison"),
        volume=lab.name("poison-data"),
        secret_files={"VPN_PASSWORD_FILE": ALICE_PW.encode() + b"\n"},
    )


def test_users_add_refuses_poisoned_passwords_and_restarts_fine(lab: Lab, server: Server) -> None:
    assert users(server, "add", "bob", stdin=b"Bob-pw-3\n").exit_code == 0
    store_before = eng.read_file(server.container, "/data/users.json")
    for what, password in POISON.items():
        for action, name in (("add", "mallory"), ("passwd", "bob")):
            refused = users(server, action, name, stdin=password + b"\n")
            lines = refused.stderr.splitlines()
            assert refused.exit_code == 2, (what, action, refused.stdout + refused.stderr)
            assert len(lines) == 1 and lines[0].startswith("ikev2-vpn: error: the password "), (
                what,
                refused.stderr,
            )
            assert "Poison" not in refused.stdout + refused.stderr
    assert eng.read_file(server.container, "/data/users.json") == store_before
    listed = users(server, "list", "--json")
    assert sorted(row["name"] for row in json.loads(listed.stdout)) == ["alice", "bob", "carol"]
    assert "Poison" not in server.container.logs().decode(errors="replace")

    seconds = server.restart()
    lab.log(f"restarted after the refused passwords, healthy in {seconds:.1f} s")
    for user, typed in (("alice", ALICE_PW), ("bob", "Bob-pw-3"), ("carol", CAROL_PW)):
        assert connects(lab, server, user, typed), user


def test_a_poisoned_users_json_is_reported_and_the_user_skipped(lab: Lab, server: Server) -> None:
    """What an older version left behind (its users add saved the user, then crashed)."""
    store = json.loads(eng.read_file(server.container, "/data/users.json"))
    store["users"]["eve"] = {"password": "Poison\x0cFeed", "origin": "managed"}
    raw = (json.dumps(store, indent=2) + "\n").encode()
    eng.put_files(server.container, [FileSpec("/data/users.json", raw, mode=0o600)])

    server.restart()  # the old code crashed here, and at every start after
    text = server.container.logs().decode(errors="replace")
    skipped = [line for line in text.splitlines() if "user 'eve' in /data/users.json" in line]
    assert skipped, text[-3000:]
    assert "control character U+000C" in skipped[-1]
    assert "`ikev2-vpn users passwd eve`" in skipped[-1]
    assert "Poison" not in text
    assert eng.read_file(server.container, "/data/users.json") == raw  # nothing in /data lost
    assert connects(lab, server, "bob", "Bob-pw-3")

    assert users(server, "passwd", "eve", stdin=b"Eve-new-pw-4\n").exit_code == 0
    assert connects(lab, server, "eve", "Eve-new-pw-4")


# The environment of every process the entrypoint (PID 1) started, by pid, read as root.
CHILD_ENVIRONMENTS = """
import json, pathlib
found = {}
for status in pathlib.Path("/proc").glob("[0-9]*/status"):
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    if fields.get("PPid", "").strip() == "1":
        raw = (status.parent / "environ").read_bytes()
        found[status.parent.name] = raw.decode(errors="replace")
print(json.dumps(found))
"""


def child_environments(server: Server) -> dict[str, list[str]]:
    out = eng.run_checked(
        server.container, ["/opt/ikev2-vpn/bin/python3", "-c", CHILD_ENVIRONMENTS]
    )
    return {pid: text.split("\0") for pid, text in json.loads(out).items()}


def test_charon_environment_holds_no_secret(server: Server) -> None:
    found = child_environments(server)
    charon = eng.run_checked(server.container, ["cat", "/var/run/charon.pid"]).strip()
    assert charon in found, found.keys()  # charon is among them, and its environment is read
    assert any(item.startswith("PATH=") for item in found[charon])
    for pid, environ in found.items():
        names = [item.partition("=")[0] for item in environ]
        assert not [name for name in names if name.startswith(("VPN_", "ACME_"))], (pid, names)
        for secret in (ALICE_PW, CAROL_PW, "Bob-pw-3"):
            assert not any(secret in item for item in environ), pid
    # The control: `docker exec` gets what Docker keeps (docs/security.md), the password
    # put in the environment included.
    assert CAROL_PW in eng.run_checked(server.container, ["env"])


def test_radius_secret_not_in_charon_environment(lab: Lab) -> None:
    """No login is attempted, so no packet goes to the RADIUS address (a lab address)."""
    secret = "Radius-env-secret-5"
    server = lab.start_server(
        {
            "VPN_HOST": HOST,
            "VPN_DNS": DNS,
            "VPN_RADIUS_SERVERS": "198.18.255.250",
            "VPN_RADIUS_SECRET": secret,
        },
        name=lab.name("poison-radius"),
        volume=lab.name("poison-radius-data"),
    )
    found = child_environments(server)
    charon = eng.run_checked(server.container, ["cat", "/var/run/charon.pid"]).strip()
    assert charon in found
    for environ in found.values():
        assert not any(secret in item or item.startswith("VPN_") for item in environ)
