"""The Windows PowerShell script and manual, read back the way PowerShell and a user would."""

from __future__ import annotations

import base64
import ipaddress
import re

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from profilefactory import HOST, PASSWORD, USER, accepted, ca, make_profile
from pydantic import SecretStr

from ikev2_vpn import render
from ikev2_vpn.profiles import ProfileInput, ca_fingerprint, windows
from ikev2_vpn.settings import ProposalSet
from ikev2_vpn.state.users import nt_hash
from ikev2_vpn_lab import readback
from ikev2_vpn_lab.profile_replay import parse_powershell

# Windows' constants in strongSwan's words, written from Microsoft's documentation of
# Set-VpnConnectionIPsecConfiguration (independent of profiles/proposals.py).
IKE_CIPHER = {"AES128": "aes128", "AES256": "aes256", "GCMAES128": "aes128gcm16",
              "GCMAES256": "aes256gcm16", "DES3": "3des"}  # fmt: skip
IKE_INTEGRITY = {"SHA1": "sha1", "SHA256": "sha256", "SHA384": "sha384", "MD5": "md5"}
DH_GROUP = {"Group2": "modp1024", "Group14": "modp2048", "ECP256": "ecp256", "ECP384": "ecp384",
            "Group24": "modp2048s256"}  # fmt: skip
PFS_GROUP = {"PFS2": "modp1024", "PFS2048": "modp2048", "ECP256": "ecp256", "ECP384": "ecp384",
             "PFS24": "modp2048s256", "None": None}  # fmt: skip
ESP_CIPHER = {"AES128": "aes128", "AES256": "aes256", "GCMAES128": "aes128gcm16",
              "GCMAES256": "aes256gcm16", "DES3": "3des"}  # fmt: skip
ESP_AUTH = {"SHA196": "sha1", "SHA256128": "sha256", "MD596": "md5"}

_LITERAL = re.compile(r"'(?:[^'\u2018\u2019\u201a\u201b]|['\u2018\u2019\u201a\u201b]{2})*'")


def script(profile: ProfileInput) -> str:
    data = windows.windows_script(profile)
    assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 BOM: Windows PowerShell 5.1 reads it as UTF-8"
    return data.decode("utf-8-sig").replace("\r\n", "\n")


def manual(profile: ProfileInput) -> str:
    return windows.windows_manual(profile).decode("utf-8-sig").replace("\r\n", "\n")


def code_lines(text: str) -> list[str]:
    """The script's lines that PowerShell executes (comments left out)."""
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def command(text: str, cmdlet: str) -> str:
    found = [line.strip() for line in code_lines(text) if line.strip().startswith(cmdlet + " ")]
    assert len(found) == 1, f"{len(found)} {cmdlet} lines"
    return found[0]


def ps_unquote(literal: str) -> str:
    assert literal[0] == "'" and literal[-1] == "'"
    return re.sub(r"(['\u2018\u2019\u201a\u201b])\1", r"\1", literal[1:-1])


def strongswan_suites(arguments: dict[str, str]) -> tuple[str, str, str]:
    """IKE proposal, ESP proposal at rekeying (with PFS) and ESP in IKE_AUTH (without)."""
    cipher = IKE_CIPHER[arguments["EncryptionMethod"]]
    integrity = IKE_INTEGRITY[arguments["IntegrityCheckMethod"]]
    middle = f"prf{integrity}" if "gcm" in cipher else integrity
    ike = f"{cipher}-{middle}-{DH_GROUP[arguments['DHGroup']]}"
    esp_cipher = ESP_CIPHER[arguments["CipherTransformConstants"]]
    auth = arguments["AuthenticationTransformConstants"]
    if "gcm" in esp_cipher:
        assert auth == arguments["CipherTransformConstants"], "GCM: the same constant twice"
        esp = esp_cipher
    else:
        esp = f"{esp_cipher}-{ESP_AUTH[auth]}"
    pfs = PFS_GROUP[arguments["PfsGroup"]]
    return ike, f"{esp}-{pfs}" if pfs else esp, esp


# The "Accepted values" of each parameter on Microsoft's reference page for
# Set-VpnConnectionIPsecConfiguration, copied here by hand: a value the cmdlet rejects makes the
# script stop on the user's computer.
DOCUMENTED = {
    "AuthenticationTransformConstants": {
        "MD596", "SHA196", "SHA256128", "GCMAES128", "GCMAES192", "GCMAES256", "None",
    },
    "CipherTransformConstants": {
        "DES", "DES3", "AES128", "AES192", "AES256", "GCMAES128", "GCMAES192", "GCMAES256", "None",
    },
    "EncryptionMethod": {"DES", "DES3", "AES128", "AES192", "AES256", "GCMAES128", "GCMAES256"},
    "IntegrityCheckMethod": {"MD5", "SHA1", "SHA256", "SHA384"},
    "DHGroup": {"None", "Group1", "Group2", "Group14", "ECP256", "ECP384", "Group24"},
    "PfsGroup": {"None", "PFS1", "PFS2", "PFS2048", "ECP256", "ECP384", "PFSMM", "PFS24"},
}  # fmt: skip


# --- proposals ---------------------------------------------------------------------------------


def test_values_checked_against_are_the_cmdlets_documented_ones() -> None:
    """ALLOWED once took SHA196 for IntegrityCheckMethod, which the cmdlet refuses."""
    assert {name: set(values) for name, values in windows.ALLOWED.items()} == DOCUMENTED
    assert set(IKE_INTEGRITY) == DOCUMENTED["IntegrityCheckMethod"]


@pytest.mark.parametrize("esp_gcm", [True, False])
def test_ipsec_line_uses_only_values_windows_accepts(esp_gcm: bool) -> None:
    arguments = readback.parse_ipsec_configuration(script(make_profile(esp_gcm=esp_gcm)))
    assert set(arguments) == set(windows.ALLOWED)
    for name, value in arguments.items():
        assert value in windows.ALLOWED[name], name


@pytest.mark.parametrize("choice", list(ProposalSet))
@pytest.mark.parametrize("esp_gcm", [True, False])
def test_what_windows_then_offers_is_accepted_by_the_server(
    esp_gcm: bool, choice: ProposalSet
) -> None:
    arguments = readback.parse_ipsec_configuration(script(make_profile(esp_gcm=esp_gcm)))
    ike, esp_rekey, esp_first = strongswan_suites(arguments)
    server = render.proposals(choice, esp_gcm)
    assert accepted(ike, server.ike, ike=True), ike
    assert accepted(esp_rekey, server.esp, ike=False), esp_rekey
    assert accepted(esp_first, server.esp, ike=False), esp_first


@pytest.mark.parametrize("choice", list(ProposalSet))
@pytest.mark.parametrize("esp_gcm", [True, False])
def test_the_scripts_pfs_group_is_one_the_server_rekeys_esp_with(
    esp_gcm: bool, choice: ProposalSet
) -> None:
    """The script turns PFS on (-PfsGroup), so Windows rekeys its CHILD_SA with that group;
    the server's strong ESP proposals carry it, and also "none" for connections made by hand
    in Settings, which rekey without PFS."""
    line = command(script(make_profile(esp_gcm=esp_gcm)), "Set-VpnConnectionIPsecConfiguration")
    found = re.search(r" -PfsGroup (\w+)", line)
    assert found is not None
    group = PFS_GROUP[found[1]]
    assert group is not None, "the script sets a PFS group"
    strong = [p for p in render.proposals(choice, esp_gcm).esp if "none" in p.split("-")]
    assert strong, "the strong ESP proposals make PFS optional"
    for proposal in strong:
        assert group in proposal.split("-"), proposal


def test_esp_uses_gcm_only_when_the_server_backend_carries_it() -> None:
    with_gcm = readback.parse_ipsec_configuration(script(make_profile(esp_gcm=True)))
    without = readback.parse_ipsec_configuration(script(make_profile(esp_gcm=False)))
    assert with_gcm["CipherTransformConstants"] == "GCMAES256"
    assert "GCM" not in without["CipherTransformConstants"]
    assert "GCM" not in without["AuthenticationTransformConstants"]


def test_manual_gives_the_same_ipsec_line_for_a_connection_made_by_hand() -> None:
    profile = make_profile()
    line = command(manual(profile), "Set-VpnConnectionIPsecConfiguration")
    assert readback.parse_ipsec_configuration(line) == readback.parse_ipsec_configuration(
        script(profile)
    )
    assert f"-ConnectionName '{profile.display_name}'" in line


def test_manual_gives_the_ca_fingerprint_in_both_forms_windows_shows() -> None:
    text = manual(make_profile())
    assert ca().fingerprint(hashes.SHA1()).hex().upper() in text  # noqa: S303 - Thumbprint
    assert ca_fingerprint(ca()) in text  # certutil -dump: Cert Hash(sha256)
    assert "SHA-256" not in manual(make_profile(self_signed=False))


# --- what the script does ----------------------------------------------------------------------


def test_creates_an_ikev2_eap_connection_to_the_host() -> None:
    text = script(make_profile())
    add = command(text, "Add-VpnConnection")
    expected = [
        "-TunnelType Ikev2",
        "-AuthenticationMethod Eap",
        "-EncryptionLevel Required",
        "-RememberCredential",
        "-SplitTunneling:$SplitTunnel",
        f"-ServerAddress '{HOST}'",
    ]
    for part in expected:
        assert part in add
    assert command(text, "Set-VpnConnectionIPsecConfiguration").endswith("-Force @Scope")


def parameters(text: str) -> str:
    param = re.search(r"param\((.*?)\n\)", text, re.DOTALL)
    assert param is not None
    return param[1]


def test_parameters_and_order_of_steps() -> None:
    text = script(make_profile())
    assert "[switch]$SplitTunnel" in parameters(text)
    assert "[switch]$AllUsers" in parameters(script(make_profile(self_signed=False)))
    assert f"[string]$Name = 'IKEv2 VPN {HOST}'" in parameters(text)
    steps = [
        text.index("IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)"),
        text.index("Import-Certificate"),
        text.index("Remove-VpnConnection -Name $Name"),
        text.index("Add-VpnConnection "),
        text.index("Set-VpnConnectionIPsecConfiguration "),
    ]
    assert steps == sorted(steps)
    assert "Add-VpnConnectionRoute -ConnectionName $Name -DestinationPrefix '10.10.10.0/24'" in text
    assert "$Scope.AllUserConnection = $true" in text


def test_self_signed_ca_is_embedded_and_needs_an_administrator() -> None:
    text = script(make_profile())
    literal = re.search(r"^\$CaCertificate = '([A-Za-z0-9+/=]+)'$", text, re.MULTILINE)
    assert literal is not None
    assert base64.b64decode(literal[1]) == ca().public_bytes(Encoding.DER)
    assert "-CertStoreLocation 'Cert:\\LocalMachine\\Root'" in text
    admin_check = text.index("if (-not $IsAdmin) {")
    assert admin_check < text.index("Import-Certificate")
    assert "administrator PowerShell" in text[admin_check : text.index("Import-Certificate")]
    thumbprint = ca().fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Windows' thumbprint
    assert thumbprint in text
    assert thumbprint in manual(make_profile())


def test_when_it_elevates_it_makes_the_connection_for_every_user() -> None:
    """Self-signed mode needs an administrator (for the CA): a standard user then runs it as
    another account, whose own connection list the user would never see."""
    text = script(make_profile())
    assert "[switch]$AllUsers" not in parameters(text)  # no choice left that would hide it
    lines = code_lines(text)
    assert "$Scope.AllUserConnection = $true" in [line.strip() for line in lines]
    assert text.index("$Scope.AllUserConnection = $true") < text.index("Add-VpnConnection ")
    for cmdlet in ("Add-VpnConnection", "Set-VpnConnectionIPsecConfiguration"):
        assert command(text, cmdlet).endswith("@Scope")
    assert "makes the connection for every user of this computer" in " ".join(text.split())
    assert "every user of this computer" in command(text, "$For = if")
    assert "every user of this computer" in " ".join(manual(make_profile()).split())


def test_without_elevation_the_connection_stays_the_users_own() -> None:
    text = script(make_profile(self_signed=False))
    assert "[switch]$AllUsers" in parameters(text)
    scope_lines = [line.strip() for line in code_lines(text) if "AllUserConnection" in line]
    assert scope_lines[0] == "if ($AllUsers) { $Scope.AllUserConnection = $true }"
    assert "makes the connection for the Windows user running it" in text
    assert "for every user" not in manual(make_profile(self_signed=False))


def test_public_certificate_imports_nothing() -> None:
    profile = make_profile(self_signed=False)
    text = script(profile)
    assert "Import-Certificate" not in text
    assert "$CaCertificate" not in text
    assert "if ($AllUsers -and -not $IsAdmin)" in text  # admin only for every user's connection
    assert "Import-Certificate" not in manual(profile)
    assert "ca.crt" not in manual(profile)


# --- no secrets, and quoting -------------------------------------------------------------------


@pytest.mark.parametrize("self_signed", [True, False])
def test_never_contains_the_password(self_signed: bool) -> None:
    profile = make_profile(self_signed=self_signed)
    secret_hash = nt_hash(SecretStr(PASSWORD)).hex()
    for text in (script(profile), manual(profile)):
        assert PASSWORD not in text
        assert secret_hash not in text.lower()
    assert "no supported command to store" in script(profile)


NAMES = [
    ("vpn.example.com", "first.last+vpn@example.com", ""),
    ("192.0.2.10", "a_b-c", "Bob's VPN"),
    ("2001:db8::10", "x", 'it\u2019s \u2018typographic\u2019 $(calc) `backtick` "quoted"'),
    ("vpn.example.com", USER, "Büro-VPN ünïcødé"),
]


@pytest.mark.parametrize(("host", "user", "name"), NAMES)
def test_every_interpolated_value_stays_inside_its_literal(host: str, user: str, name: str) -> None:
    profile = make_profile(host=host, user=user, connection_name=name)
    text = script(profile)
    for line in code_lines(text):
        outside = _LITERAL.sub("", line)
        assert not re.search(r"['\u2018\u2019\u201a\u201b]", outside), line
    literals = [ps_unquote(lit) for line in code_lines(text) for lit in _LITERAL.findall(line)]
    assert profile.display_name in literals
    assert host in literals and user in literals
    assert ps_unquote(re.findall(r"-ServerAddress ('[^']*')", text)[0]) == host


def test_ps_quote() -> None:
    assert windows.ps_quote("plain") == "'plain'"
    assert windows.ps_quote("o'brien") == "'o''brien'"
    assert windows.ps_quote("\u2019x\u2018") == "'\u2019\u2019x\u2018\u2018'"
    assert windows.ps_quote('$(whoami) `n "x"') == "'$(whoami) `n \"x\"'"
    for bad in ("a\nb", "a\rb", "a\x00b", "a\x85b"):
        with pytest.raises(ValueError, match="control character"):
            windows.ps_quote(bad)


def test_encoding_is_utf8_with_bom_and_crlf_line_ends() -> None:
    data = windows.windows_script(make_profile(connection_name="Büro"))
    body = data.removeprefix(b"\xef\xbb\xbf")
    assert b"\n" not in body.replace(b"\r\n", b"")
    assert "Büro".encode() in body
    assert windows.windows_manual(make_profile()).count(b"\r\n") > 10


def test_same_input_same_bytes() -> None:
    assert windows.windows_script(make_profile()) == windows.windows_script(make_profile())
    assert windows.windows_manual(make_profile()) == windows.windows_manual(make_profile())


# --- a split tunnel set by the server (VPN_SPLIT_NETS) -------------------------------------

SPLIT = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("192.0.2.53/32"))


def test_a_split_tunnel_routes_only_the_servers_networks() -> None:
    """Windows does not route by the server's traffic selector: the script switches split
    tunnelling on and adds a route per network, and has no -SplitTunnel option."""
    text = script(make_profile(split=SPLIT))
    add = command(text, "Add-VpnConnection")
    assert add.endswith("-RememberCredential -SplitTunneling @Scope")
    routes = [line for line in code_lines(text) if line.startswith("Add-VpnConnectionRoute ")]
    assert routes == [
        "Add-VpnConnectionRoute -ConnectionName $Name -DestinationPrefix '10.20.0.0/16' @Scope",
        "Add-VpnConnectionRoute -ConnectionName $Name -DestinationPrefix '192.0.2.53/32' @Scope",
    ]
    assert "SplitTunnel" not in parameters(text)
    assert "#   10.20.0.0/16" in text  # the header says what goes through
    replayed = parse_powershell(windows.windows_script(make_profile(split=SPLIT)))
    assert replayed.remote_ts == ("10.20.0.0/16", "192.0.2.53/32")


@pytest.mark.parametrize("self_signed", [True, False])
def test_a_split_scripts_parameters_still_parse(self_signed: bool) -> None:
    block = parameters(script(make_profile(split=SPLIT, self_signed=self_signed)))
    lines = [line.strip() for line in block.strip().splitlines()]
    expected = [f"[string]$Name = 'IKEv2 VPN {HOST}'"]
    if not self_signed:
        expected = [expected[0] + ",", "[switch]$AllUsers"]
    assert lines == expected


def test_a_full_tunnel_script_replays_as_a_full_tunnel() -> None:
    assert parse_powershell(windows.windows_script(make_profile())).remote_ts == ()


def test_the_manual_gives_the_split_commands() -> None:
    text = manual(make_profile(split=SPLIT))
    name = f"'IKEv2 VPN {HOST}'"
    assert f"Set-VpnConnection -Name {name} -SplitTunneling $true" in text
    assert (
        f"Add-VpnConnectionRoute -ConnectionName {name} -DestinationPrefix '10.20.0.0/16'" in text
    )
    assert "SplitTunneling" not in manual(make_profile())
