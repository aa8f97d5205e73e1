"""`ikev2-vpn users` and `ikev2-vpn-helper users`: arguments, and passwords that never travel
on a command line."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from ikev2_vpn import cli
from ikev2_vpn_helper.cli import build_parser
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.users import read_password, users_argv


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)


def test_users_help_names_every_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["users", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for action in ("list", "add", "remove", "passwd", "static-ip", "disable", "enable"):
        assert action in out
    assert "never from the command line" in out


def test_users_has_no_password_argument() -> None:
    with pytest.raises(SystemExit):
        cli.users_parser().parse_args(["add", "bob", "--password", "secret"])


def test_users_outside_a_running_server_fails_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["users", "list"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "ikev2-vpn: error: the server is not running yet (it has not finished starting); "
        "wait until the container is healthy"
    ]


def test_password_from_stdin_loses_one_trailing_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(" pä ss \n\n".encode())))
    assert cli._password_from_stdin().get_secret_value() == " pä ss \n"


# --- the helper ------------------------------------------------------------------------------


def test_helper_passes_the_password_flag_never_the_password() -> None:
    assert users_argv("add", "bob", [], with_password=True) == ["add", "bob", "--password-stdin"]
    assert users_argv("add", "bob", [], with_password=False) == ["add", "bob"]
    assert users_argv("static-ip", "bob", ["10.10.10.200"], False) == [
        "static-ip",
        "bob",
        "10.10.10.200",
    ]
    assert users_argv("list", None, ["--json"], False) == ["list", "--json"]


def test_helper_parses_users_commands() -> None:
    args = build_parser().parse_args(["users", "vpn", "add", "bob", "--password-file", "pw.txt"])
    assert (args.server, args.action, args.name, args.password_file) == (
        "vpn",
        "add",
        "bob",
        Path("pw.txt"),
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["users", "vpn", "add", "bob", "--password", "x"])
    for action in ("disable", "enable"):
        args = build_parser().parse_args(["users", "vpn", action, "bob"])
        assert (args.action, args.name) == (action, "bob")
        assert users_argv(action, "bob", [], False) == [action, "bob"]


def test_helper_reads_the_password_from_a_file_or_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pw"
    path.write_bytes("sécret\n".encode())
    assert read_password(path, False, "bob") == "sécret"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"from-stdin\n")))
    assert read_password(Path("-"), False, "bob") == "from-stdin"
    assert read_password(None, False, "bob") is None  # the server generates one


def test_helper_refuses_empty_and_doubled_password_sources(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"\n")
    with pytest.raises(HelperError, match="the password is empty"):
        read_password(empty, False, "bob")
    with pytest.raises(HelperError, match="not both"):
        read_password(empty, True, "bob")
