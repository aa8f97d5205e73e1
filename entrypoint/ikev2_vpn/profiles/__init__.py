"""Client profiles: one file per platform and user, so onboarding is one file or one scan.

Pure functions from :class:`ProfileInput` to file contents (no I/O), one module per
platform (the render step); :mod:`ikev2_vpn.apply.profile_writer` writes them under
``/data/clients/<user>/`` and :mod:`ikev2_vpn.run.share` serves them. Every profile carries
only strong proposals that the server accepts (from :func:`ikev2_vpn.render.proposals` with
``ProposalSet.MODERN``), so a profile keeps working when the operator switches to
``VPN_PROPOSALS=modern``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import SecretStr


@dataclass(frozen=True)
class Signer:
    """The server certificate and key, which sign Apple profiles, and the chain sent along
    (intermediates, and the own CA in self-signed mode)."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes = field(repr=False, compare=False)  # follows the certificate


def ca_fingerprint(ca: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated hex, the form device certificate views show."""
    return ca.fingerprint(hashes.SHA256()).hex(":").upper()


@dataclass(frozen=True)
class ProfileInput:
    """Everything a profile depends on; when any of it changes, profiles are rewritten."""

    host: str  # VPN_HOST: what clients dial, and the server's IKE identity (RemoteIdentifier)
    user: str
    password: SecretStr | None  # None: left out (VPN_PROFILE_PASSWORDS=omit); the device asks
    ca: x509.Certificate | None  # the server's own CA (self-signed mode), else None
    esp_gcm: bool  # the server's IPsec backend accepts AES-GCM for ESP
    dns: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    pool_v4: ipaddress.IPv4Network
    always_on: bool = False  # VPN_PROFILE_ALWAYS_ON: Apple on-demand "connect always"
    ipv6: bool = False  # VPN_POOL_V6 is set: clients that must ask for IPv6 do
    # VPN_SPLIT_NETS and the DNS servers outside them (Settings.split_tunnel): what the
    # server's traffic selector covers, and so what a profile routes; (): a full tunnel.
    split: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    connection_name: str = ""  # shown on the device; empty: "IKEv2 VPN <host>"
    signer: Signer | None = None  # signs the Apple profile; None: unsigned

    @property
    def display_name(self) -> str:
        return self.connection_name or f"IKEv2 VPN {self.host}"
