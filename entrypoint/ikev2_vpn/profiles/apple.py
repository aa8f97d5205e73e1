"""Apple ``.mobileconfig``: one tap on iOS, iPadOS or macOS sets up the VPN (and the CA).

A configuration profile signed by the server certificate (CMS SignedData, the chain
included; with a public certificate the device shows it as "Verified", with the own CA as
"Not Verified" until that CA is trusted, and a changed byte makes it refuse the profile),
with a ``com.apple.vpn.managed`` payload of type IKEv2 for name + password (EAP),
and in self-signed mode the server's CA as a ``com.apple.security.root`` payload, so the
device trusts the server without a separate import (docs/clients.md, Profile formats).

Identifiers are derived from host and user only: a regenerated profile has the same
PayloadIdentifier and UUIDs, so installing it again replaces the old one instead of
adding a second VPN.
"""

from __future__ import annotations

import hashlib
import ipaddress
import plistlib
import re
import uuid
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID

from . import ProfileInput, Signer, ca_fingerprint, proposals

FILE_NAME: Final = "apple.mobileconfig"
CONTENT_TYPE: Final = "application/x-apple-aspen-config"  # Apple's; Safari offers to install

_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_DNS, "apple.profiles.ikev2-vpn")
_LABEL: Final = re.compile(r"[A-Za-z0-9-]+")

# "Connect On Demand" with a single unconditional rule: whenever the device has a network,
# it brings the VPN up (and back up after it dropped), on every Wi-Fi and cellular network.
# This is the always-on that works without supervising the device (real Always-On VPN needs
# supervision); the user can still switch "Connect On Demand" off in the VPN settings.
ALWAYS_CONNECT_RULES: Final = ({"Action": "Connect"},)


def mobileconfig(profile: ProfileInput) -> bytes:
    """The profile: an XML property list, signed (DER) when ``profile.signer`` is set."""
    document = plist(profile)
    return document if profile.signer is None else sign(document, profile.signer)


def sign(content: bytes, signer: Signer) -> bytes:
    """CMS SignedData over ``content`` (embedded as is), SHA-256, with the signer's chain.
    The signed attributes hold the signing time, so two signatures of one content differ:
    :func:`same_profile` compares what they sign."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    builder = builder.add_signer(signer.certificate, _signing_key(signer), hashes.SHA256())
    for certificate in signer.chain:
        builder = builder.add_certificate(certificate)
    return builder.sign(Encoding.DER, [pkcs7.PKCS7Options.Binary])


def _signing_key(signer: Signer) -> pkcs7.PKCS7PrivateKeyTypes:
    if not isinstance(signer.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise TypeError(f"cannot sign Apple profiles with a {type(signer.key).__name__}")
    return signer.key


def signed_content(data: bytes) -> bytes:
    """The property list inside a profile, signed or not (the signed one embeds it as is)."""
    start, end = data.find(b"<?xml"), data.find(_PLIST_END)
    if start < 0 or end < 0:
        raise ValueError("not a configuration profile")
    return data[start : end + len(_PLIST_END)]


def same_profile(old: bytes, new: bytes) -> bool:
    """Whether ``old`` says what ``new`` says, signed by the same certificates (only the
    signing time differs): a profile on disk is then kept as it is."""
    if old == new:
        return True
    if old[:1] != b"0" or new[:1] != b"0":  # DER SEQUENCE: both signed
        return False
    try:
        same_content = signed_content(old) == signed_content(new)
        certificates = pkcs7.load_der_pkcs7_certificates
        return same_content and certificates(old) == certificates(new)
    except ValueError:
        return False


_PLIST_END: Final = b"</plist>\n"


def plist(profile: ProfileInput) -> bytes:
    """The profile as an XML property list (what the signature covers)."""
    payloads = [_vpn_payload(profile)]
    if profile.ca is not None:
        payloads.insert(0, _root_payload(profile, profile.ca))
    document = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": identifier(profile),
        "PayloadUUID": _uuid(profile, "profile"),
        "PayloadDisplayName": profile.display_name,
        "PayloadDescription": (
            f"IKEv2 VPN to {profile.host} for {profile.user}"
            + (
                " and the server's certificate authority, SHA-256 fingerprint "
                + ca_fingerprint(profile.ca)
                if profile.ca is not None
                else ""
            )
        ),
        "PayloadOrganization": "ikev2-vpn",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": payloads,
    }
    return plistlib.dumps(document)


def identifier(profile: ProfileInput) -> str:
    """Reverse-DNS PayloadIdentifier of the profile: the same for the same host and user."""
    return f"{_reverse_host(profile.host)}.ikev2-vpn.{_label(profile.user)}"


def _vpn_payload(profile: ProfileInput) -> dict[str, Any]:
    suites = proposals.client_suites(profile.esp_gcm)
    ikev2: dict[str, Any] = {
        "RemoteAddress": profile.host,
        # The server's IKE identity is VPN_HOST; a mismatch fails silently on Apple devices.
        "RemoteIdentifier": profile.host,
        "LocalIdentifier": profile.user,
        # EAP-only: the server proves itself with its certificate, the user with EAP-MSCHAPv2.
        "AuthenticationMethod": "None",
        "ExtendedAuthEnabled": 1,
        "AuthName": profile.user,
        "IKESecurityAssociationParameters": proposals.apple_ike(suites),
        "ChildSecurityAssociationParameters": proposals.apple_child(suites),
        "EnablePFS": 1,  # rekey ESP with the Child SA's group, which the server accepts
        "DeadPeerDetectionRate": "Medium",  # a keepalive every 10 minutes
        "DisableMOBIKE": 0,  # the server does MOBIKE: tunnels survive Wi-Fi <-> cellular
        "DisableRedirect": 1,  # the server never redirects; ignore anyone who claims to
        "EnableCertificateRevocationCheck": 0,
        "UseConfigurationAttributeInternalIPSubnet": 0,
    }
    if profile.password is not None:
        ikev2["AuthPassword"] = profile.password.get_secret_value()
    if profile.ca is not None and (issuer := _common_name(profile.ca)):
        # Makes the device send a certificate request naming our CA, and accept only
        # server certificates it issued.
        ikev2["ServerCertificateIssuerCommonName"] = issuer
    if profile.always_on:
        ikev2["OnDemandEnabled"] = 1
        ikev2["OnDemandRules"] = [dict(rule) for rule in ALWAYS_CONNECT_RULES]
    return {
        "PayloadType": "com.apple.vpn.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier(profile)}.vpn",
        "PayloadUUID": _uuid(profile, "vpn"),
        "PayloadDisplayName": profile.display_name,
        "UserDefinedName": profile.display_name,
        "VPNType": "IKEv2",
        "IKEv2": ikev2,
        # No IPv4 dictionary: its only key, OverridePrimary, "only applies to Cisco IPsec and
        # L2TP VPN types" (Apple's VPN payload reference, com.apple.vpn.managed), so an IKEv2
        # payload would carry it for nothing. An IKEv2 client routes what the server's traffic
        # selector covers: 0.0.0.0/0 (and ::/0 with VPN_POOL_V6, render.full_tunnel) is the
        # full tunnel, and with VPN_SPLIT_NETS the narrower selector is the split tunnel, with
        # no key here (the profile has none for routes). IncludeAllNetworks (iOS 14, macOS
        # 10.15) is not needed for either and is left off: it would also pull local-network
        # traffic into the tunnel (Apple's default for ExcludeLocalNetworks is 0 on macOS),
        # cutting a Mac off its printers and NAS, and override a split tunnel.
    }


def _root_payload(profile: ProfileInput, ca: x509.Certificate) -> dict[str, Any]:
    return {
        "PayloadType": "com.apple.security.root",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{identifier(profile)}.ca",
        "PayloadUUID": _uuid(profile, "ca"),
        "PayloadDisplayName": _common_name(ca) or "VPN certificate authority",
        "PayloadCertificateFileName": "ca.crt",
        "PayloadContent": ca.public_bytes(Encoding.DER),
    }


def _common_name(ca: x509.Certificate) -> str:
    names = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _uuid(profile: ProfileInput, purpose: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{profile.host}\n{profile.user}\n{purpose}")).upper()


def _reverse_host(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ".".join(reversed(host.split(".")))
    return "ip-" + re.sub(r"[.:]", "-", host)


def _label(user: str) -> str:
    """The user name as one identifier label; names that needed changes get a short hash,
    so that "a.b" and "a-b" stay apart."""
    if _LABEL.fullmatch(user):
        return user
    digest = hashlib.sha256(user.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9-]", "-", user) + "-" + digest
