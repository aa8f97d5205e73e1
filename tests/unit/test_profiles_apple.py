"""The .mobileconfig as an iPhone or Mac reads it: parsed back with plistlib."""

from __future__ import annotations

import ipaddress
import plistlib
import subprocess
import uuid
from pathlib import Path
from typing import Any

import certfactory
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from profilefactory import CA_NAME, HOST, PASSWORD, USER, accepted, ca, make_profile

from ikev2_vpn import render
from ikev2_vpn.profiles import ProfileInput, Signer, apple, ca_fingerprint
from ikev2_vpn.settings import ProposalSet
from ikev2_vpn_lab import readback


def parse(profile: ProfileInput) -> dict[str, Any]:
    document: dict[str, Any] = plistlib.loads(apple.mobileconfig(profile))
    return document


def payload(document: dict[str, Any], payload_type: str) -> dict[str, Any]:
    found = [p for p in document["PayloadContent"] if p["PayloadType"] == payload_type]
    assert len(found) == 1, f"{len(found)} payloads of type {payload_type}"
    result: dict[str, Any] = found[0]
    return result


def ikev2(profile: ProfileInput) -> dict[str, Any]:
    vpn = payload(parse(profile), "com.apple.vpn.managed")
    assert vpn["VPNType"] == "IKEv2"
    settings: dict[str, Any] = vpn["IKEv2"]
    return settings


def all_uuids(document: dict[str, Any]) -> list[str]:
    return [document["PayloadUUID"]] + [p["PayloadUUID"] for p in document["PayloadContent"]]


def test_is_a_configuration_profile_with_one_vpn() -> None:
    document = parse(make_profile())
    assert document["PayloadType"] == "Configuration"
    assert document["PayloadVersion"] == 1
    vpn = payload(document, "com.apple.vpn.managed")
    assert vpn["UserDefinedName"] == f"IKEv2 VPN {HOST}"


def test_dials_the_host_and_expects_it_as_the_server_identity() -> None:
    settings = ikev2(make_profile())
    assert settings["RemoteAddress"] == HOST
    assert settings["RemoteIdentifier"] == HOST  # mismatch: Apple fails silently


def test_logs_in_with_eap_name_and_password() -> None:
    settings = ikev2(make_profile())
    assert settings["AuthenticationMethod"] == "None"
    assert settings["ExtendedAuthEnabled"] == 1
    assert settings["AuthName"] == USER
    assert settings["LocalIdentifier"] == USER
    assert settings["AuthPassword"] == PASSWORD  # XML metacharacters and Unicode survive


def test_without_password_the_device_asks() -> None:
    profile = make_profile(password=None)
    assert "AuthPassword" not in ikev2(profile)
    assert PASSWORD.encode() not in apple.mobileconfig(profile)


def test_self_signed_mode_carries_the_ca_as_a_root_payload() -> None:
    document = parse(make_profile(self_signed=True))
    root = payload(document, "com.apple.security.root")
    assert root["PayloadContent"] == ca().public_bytes(Encoding.DER)
    settings = payload(document, "com.apple.vpn.managed")["IKEv2"]
    assert settings["ServerCertificateIssuerCommonName"] == CA_NAME


def test_with_a_public_ca_nothing_is_imported_and_no_issuer_pinned() -> None:
    document = parse(make_profile(self_signed=False))
    assert [p["PayloadType"] for p in document["PayloadContent"]] == ["com.apple.vpn.managed"]
    assert "ServerCertificateIssuerCommonName" not in document["PayloadContent"][0]["IKEv2"]


@pytest.mark.parametrize("esp_gcm", [True, False])
@pytest.mark.parametrize("proposal_set", list(ProposalSet))
def test_proposals_are_ones_the_server_accepts(esp_gcm: bool, proposal_set: ProposalSet) -> None:
    settings = ikev2(make_profile(esp_gcm=esp_gcm))
    suites = readback.suites_from_apple(
        settings["IKESecurityAssociationParameters"],
        settings["ChildSecurityAssociationParameters"],
    )
    server = render.proposals(proposal_set, esp_gcm)
    assert accepted(suites.ike.strongswan(), server.ike, ike=True)
    assert accepted(suites.esp.strongswan(), server.esp, ike=False)


def test_strong_values_in_apples_vocabulary() -> None:
    settings = ikev2(make_profile(esp_gcm=True))
    assert settings["IKESecurityAssociationParameters"] == {
        "EncryptionAlgorithm": "AES-256-GCM",
        "IntegrityAlgorithm": "SHA2-384",  # the PRF, with an AEAD cipher
        "DiffieHellmanGroup": 20,
        "LifeTimeInMinutes": 1440,
    }
    assert settings["ChildSecurityAssociationParameters"] == {
        "EncryptionAlgorithm": "AES-256-GCM",
        "DiffieHellmanGroup": 20,
        "LifeTimeInMinutes": 1440,
    }


def test_without_esp_gcm_the_child_sa_uses_aes_cbc_with_sha2() -> None:
    child = ikev2(make_profile(esp_gcm=False))["ChildSecurityAssociationParameters"]
    assert child["EncryptionAlgorithm"] == "AES-256"
    assert child["IntegrityAlgorithm"] == "SHA2-256"


def test_ike_and_child_sa_rekey_alike() -> None:
    """Different groups or lifetimes make Apple devices reconnect every 24/48 minutes."""
    settings = ikev2(make_profile())
    ike = settings["IKESecurityAssociationParameters"]
    child = settings["ChildSecurityAssociationParameters"]
    assert ike["DiffieHellmanGroup"] == child["DiffieHellmanGroup"]
    assert ike["LifeTimeInMinutes"] == child["LifeTimeInMinutes"]
    assert 10 <= ike["LifeTimeInMinutes"] <= 1440
    assert settings["EnablePFS"] == 1


def test_connection_behaviour() -> None:
    settings = ikev2(make_profile())
    assert settings["DeadPeerDetectionRate"] == "Medium"
    assert settings["DisableMOBIKE"] == 0
    assert settings["DisableRedirect"] == 1
    assert "OnDemandEnabled" not in settings


@pytest.mark.parametrize("ipv6", [False, True])
def test_full_tunnel_comes_from_the_servers_traffic_selector_not_from_cisco_keys(
    ipv6: bool,
) -> None:
    """Apple documents IPv4.OverridePrimary for Cisco IPsec and L2TP only: an IKEv2 payload
    routes what the server's traffic selector covers, which is everything."""
    profile = make_profile(ipv6=ipv6)
    vpn = payload(parse(profile), "com.apple.vpn.managed")
    assert "IPv4" not in vpn
    assert b"OverridePrimary" not in apple.mobileconfig(profile)
    assert "IncludeAllNetworks" not in vpn["IKEv2"]  # would also capture the local network
    pool_v6 = ipaddress.IPv6Network("fd00:10:10::/112") if ipv6 else None
    selector = [ipaddress.ip_network(ts) for ts in render.full_tunnel(pool_v6)]
    assert ipaddress.IPv4Network("0.0.0.0/0") in selector
    assert (ipaddress.IPv6Network("::/0") in selector) == ipv6


def test_always_on_connects_on_demand_everywhere() -> None:
    settings = ikev2(make_profile(always_on=True))
    assert settings["OnDemandEnabled"] == 1
    assert settings["OnDemandRules"] == [{"Action": "Connect"}]


def test_regenerating_gives_the_same_identifiers() -> None:
    """Installing a regenerated profile replaces the old one instead of adding a second VPN."""
    first = parse(make_profile())
    again = parse(make_profile(password=None, esp_gcm=False, always_on=True))
    assert all_uuids(first) == all_uuids(again)
    assert first["PayloadIdentifier"] == again["PayloadIdentifier"]
    assert apple.mobileconfig(make_profile()) == apple.mobileconfig(make_profile())


def test_identifiers_are_uuids_unique_per_payload_user_and_host() -> None:
    alice = all_uuids(parse(make_profile()))
    bob = all_uuids(parse(make_profile(user="bob")))
    other_host = all_uuids(parse(make_profile(host="vpn2.example.com")))
    assert len(set(alice + bob + other_host)) == 9
    for value in alice:
        assert str(uuid.UUID(value)).upper() == value


@pytest.mark.parametrize(
    ("host", "user", "expected"),
    [
        ("vpn.example.com", "alice", "com.example.vpn.ikev2-vpn.alice"),
        ("203.0.113.5", "alice", "ip-203-0-113-5.ikev2-vpn.alice"),
        ("2001:db8::5", "bob-2", "ip-2001-db8--5.ikev2-vpn.bob-2"),
    ],
)
def test_payload_identifier_is_reverse_dns_of_the_host(host: str, user: str, expected: str) -> None:
    document = parse(make_profile(host=host, user=user))
    assert document["PayloadIdentifier"] == expected
    vpn = payload(document, "com.apple.vpn.managed")
    assert vpn["PayloadIdentifier"] == expected + ".vpn"


def test_user_names_that_need_escaping_keep_distinct_identifiers() -> None:
    names = ["a.b", "a-b", "a@b", "a+b"]
    identifiers = {apple.identifier(make_profile(user=name)) for name in names}
    assert len(identifiers) == len(names)
    for identifier in identifiers:
        assert identifier.startswith("com.example.vpn.ikev2-vpn.a-b")


def test_connection_name_is_what_the_device_shows() -> None:
    document = parse(make_profile(connection_name="Büro VPN"))
    assert document["PayloadDisplayName"] == "Büro VPN"
    assert payload(document, "com.apple.vpn.managed")["UserDefinedName"] == "Büro VPN"


# --- signed profiles ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain() -> certfactory.Chain:
    return certfactory.le_like_chain(key="p256")


def signed_profile(chain: certfactory.Chain, **changes: Any) -> bytes:
    signer = Signer(chain.leaf.cert, (chain.intermediate.cert,), chain.leaf.key)
    return apple.mobileconfig(make_profile(self_signed=False, signer=signer, **changes))


def openssl_verify(
    tmp_path: Path, data: bytes, root: x509.Certificate
) -> subprocess.CompletedProcess[bytes]:
    """`openssl cms -verify` against ``root`` only: the signed content, or the failure."""
    (tmp_path / "profile.der").write_bytes(data)
    (tmp_path / "root.pem").write_bytes(root.public_bytes(Encoding.PEM))
    return subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            tmp_path / "profile.der",
            "-CAfile",
            tmp_path / "root.pem",
            "-purpose",
            "any",
            "-binary",
            "-attime",
            str(int(certfactory.NOW.timestamp())),
        ],
        capture_output=True,
        check=False,
    )


def test_a_signed_profile_verifies_against_the_root_with_the_chain_inside(
    chain: certfactory.Chain, tmp_path: Path
) -> None:
    data = signed_profile(chain)
    verified = openssl_verify(tmp_path, data, chain.root.cert)  # intermediate: from the file
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == apple.plist(make_profile(self_signed=False))
    assert plistlib.loads(apple.signed_content(data))["PayloadType"] == "Configuration"


def test_a_changed_byte_breaks_the_signature(chain: certfactory.Chain, tmp_path: Path) -> None:
    data = signed_profile(chain)
    tampered = data.replace(HOST.encode(), b"evil.example.org"[: len(HOST)], 1)
    assert tampered != data
    verified = openssl_verify(tmp_path, tampered, chain.root.cert)
    assert verified.returncode != 0
    other_root = certfactory.make_ca("Someone Else's Root").cert
    assert openssl_verify(tmp_path, data, other_root).returncode != 0


def test_signatures_of_one_profile_are_the_same_profile(chain: certfactory.Chain) -> None:
    first, second = signed_profile(chain), signed_profile(chain)
    assert apple.same_profile(first, second)
    assert not apple.same_profile(first, signed_profile(chain, always_on=True))
    assert not apple.same_profile(first, apple.mobileconfig(make_profile(self_signed=False)))
    other = certfactory.le_like_chain(key="p256")
    assert not apple.same_profile(first, signed_profile(other))


def test_the_description_carries_the_ca_fingerprint() -> None:
    description = parse(make_profile())["PayloadDescription"]
    assert ca_fingerprint(ca()) in description


def test_a_split_tunnel_needs_no_key_apple_follows_the_servers_selector() -> None:
    """Apple routes what the narrowed selector covers (render.traffic_selectors): the profile
    of a split server is the same as a full one's, and nothing in it overrides the split."""
    split = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("192.0.2.53/32"))
    assert apple.plist(make_profile(split=split)) == apple.plist(make_profile())
    assert render.traffic_selectors(None, split) == ("10.20.0.0/16", "192.0.2.53/32")
    assert "IncludeAllNetworks" not in ikev2(make_profile(split=split))
