"""The check's client: configuration rendering, secret encoding, probe answers."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from ikev2_vpn.state.users import nt_hash
from ikev2_vpn_helper.client.probe import parse_pushed_dns
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.vpnclient import (
    CHARON_PLUGINS,
    ClientProfile,
    ConnectResult,
    TrafficResult,
    proposal_list,
    render_secret_conf,
    render_strongswan_conf,
    render_swanctl_conf,
    swanctl_value,
    traffic_selectors,
)

PROFILE = ClientProfile(server_address="192.0.2.10", server_id="vpn.example.test", user="alice")


def test_secret_file_holds_the_nt_hash_never_the_password() -> None:
    password = 'p@ss "word" {x} # ; \\ ü'
    text = render_secret_conf("alice", password)
    assert f"secret = 0x{nt_hash(SecretStr(password)).hex()}" in text
    assert "ntlm-vpn" in text
    assert password not in text
    assert '"word"' not in text


def test_plain_secret_leaves_the_hashing_to_strongswan() -> None:
    text = render_secret_conf("alice", "correct horse", plain=True)
    assert f"secret = 0x{b'correct horse'.hex()}" in text
    assert "eap-vpn" in text and "ntlm-" not in text


def test_empty_password_is_refused() -> None:
    with pytest.raises(HelperError):
        render_secret_conf("alice", "")


def test_swanctl_conf_dials_the_server_with_its_identity() -> None:
    text = render_swanctl_conf(PROFILE)
    assert "remote_addrs = 192.0.2.10" in text
    assert "id = vpn.example.test" in text
    assert "eap_id = alice" in text
    assert "auth = eap-mschapv2" in text
    assert "vips = 0.0.0.0" in text
    assert "remote_ts = 0.0.0.0/0" in text
    assert "proposals" not in text  # strongSwan's defaults unless a platform is replayed
    assert "secret" not in text.split("include")[0].replace("the secret lives", "")


def test_swanctl_conf_replays_given_proposals() -> None:
    profile = ClientProfile(
        "192.0.2.10", "vpn.example.test", "alice", "aes256-sha1-modp1024", "aes256-sha1"
    )
    text = render_swanctl_conf(profile)
    assert "        proposals = aes256-sha1-modp1024\n" in text
    assert "esp_proposals = aes256-sha1\n" in text


def test_swanctl_conf_has_one_setting_per_line() -> None:
    for line in render_swanctl_conf(PROFILE).splitlines():
        assert line.count(" = ") <= 1, line


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("alice", "alice"),
        ("alice@example.test", "alice@example.test"),
        ("a b", '"a b"'),
        ('q"uote', '"q\\"uote"'),
        ("back\\slash", '"back\\\\slash"'),
        ("{brace}", '"{brace}"'),
    ],
)
def test_swanctl_values_are_quoted_when_needed(text: str, rendered: str) -> None:
    assert swanctl_value(text) == rendered


@pytest.mark.parametrize("text", ["", "new\nline", "tab\tbed"])
def test_swanctl_values_refuse_control_characters(text: str) -> None:
    with pytest.raises(HelperError):
        swanctl_value(text)


def test_strongswan_conf_loads_a_userspace_client_that_fetches_nothing() -> None:
    text = render_strongswan_conf()
    assert "load = " + " ".join(CHARON_PLUGINS) in text
    assert "kernel-libipsec" in CHARON_PLUGINS
    assert "resolve" in CHARON_PLUGINS
    assert not {"curl", "revocation", "ldap"} & set(CHARON_PLUGINS)


def test_pushed_dns_are_the_lines_strongswan_marked() -> None:
    resolv_conf = (
        "nameserver 127.0.0.11\n"
        "nameserver 198.51.100.53   # by strongSwan\n"
        "nameserver 198.51.100.54   # by strongSwan\n"
        "options ndots:0\n"
    )
    assert parse_pushed_dns(resolv_conf) == ["198.51.100.53", "198.51.100.54"]
    assert parse_pushed_dns("nameserver 127.0.0.11\n") == []


def test_connect_result_prefers_the_ipv4_virtual_ip() -> None:
    result = ConnectResult.from_probe(
        {
            "connected": True,
            "connect_ms": 81.5,
            "virtual_ips": ["fd00::1", "10.10.10.1"],
            "dns": ["198.51.100.53"],
            "log": ["[IKE] ..."],
        }
    )
    assert result.connected
    assert result.virtual_ip == "10.10.10.1"
    assert result.dns == ["198.51.100.53"]
    assert result.connect_ms == 81.5


def test_failed_connect_result_keeps_the_error() -> None:
    result = ConnectResult.from_probe(
        {"connected": False, "error": "received AUTHENTICATION_FAILED notify error"}
    )
    assert not result.connected
    assert result.virtual_ip is None
    assert result.error == "received AUTHENTICATION_FAILED notify error"


def test_traffic_result_collects_errors() -> None:
    result = TrafficResult.from_probe(
        {
            "target": "198.51.100.3",
            "ping": {"sent": 3, "received": 0, "rtt_ms": [], "error": "no route"},
            "tcp_source": None,
            "tcp_error": "timed out",
        }
    )
    assert result.icmp_received == 0
    assert result.tcp_source is None
    assert result.error == "no route; timed out"


def test_proposal_lists_are_normalised() -> None:
    assert proposal_list("aes256-sha256-modp2048, aes128-sha1-modp1024") == (
        "aes256-sha256-modp2048,aes128-sha1-modp1024"
    )
    assert proposal_list(None) is None


@pytest.mark.parametrize("text", ["", "aes256\n}", "aes256 sha1", "a,,b"])
def test_malformed_proposals_cannot_reach_the_configuration(text: str) -> None:
    with pytest.raises(HelperError, match="proposal list"):
        proposal_list(text)


def test_swanctl_conf_proposes_only_the_given_networks() -> None:
    """A replayed device with routes (a split-tunnel profile) proposes just those."""
    profile = ClientProfile(
        "192.0.2.10", "vpn.example.test", "alice", remote_ts=("10.20.0.0/16", "2001:db8::/32")
    )
    assert "remote_ts = 10.20.0.0/16, 2001:db8::/32\n" in render_swanctl_conf(profile)
    assert traffic_selectors([" 10.20.0.0/16", "2001:db8::/32"]) == profile.remote_ts


@pytest.mark.parametrize("bad", ["10.20.0.1/16", "0.0.0.0/0\n  children {", "office"])
def test_networks_that_are_not_cidr_are_refused(bad: str) -> None:
    with pytest.raises(HelperError, match="not a network in CIDR notation"):
        traffic_selectors([bad])
