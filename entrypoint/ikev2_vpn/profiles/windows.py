"""Windows: a PowerShell script that creates the built-in IKEv2 connection, and manual steps.

The script is what an administrator runs once per computer: it trusts the server's own CA
(self-signed mode), replaces a connection of the same name, creates an IKEv2 connection
with EAP-MSCHAPv2 sign-in and sets its IPsec proposals to strong ones the server accepts.
It never carries the password: Windows has no supported command to store EAP-MSCHAPv2
credentials, so the user types them on the first connect and Windows remembers them.

Encoding: UTF-8 with a byte order mark and CRLF line ends. Windows PowerShell 5.1 reads a
script without BOM in the legacy ANSI code page, so a connection name with non-ASCII
characters would be garbled; with the BOM both 5.1 and PowerShell 7 read it as UTF-8.

The ``Set-VpnConnectionIPsecConfiguration`` line stays on one line with literal constants,
so tests can read back exactly what Windows gets.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from . import ProfileInput, ca_fingerprint, proposals
from .templating import render_profile

ENCODING: Final = "utf-8-sig"  # UTF-8 with BOM: see the module docstring
SCRIPT_NAME: Final = "windows.ps1"
MANUAL_NAME: Final = "windows-manual.txt"

# What Set-VpnConnectionIPsecConfiguration accepts, by parameter: the "Accepted values" of
# Microsoft's reference page for the cmdlet (VpnClient module, learn.microsoft.com). The
# "96" suffixes belong to ESP's AuthenticationTransformConstants only; IKE's
# IntegrityCheckMethod says plain SHA1.
ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    "AuthenticationTransformConstants": frozenset(
        {"MD596", "SHA196", "SHA256128", "GCMAES128", "GCMAES192", "GCMAES256", "None"}
    ),
    "CipherTransformConstants": frozenset(
        {"DES", "DES3", "AES128", "AES192", "AES256", "GCMAES128", "GCMAES192", "GCMAES256", "None"}
    ),
    "EncryptionMethod": frozenset(
        {"DES", "DES3", "AES128", "AES192", "AES256", "GCMAES128", "GCMAES256"}
    ),
    "IntegrityCheckMethod": frozenset({"MD5", "SHA1", "SHA256", "SHA384"}),
    "DHGroup": frozenset({"None", "Group1", "Group2", "Group14", "ECP256", "ECP384", "Group24"}),
    "PfsGroup": frozenset(
        {"None", "PFS1", "PFS2", "PFS2048", "ECP256", "ECP384", "PFSMM", "PFS24"}
    ),
}


def ipsec_arguments(esp_gcm: bool) -> str:
    """``-Name Value`` pairs for Set-VpnConnectionIPsecConfiguration, on one line.

    The values come from :func:`proposals.windows_ipsec`; each is checked against what
    Windows accepts, so a typo there fails here rather than on the user's computer.
    """
    parameters = proposals.windows_ipsec(esp_gcm).parameters()
    for name, value in parameters.items():
        if value not in ALLOWED[name]:
            raise ValueError(f"{name} {value!r} is not a value Windows accepts")
    return " ".join(f"-{name} {value}" for name, value in parameters.items())


# --- PowerShell text -----------------------------------------------------------------------

# PowerShell treats the typographic single quotes like ' inside single-quoted strings.
_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def ps_quote(text: str) -> str:
    """``text`` as a PowerShell single-quoted string literal (no expansion inside).

    Every kind of single quote is doubled. Control characters are refused: a line break
    would end a comment or split a command.
    """
    if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in text):
        raise ValueError(f"{text!r} contains a control character")
    return "'" + "".join(char * 2 if char in _SINGLE_QUOTES else char for char in text) + "'"


def _plain(text: str) -> str:
    """Text for a comment line: as is, once it is known to hold no control character."""
    ps_quote(text)
    return text


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode(ENCODING)


def _ca_values(profile: ProfileInput) -> dict[str, str] | None:
    if profile.ca is None:
        return None
    der = profile.ca.public_bytes(Encoding.DER)
    return {
        "base64": base64.b64encode(der).decode("ascii"),
        # What Windows shows as "Thumbprint" (SHA-1 of the DER certificate).
        "thumbprint": profile.ca.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303
    }


def windows_script(profile: ProfileInput) -> bytes:
    """``windows.ps1``: creates the connection; no password inside."""
    return _crlf(
        render_profile(
            "windows.ps1.j2",
            host=ps_quote(profile.host),
            host_text=_plain(profile.host),
            user=ps_quote(profile.user),
            user_text=_plain(profile.user),
            name=ps_quote(profile.display_name),
            file_name=SCRIPT_NAME,
            pool=str(profile.pool_v4),
            ca=_ca_values(profile),
            ipsec_arguments=ipsec_arguments(profile.esp_gcm),
            split=[str(network) for network in profile.split],
        )
    )


def windows_manual(profile: ProfileInput) -> bytes:
    """``windows-manual.txt``: the same connection made by hand in Settings."""
    ca = _ca_values(profile)
    return _crlf(
        render_profile(
            "windows-manual.txt.j2",
            host=_plain(profile.host),
            user=_plain(profile.user),
            name=_plain(profile.display_name),
            name_literal=ps_quote(profile.display_name),
            script=SCRIPT_NAME,
            ca=ca is not None,
            ca_thumbprint=ca["thumbprint"] if ca else "",
            ca_fingerprint=ca_fingerprint(profile.ca) if profile.ca is not None else "",
            ipsec_arguments=ipsec_arguments(profile.esp_gcm),
            split=[str(network) for network in profile.split],
        )
    )
