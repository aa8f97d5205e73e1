"""Build test certificates: CAs, intermediates and leaves with chosen names, usages, dates, keys.

Defaults describe a healthy Let's-Encrypt-like chain at :data:`NOW`; each test changes the
one property it is about.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ikev2_vpn.state.certcheck import load_operator_credentials
from ikev2_vpn.state.credentials import ServerCredentials

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
HOST = "vpn.example.com"  # the name mounted certificates are checked against
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")

KeyKind = Literal["rsa1024", "rsa2048", "p256", "p384", "p224", "ed25519"]


def new_key(kind: KeyKind = "rsa2048") -> CertificateIssuerPrivateKeyTypes:
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curves: dict[str, ec.EllipticCurve] = {
        "p256": ec.SECP256R1(),
        "p384": ec.SECP384R1(),
        "p224": ec.SECP224R1(),
    }
    return ec.generate_private_key(curves[kind])


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, *, password: bytes | None = None, traditional: bool = False) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        fmt = (
            serialization.PrivateFormat.TraditionalOpenSSL
            if traditional
            else serialization.PrivateFormat.PKCS8
        )
        return self.key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _sign(
    builder: x509.CertificateBuilder, key: CertificateIssuerPrivateKeyTypes
) -> x509.Certificate:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    cn: str = "Test Root X1",
    *,
    issuer: Issued | None = None,
    key: KeyKind = "rsa2048",
    not_before: datetime = NOW - timedelta(days=365),
    not_after: datetime = NOW + timedelta(days=3650),
    key_usage: bool = True,
    same_key_as: Issued | None = None,
) -> Issued:
    """A root (``issuer`` None) or an intermediate CA.

    ``key_usage`` False breaks its profile; ``same_key_as`` makes a cross-signed twin.
    """
    private = same_key_as.key if same_key_as else new_key(key)
    signer = issuer.key if issuer else private
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject if issuer else _name(cn))
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    if key_usage:
        builder = builder.add_extension(_key_usage(ca=True), critical=True)
    return Issued(_sign(builder, signer), private)


def make_leaf(
    issuer: Issued | None,
    *,
    dns: Sequence[str] = ("vpn.example.com",),
    ips: Sequence[str] = (),
    cn: str = "vpn.example.com",
    eku: Sequence[ObjectIdentifier] | None = (SERVER_AUTH,),
    key: KeyKind = "rsa2048",
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=60),
) -> Issued:
    """A server certificate; ``issuer`` None makes it self-signed, ``eku`` None omits EKU."""
    private = new_key(key)
    signer = issuer.key if issuer else private
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(
            issuer.cert.subject
            if issuer
            else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        )
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return Issued(_sign(builder, signer), private)


def current_chain(host: str = HOST) -> tuple[Issued, Issued, Issued]:
    """A root, an intermediate and a leaf for ``host`` (P-256) valid now: TLS clients check
    dates against the clock, and :data:`NOW` is fixed."""
    now = datetime.now(UTC)
    start, end = now - timedelta(days=1), now + timedelta(days=60)
    root = make_ca("Test Root", not_before=start, not_after=end)
    intermediate = make_ca("Test Intermediate", issuer=root, not_before=start, not_after=end)
    leaf = make_leaf(intermediate, dns=[host], key="p256", not_before=start, not_after=end)
    return root, intermediate, leaf


def make_csr(cn: str = "vpn.example.com") -> bytes:
    """A certificate signing request: what operators sometimes mount instead of the cert."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    request = x509.CertificateSigningRequestBuilder().subject_name(name)
    return request.sign(new_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Chain:
    root: Issued
    intermediate: Issued
    leaf: Issued

    @property
    def fullchain_pem(self) -> bytes:
        """certbot's fullchain.pem: leaf, then intermediate, no root."""
        return self.leaf.cert_pem + self.intermediate.cert_pem


def le_like_chain(**leaf_options: object) -> Chain:
    """Root -> intermediate -> leaf, shaped like a Let's Encrypt chain."""
    root = make_ca("Test Root X1")
    intermediate = make_ca("Test R10", issuer=root, not_after=NOW + timedelta(days=900))
    leaf = make_leaf(intermediate, **leaf_options)  # type: ignore[arg-type]
    return Chain(root, intermediate, leaf)


def own_ca_credentials(ca_name: str = "VPN Root CA", **leaf_options: object) -> ServerCredentials:
    """What VPN_CERT=self-signed gives charon: a P-256 leaf under the server's own CA."""
    ca = make_ca(ca_name, key="p256")
    leaf = make_leaf(ca, key="p256", **leaf_options)  # type: ignore[arg-type]
    return ServerCredentials(
        leaf=leaf.cert,
        intermediates=(),
        key_pem=leaf.key_pem(),
        key_path=Path("/data/pki/server.key"),
        ca=ca.cert,
    )


def write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


# --- the operator's files (VPN_CERT=files) ---------------------------------------------------


@dataclass(frozen=True)
class Files:
    """What the operator mounted, and where the trust store is."""

    cert: Path
    key: Path
    chain: Path | None
    trust: Path | None
    host: str = HOST
    now: datetime = NOW

    def load(self) -> ServerCredentials:
        return load_operator_credentials(
            self.cert, self.key, self.chain, self.host, now=self.now, trust_store=self.trust
        )


def mount(
    tmp_path: Path,
    leaf: Issued,
    *,
    cert: bytes | None = None,
    chain: bytes | None = None,
    trust: bytes | None = None,
    key: bytes | None = None,
    key_mode: int = 0o600,
    host: str = HOST,
) -> Files:
    """Write the files; ``cert`` defaults to the leaf alone, ``key`` to the leaf's key."""
    directory = tmp_path / "certs"
    directory.mkdir(exist_ok=True)
    return Files(
        cert=write(directory / "fullchain.pem", leaf.cert_pem if cert is None else cert),
        key=write(directory / "privkey.pem", leaf.key_pem() if key is None else key, key_mode),
        chain=write(directory / "chain.pem", chain) if chain is not None else None,
        trust=write(tmp_path / "ca-certificates.crt", trust) if trust is not None else None,
        host=host,
    )
