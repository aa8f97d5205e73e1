"""Server container: settings as files, routing and identity parsing, redaction."""

from __future__ import annotations

import json

import pytest

from ikev2_vpn_helper.engine import parse_env_list, redact
from ikev2_vpn_helper.server import (
    ServerSpec,
    parse_default_route,
    parse_interface_address,
    parse_local_id,
    secret_values,
)


def test_secret_files_become_file_settings_not_environment() -> None:
    spec = ServerSpec(env={"VPN_USER": "alice"}, secret_files={"VPN_PASSWORD_FILE": b"pw"})
    env = spec.environment()
    assert env == {
        "VPN_USER": "alice",
        "VPN_PASSWORD_FILE": "/run/secrets/ikev2-vpn/vpn_password",
    }
    assert "pw" not in json.dumps(env)


def test_secret_files_must_be_file_settings() -> None:
    with pytest.raises(ValueError, match="_FILE"):
        ServerSpec(secret_files={"VPN_PASSWORD": b"pw"}).environment()


def test_volume_defaults_to_the_container_name() -> None:
    assert ServerSpec(name="vpn").volume_name() == "vpn-data"
    assert ServerSpec(name="vpn", volume="state").volume_name() == "state"


def test_default_route_device() -> None:
    routes = json.dumps([{"dst": "default", "gateway": "198.51.100.1", "dev": "eth1", "flags": []}])
    assert parse_default_route(routes) == "eth1"
    assert parse_default_route("[]") is None
    assert parse_default_route("") is None


def test_interface_address_is_the_first_ipv4() -> None:
    addresses = json.dumps(
        [
            {
                "ifname": "eth1",
                "addr_info": [
                    {"family": "inet6", "local": "fe80::1"},
                    {"family": "inet", "local": "198.51.100.2", "prefixlen": 24},
                ],
            }
        ]
    )
    assert parse_interface_address(addresses) == "198.51.100.2"
    assert parse_interface_address("[]") is None


def test_local_identity_from_list_conns() -> None:
    raw = (
        "list-conn event {ikev2-vpn {local_addrs=[%any] remote_addrs=[%any] version=IKEv2 "
        "local-1 {class=public key groups=[] certs=[CN=vpn] id=vpn.example.test} "
        "remote-1 {class=EAP eap-type=EAP_MSCHAPV2 id=%any} children {ikev2-vpn {}}}}"
    )
    assert parse_local_id(raw, "ikev2-vpn") == "vpn.example.test"
    assert parse_local_id(raw, "other") is None


def test_env_list_splits_at_the_first_equals() -> None:
    assert parse_env_list(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}


def test_redact_masks_known_secrets_and_generated_passwords() -> None:
    log = (
        "no user configured: created user 'vpnuser' with password Abc23Def45 (shown once)\n"
        "loaded secret s3cr3t for alice\n"
        "VPN_PASSWORD: both VPN_PASSWORD and VPN_PASSWORD_FILE are set; keep one\n"
    )
    text = redact(log, ["s3cr3t"])
    assert "Abc23Def45" not in text
    assert "s3cr3t" not in text
    assert "with password *** (shown once)" in text
    assert "VPN_PASSWORD: both VPN_PASSWORD and VPN_PASSWORD_FILE are set" in text


def test_secret_values_cover_settings_and_files() -> None:
    env = {"VPN_PASSWORD": "one", "VPN_USERS": "a:two b:three", "VPN_HOST": "vpn.example.test"}
    files = {"VPN_PASSWORD_FILE": b"four\n", "VPN_USERS_FILE": b"c:five six\n"}
    assert secret_values(env, files) == ["one", "two", "three", "four", "five six"]
    assert secret_values({"VPN_HOST": "x"}) == []
    assert secret_values({"VPN_RADIUS_SECRET": "shared"}) == ["shared"]
    assert secret_values({}, {"VPN_RADIUS_SECRET_FILE": b"shared\n"}) == ["shared"]


def test_ipv6_sysctls_only_for_servers_with_an_ipv6_pool() -> None:
    """A host booted without IPv6 cannot create a container that sets them (compose.yaml
    leaves them commented out for the same reason)."""
    from ikev2_vpn.defaults import SYSCTLS, SYSCTLS_V6
    from ikev2_vpn_helper.server import ServerSpec, _create_options

    engine = None  # only asked for network aliases, which these specs have none of
    plain = _create_options(engine, ServerSpec(env={"VPN_HOST": "vpn.example.test"}))
    assert plain["sysctls"] == dict(SYSCTLS)
    dual = ServerSpec(env={"VPN_POOL_V6": "fd00:10:10::/112"}, sysctls={"x.y": "1"})
    assert _create_options(engine, dual)["sysctls"] == {**SYSCTLS, **SYSCTLS_V6, "x.y": "1"}


def test_secret_files_mounted_by_path_are_masked_too() -> None:
    """The Kubernetes stand-in mounts a pod's Secret files by path (``files``), and the
    settings point at them: their passwords are masked as if given as ``secret_files``."""
    spec = ServerSpec(
        env={
            "VPN_USERS_FILE": "/run/secrets/ikev2-vpn/users",
            "VPN_RADIUS_SECRET_FILE": "/run/secrets/elsewhere",  # not among the files
        },
        files={
            "/run/secrets/ikev2-vpn/users": b"alice:pw one\nbob:pw:two\n",
            "/etc/ikev2-vpn/ca.pem": b"not pointed at by a setting",
        },
        secret_files={"VPN_PASSWORD_FILE": b"three\n"},
    )
    assert spec.hidden_values() == ["pw one", "pw:two", "three"]
