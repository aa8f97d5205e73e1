"""Command line: options, settings for `run`, password sources for `check`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ikev2_vpn_helper.cli import (
    build_parser,
    check_password,
    parse_env_file,
    parse_env_items,
    secrets_to_files,
    server_settings,
    user_given,
)
from ikev2_vpn_helper.errors import HelperError


def test_env_items_take_values_or_the_callers_environment() -> None:
    environ = {"VPN_PASSWORD": "from-env"}
    assert parse_env_items(
        ["VPN_HOST=vpn.example.test", "VPN_PASSWORD", "VPN_MISSING", "VPN_DNS=a=b"], environ
    ) == {"VPN_HOST": "vpn.example.test", "VPN_PASSWORD": "from-env", "VPN_DNS": "a=b"}


def test_bad_variable_names_are_refused() -> None:
    with pytest.raises(HelperError):
        parse_env_items(["=value"], {})
    with pytest.raises(HelperError):
        parse_env_items(["VPN HOST=x"], {})


def test_env_file_in_dockers_format() -> None:
    text = "# comment\n\nVPN_HOST=vpn.example.test\n  VPN_USER=alice\nVPN_DNS= 198.51.100.53 \n"
    assert parse_env_file(text, {}) == {
        "VPN_HOST": "vpn.example.test",
        "VPN_USER": "alice",
        "VPN_DNS": " 198.51.100.53 ",
    }


def test_secrets_move_from_environment_to_files() -> None:
    env, files = secrets_to_files(
        {"VPN_USER": "alice", "VPN_PASSWORD": "p w#", "VPN_USERS": "a:1  b:2"}
    )
    assert env == {"VPN_USER": "alice"}
    assert files == {"VPN_PASSWORD_FILE": b"p w#", "VPN_USERS_FILE": b"a:1\nb:2\n"}


def test_the_radius_secret_moves_to_a_file_too() -> None:
    env, files = secrets_to_files(
        {"VPN_RADIUS_SERVERS": "radius.example.test", "VPN_RADIUS_SECRET": "s3 cret"}
    )
    assert env == {"VPN_RADIUS_SERVERS": "radius.example.test"}
    assert files == {"VPN_RADIUS_SECRET_FILE": b"s3 cret"}


def test_a_secret_and_its_file_setting_together_are_refused() -> None:
    with pytest.raises(HelperError, match="keep one"):
        secrets_to_files({"VPN_PASSWORD": "x", "VPN_PASSWORD_FILE": "/run/x"})


def run_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_run_never_lets_the_server_detect_its_address_unasked() -> None:
    env, _ = server_settings(run_args("-e", "VPN_USER=alice"), {})
    assert env["VPN_HOST_DETECT"] == "off"
    env, _ = server_settings(run_args("-e", "VPN_HOST=vpn.example.test"), {})
    assert "VPN_HOST_DETECT" not in env
    env, _ = server_settings(run_args("-e", "VPN_HOST_DETECT=on"), {})
    assert env["VPN_HOST_DETECT"] == "on"


def test_run_copies_password_and_users_files(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_bytes(b"secret\n")
    users = tmp_path / "users"
    users.write_bytes(b"a:1\n")
    args = run_args("--password-file", str(password), "--users-file", str(users))
    env, files = server_settings(args, {})
    assert files == {"VPN_PASSWORD_FILE": b"secret\n", "VPN_USERS_FILE": b"a:1\n"}
    assert "secret" not in "".join(env.values())
    assert user_given(env, files)
    assert not user_given({"VPN_HOST": "x"}, {})


def test_password_given_twice_is_refused(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_bytes(b"secret")
    args = run_args("--password-file", str(password), "-e", "VPN_PASSWORD")
    with pytest.raises(HelperError, match="keep one"):
        server_settings(args, {"VPN_PASSWORD": "other"})


def test_check_has_no_way_to_take_a_password_from_argv() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["check", "--password", "x"])


def test_check_defaults() -> None:
    args = build_parser().parse_args(["check"])
    assert args.server == "ikev2-vpn"
    assert args.timeout == 20
    assert not args.json
    assert not args.keep


def check_args(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(["check", "--user", "alice", *argv])
    return args


def test_password_file_loses_one_trailing_newline(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text(" spaced pass \n\n", encoding="utf-8")
    assert check_password(check_args("--password-file", str(password)), {}) == " spaced pass \n"


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_password(check_args(), {"VPN_CHECK_PASSWORD": "pw"}) == "pw"


def test_no_password_without_a_terminal_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(HelperError, match="VPN_CHECK_PASSWORD"):
        check_password(check_args(), {})


def test_build_defaults() -> None:
    args = build_parser().parse_args(["build"])
    assert args.tag is None  # ikev2-vpn:latest, or ikev2-vpn:latest-<suffix> for another CPU
    assert args.platform is None  # the engine's own
    assert args.base == "debian:trixie-slim"
    assert args.ca_cert == []
    assert not args.no_host_ca
