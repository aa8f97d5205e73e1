"""Passwords never leave the places they were put: not the container's log, not `docker
inspect`, not any process's arguments or environment, not an error message. The one
exception is by design: a generated user's password is printed once, at first start."""

from __future__ import annotations

import json
import re

import pytest

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.users import run_users
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
DNS = "198.51.100.53"
# Distinctive enough that a match is a leak, odd enough to catch quoting that splits them.
FILE_PASSWORD = "Leak-pw-file 'one' \"quoted\""
USERS_FILE_PASSWORDS = {"bob": "Leak-pw-bob{x}#;", "carol": "Leak-pw-carol pässwörd"}
STDIN_PASSWORD = "Leak-pw-stdin:dave$HOME`id`"
ENV_PASSWORD = "Leak-pw-env-control"  # in the environment by the operator's choice
WRONG_PASSWORD = "Leak-pw-wrong-attempt"
BAD_START_PASSWORDS = ("Leak-pw-bad-file", "Leak-pw-bad-env")
GENERATED = re.compile(r"created user '([^']+)' with password (\S+) \(shown once")


def everything_visible(server: Server) -> dict[str, str]:
    """Where a secret could show: the log, docker inspect, and inside the container every
    process's command line and environment."""
    container = server.container
    container.reload()
    places = {
        "log": container.logs(stdout=True, stderr=True).decode(errors="replace"),
        "inspect": json.dumps(container.attrs),
    }
    if container.status == "running":
        for kind in ("cmdline", "environ"):
            script = (
                f"for f in /proc/[0-9]*/{kind}; do echo \"$f\"; tr '\\0' ' ' < \"$f\"; echo; done"
            )
            places[kind] = eng.run_checked(container, ["sh", "-c", script])
    return places


def assert_hidden(server: Server, secrets: list[str]) -> dict[str, str]:
    places = everything_visible(server)
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a password appears in the {where} of {server.name}"
    return places


def start(lab: Lab, role: str, env: dict[str, str], **options: object) -> Server:
    return lab.start_server(
        {"VPN_HOST": HOST, "VPN_DNS": DNS, **env},
        name=lab.name(role),
        volume=lab.name(f"{role}-data"),
        **options,  # type: ignore[arg-type]
    )


def test_passwords_given_every_way_stay_hidden(lab: Lab) -> None:
    users_file = "".join(f"{name}:{pw}\n" for name, pw in USERS_FILE_PASSWORDS.items())
    server = start(
        lab,
        "leaks",
        {"VPN_USER": "alice", "VPN_USERS": f"zed:{ENV_PASSWORD}"},
        secret_files={
            "VPN_PASSWORD_FILE": FILE_PASSWORD.encode() + b"\n",
            "VPN_USERS_FILE": users_file.encode(),
        },
    )
    added = run_users(
        server.container, ["add", "dave", "--password-stdin"], STDIN_PASSWORD.encode()
    )
    assert added.exit_code == 0, added.stderr
    assert STDIN_PASSWORD not in added.stdout + added.stderr
    secrets = [FILE_PASSWORD, *USERS_FILE_PASSWORDS.values(), STDIN_PASSWORD, WRONG_PASSWORD]

    # The passwords work (so they were read), and a wrong one is refused and not logged.
    assert lab.start_client(server).connect("dave", STDIN_PASSWORD).connected
    refused = lab.start_client(server).connect("alice", WRONG_PASSWORD, timeout_s=15)
    assert not refused.connected
    places = assert_hidden(server, secrets)
    env = json.loads(places["inspect"])["Config"]["Env"]
    assert any(item.startswith("VPN_PASSWORD_FILE=") for item in env)
    assert not any(item.startswith("VPN_PASSWORD=") for item in env)
    # The control: what the operator put in the environment is where the scan looks.
    assert ENV_PASSWORD in places["environ"] and ENV_PASSWORD in places["inspect"]

    # Nor after a restart, nor in what `users` commands print.
    server.restart()
    listed = run_users(server.container, ["list"])
    for secret in secrets:
        assert secret not in listed.stdout + listed.stderr
    assert_hidden(server, secrets)


def test_generated_password_is_shown_exactly_once(lab: Lab) -> None:
    server = start(lab, "generated", {})
    log = everything_visible(server)["log"]
    shown = GENERATED.search(log)
    assert shown, log
    password = shown.group(2)
    assert len(password) >= 16
    lines = [line for line in log.splitlines() if password in line]
    assert len(lines) == 1 and shown.group(0) in lines[0]
    assert log.count(password) == 1
    server.restart()
    places = assert_hidden(server, [])
    assert places["log"].count(password) == 1, "shown again after a restart"
    for where in ("inspect", "cmdline", "environ"):
        assert password not in places[where], where


@pytest.mark.parametrize(
    ("env", "secret_files", "expected"),
    [
        (
            {"VPN_USER": "bad/name"},
            {"VPN_PASSWORD_FILE": BAD_START_PASSWORDS[0].encode()},
            "VPN_USER: user name 'bad/name'",
        ),
        (
            {"VPN_USERS": f"erin:{BAD_START_PASSWORDS[1]} frank"},
            {},
            "VPN_USERS: entry 2 has no colon",
        ),
    ],
    ids=["bad user with password file", "users entry without colon"],
)
def test_refused_start_names_no_password(
    lab: Lab, env: dict[str, str], secret_files: dict[str, bytes], expected: str
) -> None:
    server = start(
        lab,
        "leak-bad-" + str(len(secret_files)),
        env,
        secret_files=secret_files,
        wait=False,
        restart=None,
    )
    assert server.wait_exit() == 2
    places = everything_visible(server)
    errors = [line for line in places["log"].splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], places["log"]
    for secret in BAD_START_PASSWORDS:
        assert secret not in places["log"]
    if secret_files:  # given as a file: not in docker inspect either
        assert BAD_START_PASSWORDS[0] not in places["inspect"]
