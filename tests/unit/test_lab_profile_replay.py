"""Reading profiles back: hand-written samples in each format, and the generators' output.

The samples follow the formats as docs/clients.md ("Profile formats") and each
platform's documentation describe them, so the parsers are checked against the formats,
not against this project's generators.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import json

import pytest
from pydantic import SecretStr

from ikev2_vpn import render
from ikev2_vpn.profiles import ProfileInput, android, apple, linux, windows
from ikev2_vpn.settings import ProposalSet
from ikev2_vpn_lab.profile_replay import (
    ProfileFormatError,
    ReplayedProfile,
    parse_mobileconfig,
    parse_nmconnection,
    parse_powershell,
    parse_profile,
    parse_settings,
    parse_sswan,
    parse_swanctl_conf,
    windows_proposals,
)

CA_DER = b"0\x82\x01\x0a fake DER of a CA certificate"
CA_B64 = base64.b64encode(CA_DER).decode()

MOBILECONFIG = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadVersion</key><integer>1</integer>
  <key>PayloadIdentifier</key><string>test.example.vpn</string>
  <key>PayloadUUID</key><string>9B1E1C52-0E4B-4D7B-9F5C-1B2C3D4E5F60</string>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>PayloadType</key><string>com.apple.security.root</string>
      <key>PayloadContent</key><data>{CA_B64}</data>
    </dict>
    <dict>
      <key>PayloadType</key><string>com.apple.vpn.managed</string>
      <key>VPNType</key><string>IKEv2</string>
      <key>IKEv2</key>
      <dict>
        <key>RemoteAddress</key><string>vpn.example.test</string>
        <key>RemoteIdentifier</key><string>vpn.example.test</string>
        <key>LocalIdentifier</key><string>alice</string>
        <key>AuthenticationMethod</key><string>None</string>
        <key>ExtendedAuthEnabled</key><integer>1</integer>
        <key>AuthName</key><string>alice</string>
        <key>IKESecurityAssociationParameters</key>
        <dict>
          <key>EncryptionAlgorithm</key><string>AES-256-GCM</string>
          <key>IntegrityAlgorithm</key><string>SHA2-384</string>
          <key>DiffieHellmanGroup</key><integer>20</integer>
          <key>LifeTimeInMinutes</key><integer>1440</integer>
        </dict>
        <key>ChildSecurityAssociationParameters</key>
        <dict>
          <key>EncryptionAlgorithm</key><string>AES-256</string>
          <key>IntegrityAlgorithm</key><string>SHA2-256</string>
          <key>DiffieHellmanGroup</key><integer>19</integer>
          <key>LifeTimeInMinutes</key><integer>1440</integer>
        </dict>
        <key>EnablePFS</key><integer>1</integer>
      </dict>
    </dict>
  </array>
</dict>
</plist>
""".encode()

SSWAN = json.dumps(
    {
        "uuid": "d6a4c5e0-1c5b-4a8e-9a57-0b1c2d3e4f50",
        "name": "Office",
        "type": "ikev2-eap",
        "remote": {"addr": "vpn.example.test", "id": "vpn.example.test", "cert": CA_B64},
        "local": {"eap_id": "alice"},
        "ike-proposal": "aes256gcm16-prfsha384-ecp384",
        "esp-proposal": "aes256gcm16-ecp384",
    }
).encode()

# Windows PowerShell 5.1 reads UTF-8 only with a BOM; scripts use CRLF.
POWERSHELL = (
    "\ufeff# made by hand\r\n"
    "param([string]$Name = 'Office VPN')\r\n"
    f"$CaCertificate = '{base64.b64encode(CA_DER * 8).decode()}'\r\n"
    "Add-VpnConnection -Name $Name -ServerAddress 'vpn.example.test' -TunnelType Ikev2 "
    "-AuthenticationMethod Eap -EncryptionLevel Required -RememberCredential\r\n"
    "Set-VpnConnectionIPsecConfiguration -ConnectionName $Name "
    "-AuthenticationTransformConstants GCMAES256 -CipherTransformConstants GCMAES256 "
    "-EncryptionMethod AES256 -IntegrityCheckMethod SHA256 -DHGroup ECP384 -PfsGroup ECP384 "
    "-Force\r\n"
).encode()

SWANCTL_CONF = """\
# Hand-written, as in strongSwan's swanctl.conf documentation.
connections {
    office {
        version = 2
        remote_addrs = vpn.example.test
        vips = 0.0.0.0
        proposals = aes256gcm16-prfsha384-ecp384, aes256-sha256-ecp384  # strong only
        local { auth = eap-mschapv2
                eap_id = "alice smith" }
        remote {
            auth = pubkey
            id = vpn.example.test
            cacerts = /etc/ikev2-vpn/ca.crt
        }
        children { office { remote_ts = 0.0.0.0/0
                            esp_proposals = aes256gcm16-ecp384,aes256-sha256-ecp384 } }
    }
}
secrets { eap-alice { id = "alice smith"
                      secret = "pass # not a comment" } }
include conf.d/*.conf
"""

NMCONNECTION = """\
[connection]
id=Office VPN
uuid=2f0c8a3e-5b7d-4c1e-8f9a-0b1c2d3e4f5a
type=vpn

[vpn]
service-type=org.freedesktop.NetworkManager.strongswan
address=vpn.example.test
remote-identity=vpn.example.test
certificate=/etc/ikev2-vpn/ca.crt
method=eap
user=alice\\ssmith
virtual=yes
proposal=yes
ike=aes256gcm16-prfsha384-ecp384;aes256-sha256-ecp384
esp=aes256gcm16-ecp384;aes256-sha256-ecp384

[ipv4]
method=auto
"""


def test_mobileconfig_gives_apples_parameters_as_strongswan_proposals() -> None:
    replayed = parse_mobileconfig(MOBILECONFIG)
    # AEAD in IKE: Apple uses the IntegrityAlgorithm as the PRF; group 20 is ECP-384.
    assert replayed.ike == ("aes256gcm16-prfsha384-ecp384",)
    # EnablePFS: the Child SA's group (19, ECP-256) is offered when rekeying.
    assert replayed.esp == ("aes256-sha256-ecp256",)
    assert (replayed.remote_address, replayed.remote_id, replayed.user) == (
        "vpn.example.test",
        "vpn.example.test",
        "alice",
    )
    assert replayed.ca_der == CA_DER


def test_mobileconfig_without_pfs_and_with_apples_defaults() -> None:
    text = MOBILECONFIG.decode()
    text = text.replace("<key>EnablePFS</key><integer>1</integer>", "")
    # A key left out means Apple's default: AES-256, SHA2-256, group 14.
    text = text.replace("<key>EncryptionAlgorithm</key><string>AES-256-GCM</string>", "")
    replayed = parse_mobileconfig(text.encode())
    assert replayed.ike == ("aes256-sha384-ecp384",)
    assert replayed.esp == ("aes256-sha256",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("<string>IKEv2</string>", "<string>L2TP</string>"), "VPNType IKEv2"),
        (("<string>SHA2-384</string>", "<string>SHA3-384</string>"), "IntegrityAlgorithm"),
        (("<integer>20</integer>", "<integer>99</integer>"), "DiffieHellmanGroup"),
        (("<key>IKESecurityAssociationParameters</key>", "<key>Other</key>"), "IKESecurity"),
    ],
)
def test_mobileconfig_a_device_would_not_use_is_refused(
    change: tuple[str, str], message: str
) -> None:
    with pytest.raises(ProfileFormatError, match=message):
        parse_mobileconfig(MOBILECONFIG.decode().replace(*change).encode())


def test_sswan_proposals_ids_and_ca() -> None:
    replayed = parse_sswan(SSWAN)
    assert replayed == ReplayedProfile(
        ike=("aes256gcm16-prfsha384-ecp384",),
        esp=("aes256gcm16-ecp384",),
        remote_address="vpn.example.test",
        remote_id="vpn.example.test",
        user="alice",
        ca_der=CA_DER,
    )


def test_sswan_without_proposals_uses_the_apps_defaults() -> None:
    document = json.loads(SSWAN)
    del document["ike-proposal"], document["esp-proposal"], document["remote"]["id"]
    replayed = parse_sswan(json.dumps(document).encode())
    assert (replayed.ike_proposals, replayed.esp_proposals) == (None, None)
    assert replayed.remote_id == "vpn.example.test"  # the app then expects the address


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "ikev2-cert"}, "ikev2-eap"),
        ({"uuid": ""}, "uuid"),
        ({"remote": {"id": "x"}}, "remote.addr"),
        ({"ike-proposal": "aes256-sha256-ecp384,aes128-sha1-modp1024"}, "several proposals"),
        ({"esp-proposal": "aes256 sha256"}, "not a strongSwan proposal"),
    ],
)
def test_sswan_the_app_would_reject_is_refused(change: dict[str, object], message: str) -> None:
    document = {**json.loads(SSWAN), **change}
    with pytest.raises(ProfileFormatError, match=message):
        parse_sswan(json.dumps(document).encode())


def test_powershell_arguments_become_one_proposal_each() -> None:
    replayed = parse_powershell(POWERSHELL)
    assert replayed.ike == ("aes256-sha256-ecp384",)
    assert replayed.esp == ("aes256gcm16-ecp384",)  # GCM: no separate integrity algorithm
    assert replayed.remote_address == replayed.remote_id == "vpn.example.test"
    assert replayed.user is None  # typed at the first connect
    assert replayed.ca_der == CA_DER * 8


@pytest.mark.parametrize(
    ("arguments", "ike", "esp"),
    [
        # The README's strong settings.
        (
            ("GCMAES256", "GCMAES256", "AES256", "SHA256", "ECP384", "ECP384"),
            "aes256-sha256-ecp384",
            "aes256gcm16-ecp384",
        ),
        # CBC for ESP, SHA-256 truncated to 128 bits; no PFS.
        (
            ("SHA256128", "AES256", "AES128", "SHA384", "Group14", "None"),
            "aes128-sha384-modp2048",
            "aes256-sha256",
        ),
        # GCM for IKE (Windows 11): the integrity method is only the PRF; PFSMM = DH group.
        (
            ("SHA196", "DES3", "GCMAES128", "SHA256", "ECP256", "PFSMM"),
            "aes128gcm16-prfsha256-ecp256",
            "3des-sha1-ecp256",
        ),
        (
            ("MD596", "DES", "DES", "MD5", "Group2", "PFS2048"),
            "des-md5-modp1024",
            "des-md5-modp2048",
        ),
        (
            ("GCMAES128", "GCMAES128", "AES192", "SHA1", "Group24", "PFS24"),
            "aes192-sha1-modp2048s256",
            "aes128gcm16-modp2048s256",
        ),
    ],
)
def test_windows_constants_map_to_strongswan(
    arguments: tuple[str, ...], ike: str, esp: str
) -> None:
    names = (
        "AuthenticationTransformConstants",
        "CipherTransformConstants",
        "EncryptionMethod",
        "IntegrityCheckMethod",
        "DHGroup",
        "PfsGroup",
    )
    assert windows_proposals(dict(zip(names, arguments, strict=True))) == (ike, esp)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("-DHGroup ECP384", "-DHGroup ECP521"), "DHGroup"),
        (("-AuthenticationTransformConstants GCMAES256", ""), "AuthenticationTransform"),
        (
            (
                "-AuthenticationTransformConstants GCMAES256",
                "-AuthenticationTransformConstants SHA196",
            ),
            "must equal the GCM cipher",
        ),
        (("-TunnelType Ikev2", "-TunnelType L2tp"), "Ikev2"),
        (
            ("Set-VpnConnectionIPsecConfiguration -C", "# Set-VpnConnectionIPsecConfiguration -C"),
            "found 0",
        ),
    ],
)
def test_powershell_windows_would_reject_is_refused(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ProfileFormatError, match=message):
        parse_powershell(POWERSHELL.decode("utf-8-sig").replace(*change))


def test_powershell_line_continuations_and_inline_values() -> None:
    script = (
        'Add-VpnConnection -Name x -ServerAddress "vpn.example.test" -TunnelType:Ikev2 `\n'
        "  -AuthenticationMethod Eap\n"
        "Set-VpnConnectionIPsecConfiguration -ConnectionName x -AuthenticationTransformConstants "
        "SHA256128 -CipherTransformConstants AES256 -EncryptionMethod AES256 `\n"
        "  -IntegrityCheckMethod SHA256 -DHGroup Group14 -PfsGroup None -Force\n"
    )
    replayed = parse_powershell(script)
    assert (replayed.ike, replayed.esp) == (("aes256-sha256-modp2048",), ("aes256-sha256",))
    assert replayed.remote_address == "vpn.example.test"
    assert replayed.ca_der is None


def test_swanctl_conf_proposals_and_identities() -> None:
    replayed = parse_swanctl_conf(SWANCTL_CONF)
    assert replayed.ike == ("aes256gcm16-prfsha384-ecp384", "aes256-sha256-ecp384")
    assert replayed.esp == ("aes256gcm16-ecp384", "aes256-sha256-ecp384")
    assert (replayed.remote_address, replayed.remote_id, replayed.user) == (
        "vpn.example.test",
        "vpn.example.test",
        "alice smith",
    )


def test_settings_syntax() -> None:
    parsed = parse_settings(SWANCTL_CONF)
    secrets = parsed["secrets"]
    assert isinstance(secrets, dict)
    assert secrets["eap-alice"] == {"id": "alice smith", "secret": "pass # not a comment"}
    assert parse_settings('a { b = "x \\" y" }\nc = d = e\n') == {
        "a": {"b": 'x " y'},
        "c": "d = e",
    }
    for broken in ("a {", "}", "a b = c", "a b {"):
        with pytest.raises(ProfileFormatError):
            parse_settings(broken)


def test_swanctl_conf_with_defaults_or_several_connections() -> None:
    plain = SWANCTL_CONF.replace(
        "proposals = aes256gcm16-prfsha384-ecp384, aes256-sha256-ecp384  # strong only",
        "proposals = default",
    ).replace("esp_proposals = aes256gcm16-ecp384,aes256-sha256-ecp384", "")
    assert parse_swanctl_conf(plain).ike_proposals is None
    assert parse_swanctl_conf(plain).esp_proposals is None
    doubled = SWANCTL_CONF.replace("connections {", "connections {\n    other { version = 2 }")
    with pytest.raises(ProfileFormatError, match="one connection"):
        parse_swanctl_conf(doubled)


def test_nmconnection_proposals_are_separated_by_semicolons() -> None:
    replayed = parse_nmconnection(NMCONNECTION)
    assert replayed.ike == ("aes256gcm16-prfsha384-ecp384", "aes256-sha256-ecp384")
    assert replayed.esp == ("aes256gcm16-ecp384", "aes256-sha256-ecp384")
    assert replayed.user == "alice smith"  # \s is a key file's escaped space
    assert replayed.remote_id == "vpn.example.test"


def test_nmconnection_uses_its_proposals_only_with_proposal_yes() -> None:
    replayed = parse_nmconnection(NMCONNECTION.replace("proposal=yes", "proposal=no"))
    assert (replayed.ike, replayed.esp) == ((), ())
    with pytest.raises(ProfileFormatError, match="several proposals"):
        parse_nmconnection(NMCONNECTION.replace(";aes256-sha256-ecp384\nesp", ",aes256\nesp"))
    with pytest.raises(ProfileFormatError, match="method"):
        parse_nmconnection(NMCONNECTION.replace("method=eap", "method=cert"))


def test_parse_profile_picks_the_parser_by_file_name() -> None:
    assert parse_profile("alice.swanctl.conf", SWANCTL_CONF.encode()).user == "alice smith"
    assert parse_profile("apple.mobileconfig", MOBILECONFIG).user == "alice"
    with pytest.raises(ProfileFormatError, match="not a profile format"):
        parse_profile("ca.crt", b"")


# --- the project's generators, read back ---------------------------------------------------


def _input(esp_gcm: bool) -> ProfileInput:
    return ProfileInput(
        host="vpn.example.test",
        user="alice",
        password=SecretStr("Alice-pw-1"),
        ca=None,
        esp_gcm=esp_gcm,
        dns=(ipaddress.ip_address("198.51.100.53"),),
        pool_v4=ipaddress.IPv4Network("10.10.10.0/24"),
    )


def _generated(esp_gcm: bool) -> dict[str, ReplayedProfile]:
    profile = _input(esp_gcm)
    return {
        "apple": parse_mobileconfig(apple.mobileconfig(profile)),
        "android": parse_sswan(android.sswan(profile)),
        "windows": parse_powershell(windows.windows_script(profile)),
        "swanctl": parse_swanctl_conf(linux.swanctl_conf(profile)),
        "nm": parse_nmconnection(linux.nmconnection(profile)),
    }


_KE_NONE = "-none"


def _algorithms(proposal: str) -> set[str]:
    return set(proposal.removesuffix(_KE_NONE).split("-"))


def _accepted_by_modern(proposal: str, server: tuple[str, ...]) -> bool:
    """Whether one proposal of a client can match one of the server's: every kind of
    algorithm the client names must be in the same server proposal (a coarse check; the
    end-to-end suite is the real one)."""
    return any(_algorithms(proposal) <= _algorithms(offer) for offer in server)


@pytest.mark.parametrize("esp_gcm", [True, False])
def test_generated_profiles_read_back_to_strong_proposals(esp_gcm: bool) -> None:
    modern = render.proposals(ProposalSet.MODERN, esp_gcm)
    for name, replayed in _generated(esp_gcm).items():
        assert replayed.ike and replayed.esp, name
        assert replayed.remote_address == "vpn.example.test", name
        assert replayed.remote_id == "vpn.example.test", name
        for proposal in replayed.ike:
            assert _accepted_by_modern(proposal, modern.ike), (name, proposal)
        for proposal in replayed.esp:
            assert _accepted_by_modern(proposal, modern.esp), (name, proposal)


# --- split tunnels: the networks a device routes into the tunnel ---------------------------


@pytest.mark.parametrize(
    "subnets", [["10.20.0.0/16", "192.0.2.53/32"], "10.20.0.0/16 192.0.2.53/32"]
)
def test_sswan_subnets_as_a_list_or_one_string(subnets: object) -> None:
    document = {**json.loads(SSWAN), "split-tunneling": {"subnets": subnets}}
    replayed = parse_sswan(json.dumps(document).encode())
    assert replayed.remote_ts == ("10.20.0.0/16", "192.0.2.53/32")
    blocked = {**json.loads(SSWAN), "split-tunneling": {"block-ipv6": True}}
    assert parse_sswan(json.dumps(blocked).encode()).remote_ts == ()
    assert parse_sswan(SSWAN).remote_ts == ()


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"subnets": ["office"]}, "not a network"),
        ({"subnets": 10}, "neither a list nor a string"),
        (["10.0.0.0/8"], "not an object"),
    ],
)
def test_sswan_subnets_the_app_would_reject_are_refused(split: object, message: str) -> None:
    document = {**json.loads(SSWAN), "split-tunneling": split}
    with pytest.raises(ProfileFormatError, match=message):
        parse_sswan(json.dumps(document).encode())


def _split_script(switch: str, routes: list[str]) -> bytes:
    text = POWERSHELL.decode("utf-8-sig").replace(
        "-RememberCredential\r\n", f"-RememberCredential {switch} @Scope\r\n"
    )
    for route in routes:
        text += (
            f"Add-VpnConnectionRoute -ConnectionName $Name -DestinationPrefix '{route}' @Scope\r\n"
        )
    return text.encode("utf-8-sig")


@pytest.mark.parametrize("switch", ["-SplitTunneling", "-SplitTunneling:$true"])
def test_powershell_with_split_tunnelling_routes_what_it_adds(switch: str) -> None:
    replayed = parse_powershell(_split_script(switch, ["10.20.0.0/16", "2001:db8:20::/48"]))
    assert replayed.remote_ts == ("10.20.0.0/16", "2001:db8:20::/48")
    assert replayed.remote_address == "vpn.example.test"  # @Scope is no argument's value


@pytest.mark.parametrize("switch", ["-SplitTunneling:$SplitTunnel", "-SplitTunneling:$false", ""])
def test_powershell_without_split_tunnelling_routes_everything(switch: str) -> None:
    """A switch bound to a variable is the script's default, off; routes then do not matter."""
    assert parse_powershell(_split_script(switch, ["10.10.10.0/24"])).remote_ts == ()


def test_powershell_split_without_routes_or_with_a_bad_one_is_refused() -> None:
    with pytest.raises(ProfileFormatError, match="nothing tunnelled"):
        parse_powershell(_split_script("-SplitTunneling", []))
    with pytest.raises(ProfileFormatError, match="not a network"):
        parse_powershell(_split_script("-SplitTunneling", ["10.20.0.0/33"]))


def test_swanctl_and_keyfile_remote_ts() -> None:
    narrowed = SWANCTL_CONF.replace(
        "remote_ts = 0.0.0.0/0", "remote_ts = 10.20.0.0/16, 2001:db8:20::/48"
    )
    assert parse_swanctl_conf(narrowed).remote_ts == ("10.20.0.0/16", "2001:db8:20::/48")
    assert parse_swanctl_conf(SWANCTL_CONF).remote_ts == ("0.0.0.0/0",)
    keyfile = NMCONNECTION.replace("[ipv4]", "remote-ts=10.20.0.0/16;2001:db8:20::/48\n\n[ipv4]")
    assert parse_nmconnection(keyfile).remote_ts == ("10.20.0.0/16", "2001:db8:20::/48")
    assert parse_nmconnection(NMCONNECTION).remote_ts == ()


def test_generated_profiles_read_back_to_the_servers_split() -> None:
    """Profiles with routes route exactly what the server tunnels; Apple's follows it."""
    split = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("198.51.100.53/32"))
    profile = dataclasses.replace(_input(esp_gcm=True), split=split)
    expected = ("10.20.0.0/16", "198.51.100.53/32")
    assert parse_mobileconfig(apple.mobileconfig(profile)).remote_ts == ()
    assert parse_sswan(android.sswan(profile)).remote_ts == expected
    assert parse_powershell(windows.windows_script(profile)).remote_ts == expected
    assert parse_swanctl_conf(linux.swanctl_conf(profile)).remote_ts == expected
    assert parse_nmconnection(linux.nmconnection(profile)).remote_ts == expected
    full = _generated(esp_gcm=True)
    assert full["android"].remote_ts == full["windows"].remote_ts == full["nm"].remote_ts == ()
    assert full["swanctl"].remote_ts == ("0.0.0.0/0",)
