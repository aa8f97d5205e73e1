"""The Linux profiles read back: swanctl.conf as strongSwan parses it, the NetworkManager
keyfile as GLib reads it."""

from __future__ import annotations

import configparser
import ipaddress
import re
import uuid
from typing import Any

import pytest
from profilefactory import HOST, PASSWORD, USER, accepted, make_profile
from pydantic import SecretStr

from ikev2_vpn import render
from ikev2_vpn.profiles import ProfileInput, linux, proposals
from ikev2_vpn.settings import ProposalSet
from ikev2_vpn.state.users import nt_hash
from ikev2_vpn_lab.profile_replay import parse_settings

CA_PATH = f"/etc/ikev2-vpn/{HOST}/ca.crt"


def swanctl(profile: ProfileInput) -> dict[str, Any]:
    return parse_settings(linux.swanctl_conf(profile).decode())


def connection(profile: ProfileInput) -> dict[str, Any]:
    conf = swanctl(profile)
    assert list(conf["connections"]) == [linux.connection_name(profile.host)]
    found: dict[str, Any] = conf["connections"][linux.connection_name(profile.host)]
    return found


_GLIB_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def keyfile(profile: ProfileInput) -> dict[str, dict[str, str]]:
    """The keyfile's groups with values unescaped as g_key_file_get_string() does."""
    parser = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(linux.nmconnection(profile).decode())
    return {
        group: {
            key: re.sub(r"\\(.)", lambda m: _GLIB_ESCAPES[m[1]], value)
            for key, value in parser.items(group)
        }
        for group in parser.sections()
    }


# --- swanctl.conf ------------------------------------------------------------------------------


def test_swanctl_dials_the_host_and_signs_in_with_eap() -> None:
    conn = connection(make_profile())
    assert conn["version"] == "2"
    assert conn["remote_addrs"] == HOST
    assert conn["vips"] == "0.0.0.0"  # noqa: S104 - asks the server for an address
    assert conn["local"] == {"auth": "eap-mschapv2", "eap_id": USER}
    assert conn["remote"] == {"auth": "pubkey", "id": HOST, "cacerts": CA_PATH}
    children = conn["children"]
    assert list(children) == [linux.connection_name(HOST)]
    assert children[linux.connection_name(HOST)]["remote_ts"] == "0.0.0.0/0"


def test_swanctl_with_a_public_certificate_names_no_ca_file() -> None:
    conn = connection(make_profile(self_signed=False))
    assert "cacerts" not in conn["remote"]
    assert "ISRG_Root_X1" in linux.swanctl_conf(make_profile(self_signed=False)).decode()


@pytest.mark.parametrize("choice", list(ProposalSet))
@pytest.mark.parametrize("esp_gcm", [True, False])
def test_swanctl_and_keyfile_proposals_are_accepted_by_the_server(
    esp_gcm: bool, choice: ProposalSet
) -> None:
    profile = make_profile(esp_gcm=esp_gcm)
    server = render.proposals(choice, esp_gcm)
    conn = connection(profile)
    esp = conn["children"][linux.connection_name(HOST)]["esp_proposals"]
    vpn = keyfile(profile)["vpn"]
    for ike_list, esp_list in ((conn["proposals"], esp), (vpn["ike"], vpn["esp"])):
        for proposal in re.split(r"[,;]\s*", ike_list):
            assert accepted(proposal, server.ike, ike=True), proposal
        for proposal in re.split(r"[,;]\s*", esp_list):
            assert accepted(proposal, server.esp, ike=False), proposal
            # The first CHILD_SA rides on IKE_AUTH without a key exchange.
            assert accepted(re.sub(r"-(ecp|modp|curve)\w+", "", proposal), server.esp, ike=False)


@pytest.mark.parametrize("esp_gcm", [True, False])
def test_proposals_come_from_the_one_mapping(esp_gcm: bool) -> None:
    suites = proposals.client_suites(esp_gcm)
    assert linux.client_proposals(esp_gcm) == (suites.ike.strongswan(), suites.esp.strongswan())


def test_swanctl_secret_is_the_nt_hash_of_the_password() -> None:
    conf = swanctl(make_profile())
    secret = conf["secrets"][f"ntlm-{linux.connection_name(HOST)}"]
    assert secret == {"id": USER, "secret": "0x" + nt_hash(SecretStr(PASSWORD)).hex()}
    assert PASSWORD not in linux.swanctl_conf(make_profile()).decode()


def test_swanctl_without_password_has_no_secret_but_says_where_it_goes() -> None:
    profile = make_profile(password=None)
    text = linux.swanctl_conf(profile).decode()
    assert "secrets" not in swanctl(profile)
    assert "#     eap-" in text and "YOUR-PASSWORD" in text
    assert nt_hash(SecretStr(PASSWORD)).hex() not in text


@pytest.mark.parametrize("host", ["192.0.2.10", "2001:db8::10", "vpn-1.example.com"])
def test_connection_names_are_plain_section_names(host: str) -> None:
    name = linux.connection_name(host)
    assert re.fullmatch(r"ikev2-[A-Za-z0-9-]+", name), name
    assert connection(make_profile(host=host))["remote_addrs"] == host


def test_swanctl_value_quotes_what_is_not_bare() -> None:
    assert linux.swanctl_value("first.last+vpn@example.com") == "first.last+vpn@example.com"
    assert linux.swanctl_value('a "b" \\c') == '"a \\"b\\" \\\\c"'
    for bad in ("", "a\nb", "a\x7fb"):
        with pytest.raises(ValueError, match="control character"):
            linux.swanctl_value(bad)


def test_install_steps_name_the_files() -> None:
    text = linux.swanctl_conf(make_profile()).decode()
    assert f"sudo install -D -m 0644 ca.crt {CA_PATH}" in text
    assert f"{USER}{linux.SWANCTL_SUFFIX} /etc/swanctl/conf.d/" in text
    assert f"swanctl --initiate --child {linux.connection_name(HOST)}" in text


# --- NetworkManager keyfile --------------------------------------------------------------------


def test_keyfile_is_a_strongswan_eap_connection() -> None:
    groups = keyfile(make_profile())
    assert groups["connection"]["type"] == "vpn"
    assert groups["connection"]["id"] == f"IKEv2 VPN {HOST}"
    assert uuid.UUID(groups["connection"]["uuid"]).version == 5
    vpn = groups["vpn"]
    assert vpn["service-type"] == "org.freedesktop.NetworkManager.strongswan"
    assert vpn["address"] == HOST
    assert vpn["remote-identity"] == HOST
    assert vpn["certificate"] == CA_PATH
    assert vpn["method"] == "eap"
    assert vpn["user"] == USER
    assert vpn["virtual"] == "yes"
    assert vpn["proposal"] == "yes"
    assert groups["ipv4"]["method"] == "auto"


def test_keyfile_stores_the_password_exactly() -> None:
    tricky = "  spaced \\ back\\slash\ttab ünï  "
    groups = keyfile(make_profile(password=SecretStr(tricky)))
    assert groups["vpn"]["password-flags"] == "0"
    assert groups["vpn-secrets"]["password"] == tricky


def test_keyfile_without_password_lets_the_desktop_ask() -> None:
    profile = make_profile(password=None, self_signed=False)
    groups = keyfile(profile)
    assert "vpn-secrets" not in groups
    assert groups["vpn"]["password-flags"] == "1"
    assert "certificate" not in groups["vpn"]  # NetworkManager then uses the system CAs
    assert PASSWORD not in linux.nmconnection(profile).decode()


def test_keyfile_uuid_is_stable_per_host_and_user() -> None:
    first = keyfile(make_profile())["connection"]["uuid"]
    assert keyfile(make_profile())["connection"]["uuid"] == first
    assert keyfile(make_profile(user="bob"))["connection"]["uuid"] != first
    assert keyfile(make_profile(host="vpn2.example.com"))["connection"]["uuid"] != first


def test_keyfile_value_escapes() -> None:
    assert linux.keyfile_value("plain text") == "plain text"
    assert linux.keyfile_value(" a\\b\n ") == "\\sa\\\\b\\n\\s"
    assert linux.keyfile_value("\t x") == "\\t x"


# --- a split tunnel set by the server (VPN_SPLIT_NETS) -------------------------------------

SPLIT = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("2001:db8:20::/48"))


@pytest.mark.parametrize("ipv6", [False, True])
def test_swanctl_asks_for_only_the_servers_networks(ipv6: bool) -> None:
    conn = connection(make_profile(split=SPLIT, ipv6=ipv6))
    child = conn["children"][linux.connection_name(HOST)]
    assert child["remote_ts"] == "10.20.0.0/16, 2001:db8:20::/48"
    assert "Split tunnel" in linux.swanctl_conf(make_profile(split=SPLIT)).decode()


def test_keyfile_names_the_servers_networks_as_remote_ts() -> None:
    """charon-nm proposes ``remote-ts`` (separated by ';') instead of 0.0.0.0/0 and ::/0."""
    assert keyfile(make_profile(split=SPLIT))["vpn"]["remote-ts"] == "10.20.0.0/16;2001:db8:20::/48"
    assert "remote-ts" not in keyfile(make_profile())["vpn"]
