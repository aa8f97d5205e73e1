"""The .sswan profile as the strongSwan app imports it, and the built-in client's fields."""

from __future__ import annotations

import base64
import ipaddress
import json
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from profilefactory import HOST, PASSWORD, USER, accepted, ca, make_profile

from ikev2_vpn import render
from ikev2_vpn.profiles import ProfileInput, android
from ikev2_vpn.settings import ProposalSet
from ikev2_vpn_lab.profile_replay import parse_sswan


def parse(profile: ProfileInput) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(android.sswan(profile).decode("utf-8"))
    return document


def test_has_what_the_app_requires() -> None:
    document = parse(make_profile())
    assert uuid.UUID(document["uuid"])
    assert document["name"] == f"IKEv2 VPN {HOST}"
    assert document["type"] == "ikev2-eap"
    assert document["remote"]["addr"] == HOST


def test_expects_the_host_as_server_identity_and_sends_the_user_name() -> None:
    document = parse(make_profile())
    assert document["remote"]["id"] == HOST
    assert document["local"]["eap_id"] == USER


def test_never_contains_the_password() -> None:
    """The format has no password field: the app asks for it."""
    content = android.sswan(make_profile())
    assert PASSWORD.encode() not in content
    assert "password" not in json.dumps(json.loads(content)).lower()


def test_self_signed_mode_pins_the_ca() -> None:
    cert = parse(make_profile(self_signed=True))["remote"]["cert"]
    assert base64.b64decode(cert, validate=True) == ca().public_bytes(Encoding.DER)


def test_with_a_public_ca_the_system_store_is_used() -> None:
    assert "cert" not in parse(make_profile(self_signed=False))["remote"]


@pytest.mark.parametrize("esp_gcm", [True, False])
@pytest.mark.parametrize("proposal_set", list(ProposalSet))
def test_proposals_are_ones_the_server_accepts(esp_gcm: bool, proposal_set: ProposalSet) -> None:
    document = parse(make_profile(esp_gcm=esp_gcm))
    server = render.proposals(proposal_set, esp_gcm)
    assert accepted(document["ike-proposal"], server.ike, ike=True)
    assert accepted(document["esp-proposal"], server.esp, ike=False)


@pytest.mark.parametrize(
    ("esp_gcm", "esp"), [(True, "aes256gcm16-ecp384"), (False, "aes256-sha256-ecp384")]
)
def test_strong_proposals_in_strongswan_syntax(esp_gcm: bool, esp: str) -> None:
    document = parse(make_profile(esp_gcm=esp_gcm))
    assert document["ike-proposal"] == "aes256gcm16-prfsha384-ecp384"
    assert document["esp-proposal"] == esp


@pytest.mark.parametrize("ipv6", [False, True])
def test_ipv6_goes_through_the_tunnel_or_nowhere(ipv6: bool) -> None:
    """With "block-ipv6" the app sends all IPv6 into the tunnel when the server gave the phone
    an IPv6 address (VPN_POOL_V6), and blocks it when not: it never goes around the tunnel.
    Nothing narrows the tunnel to IPv4 (no subnets of the app's own)."""
    assert parse(make_profile(ipv6=ipv6))["split-tunneling"] == {"block-ipv6": True}


def test_same_host_and_user_give_the_same_uuid() -> None:
    """The app replaces a profile with the same UUID instead of adding one."""
    first = parse(make_profile())["uuid"]
    assert parse(make_profile(password=None, esp_gcm=False))["uuid"] == first
    assert parse(make_profile(user="bob"))["uuid"] != first
    assert parse(make_profile(host="vpn2.example.com"))["uuid"] != first


def test_is_utf8_json_with_unicode_names() -> None:
    content = android.sswan(make_profile(connection_name="Büro VPN"))
    assert "Büro VPN".encode() in content
    assert parse(make_profile(connection_name="Büro VPN"))["name"] == "Büro VPN"


def test_builtin_instructions_self_signed() -> None:
    text = android.builtin_instructions(make_profile(self_signed=True))
    assert "IKEv2/IPSec MSCHAPv2" in text
    assert f"Server address:            {HOST}" in text
    assert f"IPSec identifier:          {USER}" in text
    assert "the certificate installed in step 1" in text
    assert ca().fingerprint(hashes.SHA256()).hex(":").upper() in text
    assert "Use system certificates" not in text
    assert PASSWORD not in text


def test_builtin_instructions_with_a_public_ca() -> None:
    """Stock Android's CA spinner has no "Use system certificates": its first entry,
    "(don't verify server)", is what makes an IKEv2 profile check the system trust store."""
    text = android.builtin_instructions(make_profile(self_signed=False))
    assert """IPSec CA certificate:      leave it at "(don't verify server)"\n""" in text
    assert 'Stock Android has no "Use system certificates" entry' in text
    assert '"(received from server)"' in text
    assert "ca.crt" not in text


@pytest.mark.parametrize("self_signed", [True, False])
def test_builtin_instructions_name_only_entries_the_dialog_has(self_signed: bool) -> None:
    """Every value offered for the two certificate spinners is one AOSP's dialog shows."""
    text = android.builtin_instructions(make_profile(self_signed=self_signed))
    ca_line = next(line for line in text.splitlines() if "IPSec CA certificate:" in line)
    server_line = next(line for line in text.splitlines() if "IPSec server certificate:" in line)
    expected_ca = "the certificate installed in step 1" if self_signed else "(don't verify server)"
    assert expected_ca in ca_line
    assert server_line.endswith('"(received from server)"')


SPLIT = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("192.0.2.53/32"))


@pytest.mark.parametrize("ipv6", [False, True])
def test_a_split_tunnel_routes_only_the_servers_networks(ipv6: bool) -> None:
    """VPN_SPLIT_NETS: the app routes only ``subnets`` into the tunnel; without
    "block-ipv6", IPv6 outside them leaves the phone directly like the rest."""
    split = parse(make_profile(split=SPLIT, ipv6=ipv6))["split-tunneling"]
    assert split == {"subnets": ["10.20.0.0/16", "192.0.2.53/32"]}
    # What the app's importer reads back (VpnProfileImportActivity.getSubnets).
    assert parse_sswan(android.sswan(make_profile(split=SPLIT))).remote_ts == (
        "10.20.0.0/16",
        "192.0.2.53/32",
    )
