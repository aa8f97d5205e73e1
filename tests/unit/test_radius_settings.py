"""VPN_RADIUS_*: what an operator types to share users over RADIUS, and the one line they
get back when something is wrong (never with the shared secret in it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ikev2_vpn.errors import ConfigError, ConfigErrors
from ikev2_vpn.settings import RadiusServer, Settings, describe, parse_radius_server

Load = Callable[..., Settings]
Reject = Callable[..., ConfigError]

SECRET = "Zq7-radius-secret-Xy9"
RADIUS = {"VPN_RADIUS_SERVERS": "radius.example.com", "VPN_RADIUS_SECRET": SECRET}


pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def reject(load: Load) -> Reject:
    """Exactly one problem, one line naming ``setting``, without the secret."""

    def _reject(setting: str, **env: str) -> ConfigError:
        with pytest.raises(ConfigErrors) as caught:
            load(**env)
        message = str(caught.value)
        assert len(caught.value.errors) == 1, message
        error = caught.value.errors[0]
        assert error.setting == setting, message
        assert message.startswith(f"{setting}: ") and "\n" not in message
        assert error.problem and error.fix
        assert SECRET not in message
        return error

    return _reject


# --- accepted ------------------------------------------------------------------------------


def test_without_radius_nothing_changes(load: Load) -> None:
    settings = load()
    assert settings.radius_servers == ()
    assert settings.radius_secret is None


def test_a_typical_setup(load: Load) -> None:
    settings = load(**RADIUS)
    assert settings.radius_servers == (RadiusServer(host="radius.example.com", auth_port=1812),)
    assert settings.radius_secret is not None
    assert settings.radius_secret.get_secret_value() == SECRET
    assert settings.radius_nas_identifier is None  # the server's identity, decided at start
    assert settings.radius_accounting_port is None  # each server's port + 1
    assert settings.radius_interim_interval == 300
    assert settings.accounts() == ()


@pytest.mark.parametrize(
    ("entry", "host", "port"),
    [
        ("radius.example.com", "radius.example.com", 1812),
        ("Radius.Example.COM.:11812", "radius.example.com", 11812),
        ("198.51.100.7", "198.51.100.7", 1812),
        ("198.51.100.7:1645", "198.51.100.7", 1645),
        ("2001:db8::7", "2001:db8::7", 1812),
        ("[2001:db8::7]", "2001:db8::7", 1812),
        ("[2001:DB8:0::7]:1812", "2001:db8::7", 1812),
        ("radius", "radius", 1812),
    ],
)
def test_server_entries(entry: str, host: str, port: int) -> None:
    assert parse_radius_server(entry) == RadiusServer(host=host, auth_port=port)


def test_several_servers_by_commas_or_spaces_in_order(load: Load) -> None:
    settings = load(
        VPN_RADIUS_SERVERS="r1.example.com, r2.example.com:1645 [2001:db8::1]:11812",
        VPN_RADIUS_SECRET=SECRET,
    )
    assert [str(server) for server in settings.radius_servers] == [
        "r1.example.com:1812",
        "r2.example.com:1645",
        "[2001:db8::1]:11812",
    ]


def test_the_secret_from_a_file_keeps_every_character_but_the_newline(
    load: Load, tmp_path: Path
) -> None:
    path = tmp_path / "radius-secret"
    path.write_text('a "quoted" #secret {x} \\y\n')
    settings = load(VPN_RADIUS_SERVERS="radius.example.com", VPN_RADIUS_SECRET_FILE=str(path))
    assert settings.radius_secret is not None
    assert settings.radius_secret.get_secret_value() == 'a "quoted" #secret {x} \\y'


def test_optional_settings(load: Load) -> None:
    settings = load(
        **RADIUS,
        VPN_RADIUS_NAS_IDENTIFIER="vpn-eu-1.example.com",
        VPN_RADIUS_ACCOUNTING_PORT="11813",
        VPN_RADIUS_INTERIM_INTERVAL="60s",
    )
    assert settings.radius_nas_identifier == "vpn-eu-1.example.com"
    assert settings.radius_accounting_port == 11813
    assert settings.radius_interim_interval == 60
    assert load(VPN_RADIUS_INTERIM_INTERVAL="0").radius_interim_interval == 0


def test_the_start_up_log_names_the_servers_but_not_the_secret(load: Load) -> None:
    lines = list(describe(load(**RADIUS)))
    assert "users: in RADIUS; VPN_RADIUS_SERVERS=radius.example.com:1812" in lines[1]
    assert all(SECRET not in line for line in lines)


# --- refused -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        "radius.example.com:0",
        "radius.example.com:65536",
        "radius.example.com:x",
        "r:1:2:3:z",
        "http://radius",
    ],
)
def test_bad_server_entries(reject: Reject, entry: str) -> None:
    error = reject("VPN_RADIUS_SERVERS", VPN_RADIUS_SERVERS=entry, VPN_RADIUS_SECRET=SECRET)
    assert "radius.example.com:1812" in error.fix


@pytest.mark.parametrize("entry", ["-radius", "radius_1", "[radius]:1812", "radius..example"])
def test_not_a_host(reject: Reject, entry: str) -> None:
    error = reject("VPN_RADIUS_SERVERS", VPN_RADIUS_SERVERS=entry, VPN_RADIUS_SECRET=SECRET)
    assert "not host[:port]" in error.problem


def test_a_server_listed_twice(reject: Reject) -> None:
    error = reject(
        "VPN_RADIUS_SERVERS",
        VPN_RADIUS_SERVERS="radius.example.com radius.example.com:1812",
        VPN_RADIUS_SECRET=SECRET,
    )
    assert "twice" in error.problem


def test_servers_need_the_secret(reject: Reject) -> None:
    error = reject("VPN_RADIUS_SECRET", VPN_RADIUS_SERVERS="radius.example.com")
    assert "VPN_RADIUS_SECRET_FILE" in error.fix


@pytest.mark.parametrize(
    "secret", [SECRET + "\u00e9", SECRET + "\t", SECRET + "\n" + SECRET, "x" * 129]
)
def test_secrets_radius_servers_would_read_differently(reject: Reject, secret: str) -> None:
    reject("VPN_RADIUS_SECRET", VPN_RADIUS_SERVERS="radius.example.com", VPN_RADIUS_SECRET=secret)


def test_secret_in_both_forms(reject: Reject, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET)
    reject("VPN_RADIUS_SECRET_FILE", **RADIUS, VPN_RADIUS_SECRET_FILE=str(path))


def test_a_missing_secret_file(reject: Reject, tmp_path: Path) -> None:
    error = reject(
        "VPN_RADIUS_SECRET_FILE",
        VPN_RADIUS_SERVERS="radius.example.com",
        VPN_RADIUS_SECRET_FILE=str(tmp_path / "nope"),
    )
    assert "does not exist" in error.problem


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("VPN_RADIUS_SECRET", SECRET),
        ("VPN_RADIUS_NAS_IDENTIFIER", "vpn-1"),
        ("VPN_RADIUS_ACCOUNTING_PORT", "1813"),
        ("VPN_RADIUS_INTERIM_INTERVAL", "60"),
    ],
)
def test_radius_options_without_servers(reject: Reject, setting: str, value: str) -> None:
    error = reject(setting, **{setting: value})
    assert "only used with VPN_RADIUS_SERVERS" in error.problem


@pytest.mark.parametrize(
    ("setting", "env"),
    [
        ("VPN_USER", {"VPN_USER": "alice", "VPN_PASSWORD": "pw"}),
        ("VPN_USERS", {"VPN_USERS": "alice:pw"}),
    ],
)
def test_local_users_and_radius_exclude_each_other(
    reject: Reject, setting: str, env: dict[str, str]
) -> None:
    error = reject(setting, **RADIUS, **env)
    assert "users live in RADIUS" in error.problem
    assert "pw" not in str(error)


def test_local_users_file_and_radius_exclude_each_other(reject: Reject, tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("alice:pw\n")
    reject("VPN_USERS_FILE", **RADIUS, VPN_USERS_FILE=str(path))


def test_static_ips_need_local_users(reject: Reject) -> None:
    reject("VPN_POOL_V4_STATIC", **RADIUS, VPN_POOL_V4_STATIC="10.10.10.192/26")


@pytest.mark.parametrize("value", ["vpn 1", "-vpn", "vpn\n1", "x" * 254, "vpné"])
def test_bad_nas_identifier(reject: Reject, value: str) -> None:
    reject("VPN_RADIUS_NAS_IDENTIFIER", **RADIUS, VPN_RADIUS_NAS_IDENTIFIER=value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("VPN_RADIUS_ACCOUNTING_PORT", "0"),
        ("VPN_RADIUS_ACCOUNTING_PORT", "65536"),
        ("VPN_RADIUS_ACCOUNTING_PORT", "1813s"),
        ("VPN_RADIUS_INTERIM_INTERVAL", "-1"),
        ("VPN_RADIUS_INTERIM_INTERVAL", "86401"),
        ("VPN_RADIUS_INTERIM_INTERVAL", "5m"),
    ],
)
def test_numbers_out_of_range(reject: Reject, setting: str, value: str) -> None:
    reject(setting, **RADIUS, **{setting: value})


def test_the_last_port_leaves_none_for_accounting(reject: Reject, load: Load) -> None:
    error = reject(
        "VPN_RADIUS_SERVERS",
        VPN_RADIUS_SERVERS="radius.example.com:65535",
        VPN_RADIUS_SECRET=SECRET,
    )
    assert "VPN_RADIUS_ACCOUNTING_PORT" in error.fix
    settings = load(
        VPN_RADIUS_SERVERS="radius.example.com:65535",
        VPN_RADIUS_SECRET=SECRET,
        VPN_RADIUS_ACCOUNTING_PORT="1813",
    )
    assert settings.radius_servers[0].auth_port == 65535
