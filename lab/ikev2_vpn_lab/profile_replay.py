"""Reading client profiles back: what a device would offer after importing one.

Each parser takes a profile file as the device gets it and returns the proposals (in
strongSwan's syntax), the server it dials and the identities it uses, so a strongSwan client
can replay exactly that. The parsers are written from the formats' own documentation
(docs/clients.md, "Profile formats"; Apple's configuration profile reference; Microsoft's
``Set-VpnConnectionIPsecConfiguration``; strongSwan's swanctl.conf and its NetworkManager
plugin), not from the generators in ``ikev2_vpn.profiles``, so a generator that writes the
wrong thing is caught rather than mirrored.
"""

from __future__ import annotations

import base64
import binascii
import configparser
import json
import plistlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.vpnclient import proposal_list, traffic_selectors


class ProfileFormatError(HelperError):
    """A profile a device would reject, or one that does not say what it offers."""


@dataclass(frozen=True)
class ReplayedProfile:
    """What a device configured from one profile sends to the server."""

    ike: tuple[str, ...]  # strongSwan proposals in order; () = the client's defaults
    esp: tuple[str, ...]
    remote_address: str | None  # what the device dials
    remote_id: str | None  # the identity it expects from the server
    user: str | None  # its EAP identity
    ca_der: bytes | None = None  # a CA certificate the profile carries, if any
    # The networks the device routes into the tunnel, as a replaying client proposes them;
    # (): everything, narrowed by the server (what devices without routes in the profile do).
    remote_ts: tuple[str, ...] = ()

    @property
    def ike_proposals(self) -> str | None:
        return ",".join(self.ike) or None

    @property
    def esp_proposals(self) -> str | None:
        return ",".join(self.esp) or None


def _networks(values: list[str], what: str) -> tuple[str, ...]:
    try:
        return traffic_selectors(values)
    except HelperError:
        raise ProfileFormatError(
            f"{what}: {values!r} holds something that is not a network"
        ) from None


def _proposals(values: list[str], what: str) -> tuple[str, ...]:
    """Validated strongSwan proposals, one per list entry."""
    checked = []
    for value in values:
        if "," in value:
            raise ProfileFormatError(f"{what}: {value!r} holds several proposals in one entry")
        try:
            compact = proposal_list(value.strip())
        except HelperError:
            raise ProfileFormatError(f"{what}: {value!r} is not a strongSwan proposal") from None
        if compact:
            checked.append(compact)
    return tuple(checked)


# --- Apple .mobileconfig ---------------------------------------------------------------------
# Apple's configuration profile reference, VPN > IKEv2 > SecurityAssociationParameters.
_APPLE_ENCRYPTION: Final = {
    "DES": "des",
    "3DES": "3des",
    "AES-128": "aes128",
    "AES-256": "aes256",
    "AES-128-GCM": "aes128gcm16",
    "AES-256-GCM": "aes256gcm16",
    "ChaCha20Poly1305": "chacha20poly1305",
}
_AEAD: Final = frozenset({"aes128gcm16", "aes256gcm16", "aes192gcm16", "chacha20poly1305"})
_APPLE_INTEGRITY: Final = {
    "SHA1-96": "sha1",
    "SHA1-160": "sha1_160",
    "SHA2-256": "sha256",
    "SHA2-384": "sha384",
    "SHA2-512": "sha512",
}
# IANA Diffie-Hellman group numbers, as Apple's DiffieHellmanGroup takes them.
_IANA_GROUPS: Final = {
    1: "modp768",
    2: "modp1024",
    5: "modp1536",
    14: "modp2048",
    15: "modp3072",
    16: "modp4096",
    17: "modp6144",
    18: "modp8192",
    19: "ecp256",
    20: "ecp384",
    21: "ecp521",
    31: "curve25519",
    32: "curve448",
}
# What a device uses for a key the dictionary leaves out (Apple's documented defaults).
_APPLE_DEFAULTS: Final[Mapping[str, Any]] = {
    "EncryptionAlgorithm": "AES-256",
    "IntegrityAlgorithm": "SHA2-256",
    "DiffieHellmanGroup": 14,
}


def _lookup(table: Mapping[Any, str], value: object, what: str) -> str:
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ProfileFormatError(f"{what} {value!r} is not a value the device knows") from None


def _apple_proposal(params: object, what: str, *, ike: bool, with_group: bool) -> str:
    if not isinstance(params, dict):
        raise ProfileFormatError(f"the profile has no {what} dictionary")
    values = {**_APPLE_DEFAULTS, **params}
    encryption = _lookup(_APPLE_ENCRYPTION, values["EncryptionAlgorithm"], "EncryptionAlgorithm")
    integrity = _lookup(_APPLE_INTEGRITY, values["IntegrityAlgorithm"], "IntegrityAlgorithm")
    parts = [encryption]
    if encryption not in _AEAD:
        parts.append(integrity)
    elif ike:  # with an AEAD cipher, IKE uses the integrity algorithm as its PRF
        parts.append(f"prf{integrity}")
    if with_group:
        parts.append(_lookup(_IANA_GROUPS, values["DiffieHellmanGroup"], "DiffieHellmanGroup"))
    return "-".join(parts)


def mobileconfig_plist(data: bytes) -> bytes:
    """The property list of a profile, signed or not: a signed one (CMS SignedData, DER)
    embeds it byte for byte. This reads it without checking the signature."""
    start, end = data.find(b"<?xml"), data.find(_PLIST_END)
    if data[:1] != b"0" or start < 0 or end < 0:  # not DER: the plain property list
        return data
    return data[start : end + len(_PLIST_END)]


_PLIST_END = b"</plist>\n"


def parse_mobileconfig(data: bytes) -> ReplayedProfile:
    """An Apple configuration profile with one IKEv2 VPN payload (signed or not)."""
    try:
        document = plistlib.loads(mobileconfig_plist(data))
    except (plistlib.InvalidFileException, ValueError) as error:
        raise ProfileFormatError(f"not a property list: {error}") from None
    payloads = document.get("PayloadContent", []) if isinstance(document, dict) else []
    vpns = [p for p in payloads if p.get("PayloadType") == "com.apple.vpn.managed"]
    if len(vpns) != 1 or vpns[0].get("VPNType") != "IKEv2":
        raise ProfileFormatError("expected one com.apple.vpn.managed payload of VPNType IKEv2")
    settings = vpns[0].get("IKEv2") or {}
    pfs = bool(settings.get("EnablePFS", 0))
    roots = [p for p in payloads if p.get("PayloadType") == "com.apple.security.root"]
    return ReplayedProfile(
        ike=(
            _apple_proposal(
                settings.get("IKESecurityAssociationParameters"),
                "IKESecurityAssociationParameters",
                ike=True,
                with_group=True,
            ),
        ),
        esp=(
            _apple_proposal(
                settings.get("ChildSecurityAssociationParameters"),
                "ChildSecurityAssociationParameters",
                ike=False,
                with_group=pfs,  # the Child SA's group is used only with EnablePFS
            ),
        ),
        remote_address=settings.get("RemoteAddress"),
        remote_id=settings.get("RemoteIdentifier"),
        # EAP: the device sends AuthName as its EAP identity.
        user=settings.get("AuthName"),
        ca_der=bytes(roots[0]["PayloadContent"]) if roots else None,
    )


# --- strongSwan app .sswan -------------------------------------------------------------------


def parse_sswan(data: bytes) -> ReplayedProfile:
    """A strongSwan VPN Client (Android) profile. Its proposal fields hold one strongSwan
    proposal each (the app parses each with proposal_create_from_string); absent fields
    leave the app's defaults."""
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ProfileFormatError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ProfileFormatError("a .sswan profile is a JSON object")
    missing = [key for key in ("uuid", "name", "type") if not document.get(key)]
    remote = document.get("remote") or {}
    if not remote.get("addr"):
        missing.append("remote.addr")
    if missing:
        raise ProfileFormatError(f"required fields missing: {', '.join(missing)}")
    if document["type"] != "ikev2-eap":
        raise ProfileFormatError(f"type {document['type']!r} is not ikev2-eap (name + password)")
    ca_der = None
    if remote.get("cert"):
        try:
            ca_der = base64.b64decode(remote["cert"], validate=True)
        except binascii.Error:
            raise ProfileFormatError("remote.cert is not base64") from None
    ike = document.get("ike-proposal")
    esp = document.get("esp-proposal")
    return ReplayedProfile(
        ike=_proposals([ike] if ike else [], "ike-proposal"),
        esp=_proposals([esp] if esp else [], "esp-proposal"),
        remote_address=remote["addr"],
        remote_id=remote.get("id") or remote["addr"],
        user=(document.get("local") or {}).get("eap_id"),
        ca_der=ca_der,
        remote_ts=_sswan_subnets(document.get("split-tunneling")),
    )


def _sswan_subnets(split: object) -> tuple[str, ...]:
    """``split-tunneling.subnets``: what the app routes into the tunnel (an array, or one
    string of subnets separated by spaces); absent: what the server's selector covers."""
    if split is None:
        return ()
    if not isinstance(split, dict):
        raise ProfileFormatError("split-tunneling is not an object")
    subnets = split.get("subnets")
    if subnets is None:
        return ()
    if isinstance(subnets, str):
        subnets = subnets.split()
    if not isinstance(subnets, list) or not all(isinstance(s, str) for s in subnets):
        raise ProfileFormatError("split-tunneling.subnets is neither a list nor a string")
    return _networks(subnets, "split-tunneling.subnets")


# --- Windows PowerShell ----------------------------------------------------------------------
# Set-VpnConnectionIPsecConfiguration's values (docs/clients.md lists the IKE side and
# GCMAES256; the rest is Microsoft's documentation of the cmdlet).
_WINDOWS_CIPHER: Final = {  # EncryptionMethod (IKE) and CipherTransformConstants (ESP)
    "DES": "des",
    "DES3": "3des",
    "AES128": "aes128",
    "AES192": "aes192",
    "AES256": "aes256",
    "GCMAES128": "aes128gcm16",
    "GCMAES192": "aes192gcm16",
    "GCMAES256": "aes256gcm16",
    "None": "null",
}
_WINDOWS_INTEGRITY: Final = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA384": "sha384"}
WINDOWS_ESP_AUTH: Final = {"MD596": "md5", "SHA196": "sha1", "SHA256128": "sha256", "None": ""}
WINDOWS_DH: Final = {
    "Group1": "modp768",
    "Group2": "modp1024",
    "Group14": "modp2048",
    "ECP256": "ecp256",
    "ECP384": "ecp384",
    "Group24": "modp2048s256",
}
WINDOWS_PFS: Final = {
    "None": "",
    "PFS1": "modp768",
    "PFS2": "modp1024",
    "PFS2048": "modp2048",
    "ECP256": "ecp256",
    "ECP384": "ecp384",
    "PFS24": "modp2048s256",
    # PFSMM: the main mode (IKE) group, resolved below
}
_IPSEC_PARAMETERS: Final = (
    "AuthenticationTransformConstants",
    "CipherTransformConstants",
    "EncryptionMethod",
    "IntegrityCheckMethod",
    "DHGroup",
    "PfsGroup",
)
# A PowerShell token: a quoted string ('' doubles a quote inside '...') or a bare word.
_PS_TOKEN: Final = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"`]|`.)*\"|[^\s'\"]+")
_PS_BASE64_LITERAL: Final = re.compile(r"'([A-Za-z0-9+/]{200,}={0,2})'")


def _ps_command(script: str, cmdlet: str) -> dict[str, str]:
    """The ``-Name value`` arguments of the one line that calls ``cmdlet`` (switches map
    to "")."""
    lines = _ps_commands(script, cmdlet)
    if len(lines) != 1:
        raise ProfileFormatError(f"expected one {cmdlet} line, found {len(lines)}")
    return lines[0]


def _ps_commands(script: str, cmdlet: str) -> list[dict[str, str]]:
    """The arguments of every line that calls ``cmdlet``, in order."""
    text = script.removeprefix("\ufeff").replace("`\r\n", " ").replace("`\n", " ")
    lines = [line for line in text.splitlines() if line.strip().startswith(cmdlet + " ")]
    return [_ps_arguments(line) for line in lines]


def _ps_arguments(line: str) -> dict[str, str]:
    tokens = _PS_TOKEN.findall(line)[1:]
    arguments: dict[str, str] = {}
    for index, token in enumerate(tokens):
        if token.startswith("-") and not token.startswith("-$"):
            name, colon, inline = token[1:].partition(":")
            following = tokens[index + 1] if index + 1 < len(tokens) else ""
            if colon:
                arguments[name] = inline
            elif following and not following.startswith(("-", "@")):  # @x: splatting
                arguments[name] = following
            else:
                arguments[name] = ""
    return {name: _ps_unquote(value) for name, value in arguments.items()}


def _ps_unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] == "'":
        return token[1:-1].replace("''", "'")
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return token[1:-1]
    return token


def windows_proposals(arguments: Mapping[str, str]) -> tuple[str, str]:
    """IKE and ESP proposal of a connection with these ``Set-VpnConnectionIPsecConfiguration``
    arguments: Windows then offers exactly one of each."""
    missing = [name for name in _IPSEC_PARAMETERS if not arguments.get(name)]
    if missing:
        raise ProfileFormatError(f"Set-VpnConnectionIPsecConfiguration lacks -{missing[0]}")
    ike_cipher = _lookup(_WINDOWS_CIPHER, arguments["EncryptionMethod"], "EncryptionMethod")
    integrity = _lookup(_WINDOWS_INTEGRITY, arguments["IntegrityCheckMethod"], "IntegrityCheck")
    dh = _lookup(WINDOWS_DH, arguments["DHGroup"], "DHGroup")
    if ike_cipher == "null":
        raise ProfileFormatError("EncryptionMethod None is not a value Windows accepts")
    # With GCM for IKE, the integrity method is only the PRF.
    ike = f"{ike_cipher}-{'prf' if ike_cipher in _AEAD else ''}{integrity}-{dh}"

    esp_cipher = _lookup(_WINDOWS_CIPHER, arguments["CipherTransformConstants"], "Cipher")
    auth = arguments["AuthenticationTransformConstants"]
    if esp_cipher in _AEAD or auth.startswith("GCM"):
        if auth != arguments["CipherTransformConstants"]:
            raise ProfileFormatError(
                f"AuthenticationTransformConstants {auth} must equal the GCM cipher "
                f"{arguments['CipherTransformConstants']}"
            )
        esp_integrity = ""
    else:
        esp_integrity = _lookup(WINDOWS_ESP_AUTH, auth, "AuthenticationTransformConstants")
    pfs_name = arguments["PfsGroup"]
    pfs = dh if pfs_name == "PFSMM" else _lookup(WINDOWS_PFS, pfs_name, "PfsGroup")
    esp = "-".join(part for part in (esp_cipher, esp_integrity, pfs) if part)
    return ike, esp


def parse_powershell(script: bytes | str) -> ReplayedProfile:
    """A PowerShell script that creates the connection (Add-VpnConnection) and sets its
    proposals (Set-VpnConnectionIPsecConfiguration, on one line, literal values)."""
    text = script.decode("utf-8-sig") if isinstance(script, bytes) else script
    created = _ps_command(text, "Add-VpnConnection")
    if created.get("TunnelType", "").lower() != "ikev2":
        raise ProfileFormatError("Add-VpnConnection does not create an Ikev2 connection")
    if created.get("AuthenticationMethod", "").lower() != "eap":
        raise ProfileFormatError("Add-VpnConnection does not sign in with Eap")
    ike, esp = windows_proposals(_ps_command(text, "Set-VpnConnectionIPsecConfiguration"))
    ca = _PS_BASE64_LITERAL.search(text)
    address = created.get("ServerAddress")
    return ReplayedProfile(
        ike=(ike,),
        esp=(esp,),
        remote_address=address,
        remote_id=address,  # Windows expects the server to be who it dialled
        user=None,  # typed by the user at the first connect
        ca_der=base64.b64decode(ca.group(1)) if ca else None,
        remote_ts=_windows_routes(text, created),
    )


def _windows_routes(script: str, created: Mapping[str, str]) -> tuple[str, ...]:
    """With split tunnelling switched on (``-SplitTunneling`` or ``:$true``), Windows routes
    only what ``Add-VpnConnectionRoute`` adds (Microsoft's VpnClient reference; the class-based
    route of its own address aside). Otherwise (a switch bound to a variable that defaults
    to off, or absent) it routes everything into the tunnel."""
    split = created.get("SplitTunneling")
    if split is None or split.lower() not in {"", "$true", "true"}:
        return ()
    routes = [
        arguments.get("DestinationPrefix", "")
        for arguments in _ps_commands(script, "Add-VpnConnectionRoute")
    ]
    if not routes:
        raise ProfileFormatError(
            "-SplitTunneling without Add-VpnConnectionRoute: nothing tunnelled"
        )
    return _networks(routes, "Add-VpnConnectionRoute -DestinationPrefix")


# --- strongSwan swanctl.conf -----------------------------------------------------------------
Section = dict[str, "str | Section"]
_SETTINGS_TOKEN: Final = re.compile(
    r"""(?P<space>[ \t\r]+)|(?P<newline>\n)|(?P<comment>\#[^\n]*)|(?P<open>\{)|(?P<close>\})
       |(?P<equals>=)|(?P<quoted>"(?:[^"\\]|\\.)*")|(?P<word>[^\s{}=#"]+)""",
    re.VERBOSE,
)


def parse_settings(text: str) -> Section:
    """strongSwan's settings syntax (swanctl.conf, strongswan.conf) as nested dictionaries.

    ``name { ... }`` opens a section, ``key = value`` sets a value up to the end of the
    line (or a closing brace); a value that is one double-quoted string is unquoted.
    ``include`` lines are ignored.
    """
    root: Section = {}
    stack = [root]
    words: list[str] = []
    key: str | None = None
    span = (0, 0)  # of the current value in ``text``

    def finish_value() -> None:
        nonlocal key
        if key is not None:
            raw = text[span[0] : span[1]].strip()
            quoted = _SETTINGS_TOKEN.fullmatch(raw)
            single = quoted is not None and quoted.lastgroup == "quoted"
            stack[-1][key] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if single else raw
            key = None

    for match in _SETTINGS_TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group()
        if kind in {"space", "comment"}:
            continue
        if key is not None and kind in {"word", "quoted", "equals"}:
            span = (span[0], match.end())
            continue
        finish_value()
        if kind == "newline":
            words = []
        elif kind in {"word", "quoted"}:
            words.append(token)
        elif kind == "equals":
            if len(words) != 1:
                raise ProfileFormatError(f"unexpected '=' after {' '.join(words) or 'nothing'}")
            key, words, span = words[0], [], (match.end(), match.end())
        elif kind == "open":
            if len(words) != 1:
                raise ProfileFormatError("a section needs exactly one name")
            section: Section = {}
            stack[-1][words[0]] = section
            stack.append(section)
            words = []
        elif len(stack) == 1:
            raise ProfileFormatError("unbalanced '}'")
        else:
            stack.pop()
    finish_value()
    if len(stack) != 1:
        raise ProfileFormatError("a section is not closed")
    return root


def _section(parent: Section, name: str) -> Section:
    found = parent.get(name)
    return found if isinstance(found, dict) else {}


def _string(parent: Section, name: str) -> str | None:
    found = parent.get(name)
    return found if isinstance(found, str) else None


def _subsection(parent: Section, prefix: str) -> Section:
    """The first ``local``/``remote`` round: swanctl also accepts ``local-1``, ``local-x``."""
    for name, value in parent.items():
        if isinstance(value, dict) and (name == prefix or name.startswith(prefix + "-")):
            return value
    return {}


def _split(value: str | None, separator: str) -> list[str]:
    return [part.strip() for part in (value or "").split(separator) if part.strip()]


def parse_swanctl_conf(text: bytes | str) -> ReplayedProfile:
    """A swanctl.conf with one connection and one child."""
    conf = parse_settings(text.decode() if isinstance(text, bytes) else text)
    connections = [c for c in _section(conf, "connections").values() if isinstance(c, dict)]
    if len(connections) != 1:
        raise ProfileFormatError(f"expected one connection, found {len(connections)}")
    connection = connections[0]
    children = [c for c in _section(connection, "children").values() if isinstance(c, dict)]
    if len(children) != 1:
        raise ProfileFormatError(f"expected one child, found {len(children)}")
    local, remote = _subsection(connection, "local"), _subsection(connection, "remote")
    if _string(local, "auth") != "eap-mschapv2":
        raise ProfileFormatError("local auth is not eap-mschapv2")
    ike = _split(_string(connection, "proposals"), ",")
    esp = _split(_string(children[0], "esp_proposals"), ",")
    address = _split(_string(connection, "remote_addrs"), ",")
    return ReplayedProfile(
        ike=_proposals([] if ike == ["default"] else ike, "proposals"),
        esp=_proposals([] if esp == ["default"] else esp, "esp_proposals"),
        remote_address=address[0] if address else None,
        remote_id=_string(remote, "id"),
        user=_string(local, "eap_id") or _string(local, "id"),
        remote_ts=_networks(_split(_string(children[0], "remote_ts"), ","), "remote_ts"),
    )


# --- NetworkManager keyfile ------------------------------------------------------------------
_KEYFILE_ESCAPES: Final = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _keyfile_value(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: _KEYFILE_ESCAPES.get(m.group(1), m.group(1)), raw)


def parse_nmconnection(text: bytes | str) -> ReplayedProfile:
    """A NetworkManager keyfile for the strongSwan plugin. The plugin uses ``ike`` and
    ``esp`` (proposals separated by ';') only with ``proposal=yes``."""
    keyfile = configparser.ConfigParser(interpolation=None, strict=False)
    keyfile.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        keyfile.read_string(text.decode() if isinstance(text, bytes) else text)
    except configparser.Error as error:
        raise ProfileFormatError(f"not a key file: {error}") from None
    if not keyfile.has_section("vpn"):
        raise ProfileFormatError("no [vpn] section")
    vpn = {key: _keyfile_value(value) for key, value in keyfile.items("vpn")}
    if vpn.get("service-type") != "org.freedesktop.NetworkManager.strongswan":
        raise ProfileFormatError("service-type is not org.freedesktop.NetworkManager.strongswan")
    if vpn.get("method") != "eap":
        raise ProfileFormatError("method is not eap")
    custom = vpn.get("proposal") == "yes"
    address = vpn.get("address")
    return ReplayedProfile(
        ike=_proposals(_split(vpn.get("ike"), ";"), "ike") if custom else (),
        esp=_proposals(_split(vpn.get("esp"), ";"), "esp") if custom else (),
        remote_address=address,
        remote_id=vpn.get("remote-identity") or address,
        user=vpn.get("user"),
        # charon-nm proposes these (separated by ';'), else 0.0.0.0/0 and ::/0.
        remote_ts=_networks(_split(vpn.get("remote-ts"), ";"), "remote-ts"),
    )


# --- by file name ----------------------------------------------------------------------------
PARSERS: Final[tuple[tuple[str, Callable[[bytes], ReplayedProfile]], ...]] = (
    (".mobileconfig", parse_mobileconfig),
    (".sswan", parse_sswan),
    (".ps1", parse_powershell),
    (".swanctl.conf", parse_swanctl_conf),
    (".nmconnection", parse_nmconnection),
)


def parse_profile(file_name: str, data: bytes) -> ReplayedProfile:
    """Any profile, by how its file name ends."""
    for suffix, parser in PARSERS:
        if file_name.endswith(suffix):
            return parser(data)
    raise ProfileFormatError(f"{file_name}: not a profile format this helper reads")
