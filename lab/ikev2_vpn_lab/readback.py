"""Reading the proposals of generated client profiles back, for tests and the matrix.

The server only writes profiles; these readers turn what a device would get back into the
server's own :class:`~ikev2_vpn.profiles.proposals.Suites`, so tests can compare it with
what the server accepts. They invert the server's value tables (shared pure data, never
copied here, so a table change cannot leave a reader behind).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

from ikev2_vpn.profiles.proposals import (
    APPLE_CIPHER,
    APPLE_HASH,
    WINDOWS_DH,
    WINDOWS_ESP_AUTH,
    WINDOWS_ESP_CIPHER,
    WINDOWS_IKE_CIPHER,
    WINDOWS_IKE_HASH,
    WINDOWS_PFS,
    EspSuite,
    Group,
    IkeSuite,
    Suites,
)


def suites_from_apple(ike: Mapping[str, object], child: Mapping[str, object]) -> Suites:
    """The suites of a profile's two parameter dictionaries (IKESecurityAssociationParameters,
    ChildSecurityAssociationParameters).

    Raises KeyError or ValueError for values the server never writes.
    """
    ike_cipher = _reverse(APPLE_CIPHER, ike["EncryptionAlgorithm"])
    child_cipher = _reverse(APPLE_CIPHER, child["EncryptionAlgorithm"])
    child_integrity = None
    if not child_cipher.aead:
        child_integrity = _reverse(APPLE_HASH, child["IntegrityAlgorithm"])
    return Suites(
        IkeSuite(
            ike_cipher,
            _reverse(APPLE_HASH, ike["IntegrityAlgorithm"]),
            Group(ike["DiffieHellmanGroup"]),
        ),
        EspSuite(child_cipher, child_integrity, Group(child["DiffieHellmanGroup"])),
    )


def suites_from_windows(parameters: Mapping[str, str]) -> Suites:
    """The suites of ``Set-VpnConnectionIPsecConfiguration`` arguments (see
    :func:`parse_ipsec_configuration`).

    Raises KeyError or ValueError for values the server never writes.
    """
    esp_cipher = _reverse(WINDOWS_ESP_CIPHER, parameters["CipherTransformConstants"])
    auth = parameters["AuthenticationTransformConstants"]
    if esp_cipher.aead and auth != WINDOWS_ESP_CIPHER[esp_cipher]:
        raise ValueError(f"AuthenticationTransformConstants {auth!r} does not match the cipher")
    integrity = None if esp_cipher.aead else _reverse(WINDOWS_ESP_AUTH, auth)
    return Suites(
        IkeSuite(
            _reverse(WINDOWS_IKE_CIPHER, parameters["EncryptionMethod"]),
            _reverse(WINDOWS_IKE_HASH, parameters["IntegrityCheckMethod"]),
            _reverse(WINDOWS_DH, parameters["DHGroup"]),
        ),
        EspSuite(esp_cipher, integrity, _reverse(WINDOWS_PFS, parameters["PfsGroup"])),
    )


_K = TypeVar("_K")


def _reverse(table: Mapping[_K, str], value: object) -> _K:
    for key, name in table.items():
        if name == value:
            return key
    raise ValueError(f"{value!r} is not one of {sorted(table.values())}")


# The generated script keeps this line on one line with literal constants for this reader.
_IPSEC_LINE = re.compile(r"^Set-VpnConnectionIPsecConfiguration (?P<arguments>.*)$", re.MULTILINE)
_ARGUMENT = re.compile(r"-(?P<name>[A-Za-z]+) (?P<value>[A-Za-z0-9]+)")


def parse_ipsec_configuration(script: str) -> dict[str, str]:
    """The arguments of a Windows script's one ``Set-VpnConnectionIPsecConfiguration`` line,
    by parameter name (``ConnectionName`` and switches left out). Feed them to
    :func:`suites_from_windows` for the strongSwan equivalent."""
    lines = _IPSEC_LINE.findall(script.removeprefix("\ufeff"))
    if len(lines) != 1:
        raise ValueError(f"expected one Set-VpnConnectionIPsecConfiguration line, got {len(lines)}")
    return {match["name"]: match["value"] for match in _ARGUMENT.finditer(lines[0])}
