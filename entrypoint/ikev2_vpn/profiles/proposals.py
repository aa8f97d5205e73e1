"""The suites client profiles ask for, in each platform's vocabulary.

Profiles carry one strong suite each, not a list: a profile pins what the device offers,
so what it offers must be something the server accepts under both proposal sets
(``defaults.IKE_STRONG``, ``ESP_STRONG_AEAD``, ``ESP_STRONG_CBC``; unit tests check it
algorithm by algorithm). This module is the only place that names algorithms for
profiles; the platform modules only place the values.

Choices (facts from docs/clients.md, "What each native client does"):

- Key exchange: ECP-384 (group 20) for IKE and for ESP rekeying (PFS). It is the one strong
  group all four vocabularies share: Apple's DiffieHellmanGroup 20, Windows' DHGroup and
  PfsGroup ``ECP384``, Android's IKE library (ECP 19/20/21) and strongSwan. Curve25519 is
  missing from Windows and older Android releases.
- IKE and ESP use the same group and Apple gets the same lifetime for both: "Apple
  reconnect loops every 24/48 minutes when lifetimes or DH groups differ between IKE and
  ESP rekeying" (Known field failures).
- IKE on Apple and strongSwan clients: AES-256-GCM with PRF HMAC-SHA2-384 (RFC 6379's
  Suite-B-GCM-256 with ECP-384). Apple lists AES-256-GCM as an EncryptionAlgorithm and
  uses the IntegrityAlgorithm as the PRF when the cipher is AEAD (Profile formats).
- IKE on Windows: AES-256-CBC with SHA2-256 and ECP-384, the PowerShell line in docs/clients.md;
  Windows offers GCM for IKE only from Windows 11 on (Default proposals).
- ESP: AES-256-GCM when the server's IPsec backend carries it (``ProfileInput.esp_gcm``),
  else AES-256-CBC with HMAC-SHA2-256-128, which every platform has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final


class Cipher(Enum):
    AES256_GCM16 = "AES-256-GCM (16-byte ICV)"
    AES256_CBC = "AES-256-CBC"

    @property
    def aead(self) -> bool:
        return self is Cipher.AES256_GCM16


class Hash(Enum):
    SHA256 = "SHA2-256"
    SHA384 = "SHA2-384"


class Group(Enum):
    ECP384 = 20  # IANA transform ID


@dataclass(frozen=True)
class IkeSuite:
    cipher: Cipher
    # Without AEAD also the integrity algorithm (HMAC truncated to half): clients pair them.
    prf: Hash
    group: Group

    def strongswan(self) -> str:
        """As a strongSwan proposal (``.sswan`` ike-proposal, swanctl ``proposals``)."""
        middle = (
            f"prf{_STRONGSWAN_HASH[self.prf]}" if self.cipher.aead else _STRONGSWAN_HASH[self.prf]
        )
        return f"{_STRONGSWAN_CIPHER[self.cipher]}-{middle}-{_STRONGSWAN_GROUP[self.group]}"


@dataclass(frozen=True)
class EspSuite:
    cipher: Cipher
    integrity: Hash | None  # None with an AEAD cipher
    pfs_group: Group  # for CHILD_SA rekeying; the first CHILD_SA rides on IKE_AUTH without one

    def __post_init__(self) -> None:
        if self.cipher.aead != (self.integrity is None):
            raise ValueError("an ESP suite has an integrity algorithm exactly when not AEAD")

    def strongswan(self) -> str:
        """As a strongSwan proposal (``.sswan`` esp-proposal, swanctl ``esp_proposals``)."""
        parts = [_STRONGSWAN_CIPHER[self.cipher]]
        if self.integrity is not None:
            parts.append(_STRONGSWAN_HASH[self.integrity])
        parts.append(_STRONGSWAN_GROUP[self.pfs_group])
        return "-".join(parts)


@dataclass(frozen=True)
class Suites:
    ike: IkeSuite
    esp: EspSuite


def _esp(esp_gcm: bool) -> EspSuite:
    if esp_gcm:
        return EspSuite(Cipher.AES256_GCM16, None, Group.ECP384)
    return EspSuite(Cipher.AES256_CBC, Hash.SHA256, Group.ECP384)


def client_suites(esp_gcm: bool) -> Suites:
    """What Apple profiles and strongSwan clients (Android app, Linux) ask for."""
    return Suites(IkeSuite(Cipher.AES256_GCM16, Hash.SHA384, Group.ECP384), _esp(esp_gcm))


def windows_suites(esp_gcm: bool) -> Suites:
    """What a Windows connection set up with :func:`windows_ipsec` asks for."""
    return Suites(IkeSuite(Cipher.AES256_CBC, Hash.SHA256, Group.ECP384), _esp(esp_gcm))


# --- strongSwan ------------------------------------------------------------------------
_STRONGSWAN_CIPHER: Final[Mapping[Cipher, str]] = {
    Cipher.AES256_GCM16: "aes256gcm16",
    Cipher.AES256_CBC: "aes256",
}
_STRONGSWAN_HASH: Final[Mapping[Hash, str]] = {Hash.SHA256: "sha256", Hash.SHA384: "sha384"}
_STRONGSWAN_GROUP: Final[Mapping[Group, str]] = {Group.ECP384: "ecp384"}


# --- Apple (IKESecurityAssociationParameters, ChildSecurityAssociationParameters) -------
# Apple's maximum and default; the same for IKE and Child SAs (see the module docstring).
APPLE_LIFETIME_MINUTES: Final = 1440
APPLE_CIPHER: Final[Mapping[Cipher, str]] = {
    Cipher.AES256_GCM16: "AES-256-GCM",
    Cipher.AES256_CBC: "AES-256",
}
APPLE_HASH: Final[Mapping[Hash, str]] = {Hash.SHA256: "SHA2-256", Hash.SHA384: "SHA2-384"}


def apple_ike(suites: Suites) -> dict[str, str | int]:
    """IKESecurityAssociationParameters. With AEAD, Apple takes the PRF from IntegrityAlgorithm."""
    return {
        "EncryptionAlgorithm": APPLE_CIPHER[suites.ike.cipher],
        "IntegrityAlgorithm": APPLE_HASH[suites.ike.prf],
        "DiffieHellmanGroup": suites.ike.group.value,
        "LifeTimeInMinutes": APPLE_LIFETIME_MINUTES,
    }


def apple_child(suites: Suites) -> dict[str, str | int]:
    """ChildSecurityAssociationParameters. No IntegrityAlgorithm with AEAD: ESP has none then."""
    params: dict[str, str | int] = {"EncryptionAlgorithm": APPLE_CIPHER[suites.esp.cipher]}
    if suites.esp.integrity is not None:
        params["IntegrityAlgorithm"] = APPLE_HASH[suites.esp.integrity]
    params["DiffieHellmanGroup"] = suites.esp.pfs_group.value
    params["LifeTimeInMinutes"] = APPLE_LIFETIME_MINUTES
    return params


# --- Windows (Set-VpnConnectionIPsecConfiguration) -------------------------------------
@dataclass(frozen=True)
class WindowsIPsec:
    """The parameters of ``Set-VpnConnectionIPsecConfiguration`` (values from docs/clients.md)."""

    authentication_transform_constants: str  # ESP integrity (GCM: the AEAD cipher again)
    cipher_transform_constants: str  # ESP encryption
    encryption_method: str  # IKE encryption
    integrity_check_method: str  # IKE integrity and PRF
    dh_group: str  # IKE key exchange
    pfs_group: str  # ESP rekeying key exchange

    def parameters(self) -> dict[str, str]:
        """PowerShell parameter name (without the dash) -> value, in the usual order."""
        return {
            "AuthenticationTransformConstants": self.authentication_transform_constants,
            "CipherTransformConstants": self.cipher_transform_constants,
            "EncryptionMethod": self.encryption_method,
            "IntegrityCheckMethod": self.integrity_check_method,
            "DHGroup": self.dh_group,
            "PfsGroup": self.pfs_group,
        }


WINDOWS_IKE_CIPHER: Final[Mapping[Cipher, str]] = {
    Cipher.AES256_CBC: "AES256",
    Cipher.AES256_GCM16: "GCMAES256",
}
WINDOWS_IKE_HASH: Final[Mapping[Hash, str]] = {Hash.SHA256: "SHA256", Hash.SHA384: "SHA384"}
WINDOWS_DH: Final[Mapping[Group, str]] = {Group.ECP384: "ECP384"}
WINDOWS_PFS: Final[Mapping[Group, str]] = {Group.ECP384: "ECP384"}
WINDOWS_ESP_CIPHER: Final[Mapping[Cipher, str]] = {
    Cipher.AES256_CBC: "AES256",
    Cipher.AES256_GCM16: "GCMAES256",
}
# AuthenticationTransformConstants has no SHA-384 value (MD596, SHA196, SHA256128, GCM*).
WINDOWS_ESP_AUTH: Final[Mapping[Hash, str]] = {Hash.SHA256: "SHA256128"}


def windows_ipsec(esp_gcm: bool) -> WindowsIPsec:
    suites = windows_suites(esp_gcm)
    esp_auth = (
        WINDOWS_ESP_CIPHER[suites.esp.cipher]
        if suites.esp.integrity is None
        else WINDOWS_ESP_AUTH[suites.esp.integrity]
    )
    return WindowsIPsec(
        authentication_transform_constants=esp_auth,
        cipher_transform_constants=WINDOWS_ESP_CIPHER[suites.esp.cipher],
        encryption_method=WINDOWS_IKE_CIPHER[suites.ike.cipher],
        integrity_check_method=WINDOWS_IKE_HASH[suites.ike.prf],
        dh_group=WINDOWS_DH[suites.ike.group],
        pfs_group=WINDOWS_PFS[suites.esp.pfs_group],
    )
