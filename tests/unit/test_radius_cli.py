"""`ikev2-vpn users` and `ikev2-vpn share` when users live in RADIUS: one line saying where
users are managed instead, exit status 2, and no secret in it."""

from __future__ import annotations

import os

import pytest

from ikev2_vpn import cli

SECRET = "Zq7-radius-secret-Xy9"


@pytest.fixture(autouse=True)
def radius_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VPN_RADIUS_SERVERS", "radius.example.com, 198.51.100.7:11812")
    monkeypatch.setenv("VPN_RADIUS_SECRET", SECRET)


EXPECTED = (
    "ikev2-vpn: error: users live in RADIUS (VPN_RADIUS_SERVERS=radius.example.com:1812, "
    "198.51.100.7:11812), not on this server; add, remove and change them on the RADIUS server"
)


@pytest.mark.parametrize(
    "argv",
    [["users", "list"], ["users", "add", "bob"], ["users", "remove", "bob"], ["share", "bob"]],
)
def test_user_commands_point_to_radius(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [EXPECTED]
    assert SECRET not in captured.out + captured.err


def test_users_help_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["users", "--help"])
    assert "users\nlive in RADIUS and are managed there" in capsys.readouterr().out
