"""The server's own CA and certificate (VPN_CERT=self-signed).

The CA is made once and then kept until the operator rotates it (:func:`rotate`): users
import ``/data/ca.crt`` on each device, so a restart must never change it. The server
certificate is cheap to replace (clients trust the CA, not the certificate) and is reissued
whenever it no longer fits the host.

A new CA may sign for ``VPN_HOST`` only (critical name constraints) and only certificates
(key usage keyCertSign and cRLSign): its key, which lives in the internet-facing container,
cannot mint a certificate for another site that a client honouring RFC 5280 accepts.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ..defaults import CA_CERT_NAME
from ..errors import ConfigError
from .credentials import ServerCredentials
from .files import atomic_write, ensure_dir, remove_stale_temporaries

log = logging.getLogger(__name__)

RSA_BITS = 3072  # RSA for both: Apple clients have trouble with ECDSA server certificates
# Five years: long enough that devices import a CA rarely, short enough that a copy of
# ca.key in a forgotten backup stops being useful within a device's lifetime; RSA 3072
# stays sound well past that (docs/certificates.md#the-self-signed-ca).
CA_LIFETIME = timedelta(days=1826)
SERVER_LIFETIME = timedelta(days=730)
CLOCK_SKEW = timedelta(hours=1)  # a client whose clock runs behind still accepts a new cert
ORGANIZATION = "ikev2-vpn"
IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")  # RFC 4945; older Windows wants it
CA_WARN_BEFORE = timedelta(days=365)
RETIRED_DIR = "retired"  # in /data/pki: CAs replaced by `ikev2-vpn ca rotate`, kept aside
ROTATE_COMMAND = "ikev2-vpn ca rotate"

_START_OVER = (
    "restore {data}/pki and {data}/ca.crt from a backup, or delete both to start over "
    "(every client must then import the new CA certificate)"
)


def ensure_self_signed(
    data_dir: Path, host: str, *, now: datetime | None = None
) -> ServerCredentials:
    """Load or create the CA and a server certificate for ``host`` under ``data_dir``."""
    now = now or datetime.now(UTC)
    pki = data_dir / "pki"
    ensure_dir(pki, 0o700)
    remove_stale_temporaries(data_dir)
    remove_stale_temporaries(pki)
    ca_cert, ca_key = _ensure_ca(data_dir, host, now)
    server_cert, server_key = _ensure_server(pki, host, ca_cert, ca_key, now)
    return ServerCredentials(
        leaf=server_cert,
        intermediates=(),
        key_pem=_pkcs8(server_key),
        key_path=pki / "server.key",
        ca=ca_cert,
    )


@dataclass(frozen=True)
class Rotation:
    """What ``ikev2-vpn ca rotate`` did."""

    old: x509.Certificate | None  # None: the replaced ca.crt could not be read
    new: x509.Certificate
    retired: Path  # where the old files are kept


def rotate(data_dir: Path, host: str, *, now: datetime | None = None) -> Rotation:
    """Replace the CA and the server certificate with new ones for ``host``.

    The old files are copied to ``pki/retired/<time>-<fingerprint>/`` first (copying them
    back undoes the rotation). Works on a CA that cannot be loaded any more (lost key,
    damaged file, expired, made for another VPN_HOST): that is when it is needed most.
    """
    now = now or datetime.now(UTC)
    pki = data_dir / "pki"
    cert_path, key_path = data_dir / CA_CERT_NAME, pki / "ca.key"
    if not cert_path.exists():
        raise ConfigError(
            str(cert_path),
            "does not exist, so there is no CA to replace",
            "start the server with VPN_CERT=self-signed: the first start makes one",
        )
    old = _read_cert(cert_path)
    label = ca_fingerprint(old).replace(":", "")[:16] if old else "unreadable"
    retired = pki / RETIRED_DIR / f"{now:%Y%m%dT%H%M%SZ}-{label}"
    ensure_dir(pki, 0o700)
    ensure_dir(pki / RETIRED_DIR, 0o700)
    ensure_dir(retired, 0o700)
    for path in (cert_path, key_path, pki / "server.crt", pki / "server.key"):
        if path.is_file():
            private = path.suffix == ".key"
            atomic_write(retired / path.name, path.read_bytes(), 0o600 if private else 0o644)
    # The certificate goes first: ca.key alone is the state of an interrupted first start,
    # so a crash from here on still ends with a new CA at the next start.
    cert_path.unlink()
    key_path.unlink(missing_ok=True)
    new = ensure_self_signed(data_dir, host, now=now).ca
    if new is None:
        raise RuntimeError("ensure_self_signed returned no CA")
    log.info("CA rotated: the previous CA and server certificate are kept in %s", retired)
    return Rotation(old, new, retired)


def ca_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated hex, the form device certificate views show."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


# --- CA -------------------------------------------------------------------------------


def _ensure_ca(
    data_dir: Path, host: str, now: datetime
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert_path, key_path = data_dir / CA_CERT_NAME, data_dir / "pki" / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert, key = _load_ca(data_dir, cert_path, key_path)
        _check_ca_dates(cert, data_dir, now)
        _check_ca_names(cert, host, data_dir)
        log.info("CA reused: %s", describe_ca(cert))
        return cert, key
    if cert_path.exists():
        raise ConfigError(
            str(key_path),
            f"is missing but {cert_path} exists, so the CA clients trust cannot sign any more",
            _START_OVER.format(data=data_dir),
        )
    if key_path.exists():
        # ca.key is written first: a key without a certificate means the first start was
        # killed before ca.crt existed, so no client can have imported this CA yet.
        log.info("found %s without %s (interrupted first start)", key_path, cert_path)
    cert, key = _create_ca(host, now)
    # Key before certificate: a crash in between leaves the recoverable key-only state.
    atomic_write(key_path, _pkcs8(key), 0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("CA created: %s", describe_ca(cert))
    return cert, key


def _load_ca(
    data_dir: Path, cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    start_over = _START_OVER.format(data=data_dir)
    cert = _read_cert(cert_path)
    if cert is None:
        raise ConfigError(str(cert_path), "cannot be read as a PEM certificate", start_over)
    key = _read_rsa_key(key_path)
    if key is None:
        raise ConfigError(str(key_path), "cannot be read as an RSA private key", start_over)
    if not _same_public_key(cert, key):
        raise ConfigError(str(cert_path), f"does not match the key in {key_path}", start_over)
    key_path.chmod(0o600)  # a restore from backup may have loosened it
    return cert, key


def _create_ca(host: str, now: datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    # A random suffix tells two installations' CAs apart in a device's certificate list.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{ORGANIZATION} CA {secrets.token_hex(4)}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(name_constraints(host), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # PKCS#1 v1.5 (the default for RSA): Windows and Apple reject RSA-PSS here.
        .sign(key, hashes.SHA256())
    )
    return cert, key


def name_constraints(host: str) -> x509.NameConstraints:
    """What a CA for ``host`` may sign for: the names of the server certificate, no more.

    A DNS name permits that name (and, by RFC 5280, names under it) and excludes every IP
    address, as the CA/Browser Forum asks of constrained CAs: without the exclusion, IP
    addresses would be unconstrained. An IP address permits that one address (as a /32 or
    /128 subtree) and its text as a DNS name, the form Windows needs in the SAN
    (:func:`_san_for`); every other DNS name is then outside.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(host)],
            excluded_subtrees=[
                x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                x509.IPAddress(ipaddress.ip_network("::/0")),
            ],
        )
    return x509.NameConstraints(
        permitted_subtrees=[
            x509.IPAddress(ipaddress.ip_network(address)),
            x509.DNSName(str(address)),
        ],
        excluded_subtrees=None,
    )


def _permitted_names(cert: x509.Certificate) -> list[str] | None:
    """The names a CA may sign for; None when it has no name constraints (older CAs)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    return [_subtree_text(name) for name in constraints.permitted_subtrees or ()]


def _subtree_text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.IPAddress) and isinstance(
        name.value, ipaddress.IPv4Network | ipaddress.IPv6Network
    ):
        network = name.value
        single = network.prefixlen == network.max_prefixlen
        return str(network.network_address) if single else str(network)
    return str(name.value)


def _ca_may_sign_for(cert: x509.Certificate, host: str) -> bool:
    """Whether ``host``'s server certificate fits the CA's name constraints (none: yes)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return True
    return all(
        _subtrees_allow(constraints.permitted_subtrees, name, default=True)
        and not _subtrees_allow(constraints.excluded_subtrees, name, default=False)
        for name in _san_for(host)
    )


def _subtrees_allow(
    subtrees: list[x509.GeneralName] | None, name: x509.GeneralName, *, default: bool
) -> bool:
    """RFC 5280 4.2.1.10 for the two kinds of name the server certificate carries: a
    subtree list without an entry of the name's kind does not constrain it (``default``)."""
    same_kind = [subtree for subtree in subtrees or () if type(subtree) is type(name)]
    if not same_kind:
        return default
    if isinstance(name, x509.IPAddress):
        return any(name.value in subtree.value for subtree in same_kind)
    text = str(name.value).lower().rstrip(".")
    for subtree in same_kind:
        base = str(subtree.value).lower().rstrip(".")
        if text == base or text.endswith("." + base.lstrip(".")):
            return True
    return False


def _check_ca_names(cert: x509.Certificate, host: str, data_dir: Path) -> None:
    """A constrained CA cannot sign for another host: clients would reject the certificate,
    so the start stops rather than serve it. A CA without constraints (made before they
    existed) keeps working for every device that trusts it; the log suggests rotating."""
    permitted = _permitted_names(cert)
    if permitted is None:
        log.warning(
            "the CA in %s has no name constraints, so its key (%s) could sign for any site "
            "its devices visit; replace it when convenient with `%s` (docs/certificates.md)",
            data_dir / CA_CERT_NAME,
            data_dir / "pki" / "ca.key",
            ROTATE_COMMAND,
        )
        return
    if not _ca_may_sign_for(cert, host):
        raise ConfigError(
            "VPN_HOST",
            f"{host} is not a name the CA in {data_dir / CA_CERT_NAME} may sign for "
            f"(only {', '.join(permitted)}), so clients would reject the server",
            f"set VPN_HOST back, or make a CA for {host} with `{ROTATE_COMMAND}` in a one-off "
            "container (docs/certificates.md#rotating-the-ca); every device must then "
            "import the new CA",
        )


def describe_ca(cert: x509.Certificate) -> str:
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    label = str(name[0].value) if name else cert.subject.rfc4514_string()
    expiry = cert.not_valid_after_utc.date().isoformat()
    return f"{label}, SHA-256 {ca_fingerprint(cert)}, expires {expiry}"


def _check_ca_dates(cert: x509.Certificate, data_dir: Path, now: datetime) -> None:
    """Say so a year before clients start failing, and stop once they have."""
    expiry = cert.not_valid_after_utc.date().isoformat()
    if now >= cert.not_valid_after_utc:
        raise ConfigError(
            str(data_dir / CA_CERT_NAME),
            f"the CA expired on {expiry}, so no client accepts this server any more",
            f"replace it with `{ROTATE_COMMAND}` in a one-off container "
            "(docs/certificates.md#rotating-the-ca); every device must then import the new CA",
        )
    if cert.not_valid_after_utc - now < CA_WARN_BEFORE:
        log.warning(
            "the CA expires on %s; replace it with `%s` and have every device import the "
            "new CA (docs/certificates.md#rotating-the-ca)",
            expiry,
            ROTATE_COMMAND,
        )


# --- server certificate ------------------------------------------------------------------


def _ensure_server(
    pki: Path,
    host: str,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    now: datetime,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert_path, key_path = pki / "server.crt", pki / "server.key"
    cert = _read_cert(cert_path)
    key = _read_rsa_key(key_path)
    if cert is None or key is None:
        reason: str | None = "missing"
    else:
        reason = _unusable_reason(cert, key, ca_cert) or _outdated_reason(cert, host, now)
        if reason is None:
            key_path.chmod(0o600)
            log.info("server certificate for %s reused, %s", host, _expiry(cert))
            return cert, key
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    cert = _issue_server(host, key, ca_cert, ca_key, now)
    # Key first: a crash in between leaves a key mismatch, which the next start repairs.
    atomic_write(key_path, _pkcs8(key), 0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("server certificate for %s issued (%s), %s", host, reason, _expiry(cert))
    return cert, key


def _unusable_reason(
    cert: x509.Certificate, key: rsa.RSAPrivateKey, ca_cert: x509.Certificate
) -> str | None:
    if not _same_public_key(cert, key):
        return "key mismatch"
    if not _issued_by(cert, ca_cert):
        return "issued by another CA"
    return None


def _outdated_reason(cert: x509.Certificate, host: str, now: datetime) -> str | None:
    if _names(cert) != set(_san_for(host)):
        return f"host changed from {_dialled_name(cert)} to {host}"
    if now < cert.not_valid_before_utc:
        return "not valid yet, the clock went back"
    # Renew with a third of the lifetime left, so a server restarted now and then never
    # runs into the expiry date.
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    expiry = cert.not_valid_after_utc.date().isoformat()
    if now >= cert.not_valid_after_utc:
        return f"expired on {expiry}"
    if cert.not_valid_after_utc - now <= lifetime / 3:
        return f"expires soon, on {expiry}"
    return None


def _issue_server(
    host: str,
    key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    now: datetime,
) -> x509.Certificate:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    # Never outlive the CA: clients would reject the certificate once the CA expires anyway.
    not_after = min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_server_subject(host))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(_san_for(host)), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, IKE_INTERMEDIATE]),
            critical=False,
        )
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _server_subject(host: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
    if len(host) <= 64:  # the CN's upper bound; clients only look at the SAN anyway
        attributes.insert(0, x509.NameAttribute(NameOID.COMMON_NAME, host))
    return x509.Name(attributes)


def _san_for(host: str) -> list[x509.GeneralName]:
    """The SAN entries clients dialling ``host`` need (docs/clients.md).

    An IP address goes in twice: as an IP entry, and as a DNS entry with its text, without
    which Windows fails with error 13801.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [x509.DNSName(host)]
    return [x509.IPAddress(address), x509.DNSName(str(address))]


def _names(cert: x509.Certificate) -> set[x509.GeneralName]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san)


def _dialled_name(cert: x509.Certificate) -> str:
    """The host an earlier certificate was made for, for the log line."""
    names = sorted(str(name.value) for name in _names(cert))
    return ", ".join(names) if names else cert.subject.rfc4514_string()


def _expiry(cert: x509.Certificate) -> str:
    return f"expires {cert.not_valid_after_utc.date().isoformat()}"


# --- helpers ---------------------------------------------------------------------------


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _read_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _read_rsa_key(path: Path) -> rsa.RSAPrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, rsa.RSAPrivateKey) else None


def _same_public_key(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _pkcs8(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
