"""A certificate chain long enough that the server's IKE_AUTH answer needs IKE fragmentation.

Root, two RSA-4096 intermediates and an RSA-4096 server certificate for an IP address: the
server sends all but the root, some 4 KB, well above the 1280-byte fragments strongSwan
makes, so on an MTU 1400 link the connection works only if fragmentation does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ChainFiles:
    fullchain_pem: bytes  # server, intermediates, root
    key_pem: bytes
    root_pem: bytes  # what the client trusts


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not ca,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _issue(
    cn: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None,
    *,
    ca: bool,
    address: str | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    signer = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer[0].subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_usage(ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    if address is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    return builder.sign(signer, hashes.SHA256())


def long_chain(address: str) -> ChainFiles:
    """Root -> intermediate -> intermediate -> server certificate for ``address``."""
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _issue("ikev2-vpn VM lab root", root_key, None, ca=True)
    issuer = (root, root_key)
    intermediates = []
    for number in (1, 2):
        key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        cert = _issue(f"ikev2-vpn VM lab intermediate {number}", key, issuer, ca=True)
        intermediates.append(cert)
        issuer = (cert, key)
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    server = _issue(address, server_key, issuer, ca=False, address=address)
    pem = serialization.Encoding.PEM
    chain = [server, *reversed(intermediates), root]
    return ChainFiles(
        fullchain_pem=b"".join(cert.public_bytes(pem) for cert in chain),
        key_pem=server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        root_pem=root.public_bytes(pem),
    )
