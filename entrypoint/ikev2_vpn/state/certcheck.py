"""The operator's own certificate (VPN_CERT=files), checked before charon ever sees it.

Every check answers a question an operator would otherwise answer by reading
``swanctl --list-certs`` after a client failed: is it the right file, does the key belong to
it, is it valid today, will Apple and Windows accept it for this host, is the chain complete.
Each failure is one :class:`ConfigError` naming the file's setting and what to do.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, Subject, VerificationError

from ..errors import ConfigError
from .credentials import ServerCredentials

log = logging.getLogger(__name__)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CERT = "VPN_CERT_PATH"
KEY = "VPN_KEY_PATH"
CHAIN = "VPN_CHAIN_PATH"
SYSTEM_TRUST_STORE = Path("/etc/ssl/certs/ca-certificates.crt")
EXPIRY_WARNING = timedelta(days=14)
MIN_RSA_BITS = 2048
SUPPORTED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
MAX_CHAIN_LENGTH = 8

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_END = re.compile(rb"-----END ([A-Z0-9 ]+)-----")
_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
_CERT_LABELS = {"CERTIFICATE", "X509 CERTIFICATE"}
_KEY_LABELS = {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"}
_WHAT_IT_IS = {
    "CERTIFICATE REQUEST": "a certificate signing request (CSR)",
    "NEW CERTIFICATE REQUEST": "a certificate signing request (CSR)",
    "PUBLIC KEY": "a public key",
    "RSA PUBLIC KEY": "a public key",
    "X509 CRL": "a certificate revocation list",
    "PKCS7": "a PKCS#7 bundle",
    "OPENSSH PRIVATE KEY": "an OpenSSH private key",
    "EC PARAMETERS": "EC parameters",
    "CERTIFICATE": "a certificate",
}
_FILE_HINT = {
    CERT: "point VPN_CERT_PATH at the certificate (with certbot: fullchain.pem)",
    KEY: "point VPN_KEY_PATH at the private key (with certbot: privkey.pem)",
    CHAIN: "point VPN_CHAIN_PATH at the intermediate certificates (with certbot: chain.pem)",
}


@dataclass(frozen=True)
class _Pem:
    label: str
    text: bytes  # the whole block, BEGIN and END lines included


def load_operator_credentials(
    cert_path: Path,
    key_path: Path,
    chain_path: Path | None,
    host: str,
    *,
    now: datetime | None = None,
    trust_store: Path | None = SYSTEM_TRUST_STORE,
) -> ServerCredentials:
    """Load and check the operator's certificate, chain and key for clients dialling ``host``.

    ``trust_store`` holds the roots a chain may end in besides self-signed roots included in
    the files; None accepts only the latter.
    """
    now = now or datetime.now(UTC)
    leaf, *rest = _read_certificates(CERT, cert_path)
    extra = _read_certificates(CHAIN, chain_path) if chain_path else []
    key = _read_private_key(key_path)
    _check_key(leaf, key, [leaf, *rest])
    _check_dates(CERT, "the certificate", leaf, now)
    _check_server_auth(leaf)
    _check_host(leaf, host)
    chain_setting = CHAIN if chain_path else CERT
    files_roots = [cert for cert in [*rest, *extra] if _self_signed(cert)]
    intermediates = _to_send(leaf, [*rest, *extra])
    anchors = [*files_roots, *_read_trust_store(trust_store)]
    anchor = _follow_chain(leaf, intermediates, anchors, chain_setting, now)
    _validate_path(leaf, intermediates, anchor, host=host, now=now, setting=chain_setting)
    _report(leaf, key, anchor, host, now)
    return ServerCredentials(
        leaf=leaf,
        intermediates=intermediates,
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        key_path=key_path,
        ca=None,
    )


# --- reading files ---------------------------------------------------------------------


def _read_file(setting: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(setting, *_not_found(path)) from None
    except PermissionError:
        raise ConfigError(
            setting, f"{path} is not readable", "make it readable by the container's root user"
        ) from None
    except IsADirectoryError:
        raise ConfigError(setting, f"{path} is a directory", _FILE_HINT[setting]) from None
    except OSError as error:  # a name too long, a file as a directory on the way, ...
        raise ConfigError(
            setting, f"{path} cannot be read ({error.strerror})", _FILE_HINT[setting]
        ) from None
    if not data.strip():
        raise ConfigError(setting, f"{path} is empty", _FILE_HINT[setting])
    return data


def _not_found(path: Path) -> tuple[str, str]:
    if path.is_symlink():
        # certbot's live/ directory holds symlinks into ../../archive: mounting live/ alone
        # leaves them dangling.
        return (
            f"{path} is a symlink to {path.readlink()}, which is not in the container",
            "mount the directory holding the target too (with certbot: all of /etc/letsencrypt)",
        )
    return f"{path} does not exist", "mount the file into the container or correct the path"


def _pem_blocks(setting: str, path: Path) -> list[_Pem]:
    data = _read_file(setting, path)
    blocks = [_Pem(m.group(1).decode(), m.group(0)) for m in _BLOCK.finditer(data)]
    begins = len(_BEGIN.findall(data))
    if begins == 0:
        raise ConfigError(
            setting,
            f"{path} is not PEM text (no -----BEGIN line); it may be DER or PKCS#12",
            "convert it to PEM, e.g. openssl x509 -inform der (certificates), "
            "openssl pkey -inform der (keys) or openssl pkcs12 -nodes (.p12/.pfx)",
        )
    if begins > len(blocks):
        raise ConfigError(
            setting,
            f"{path} is cut off: a -----BEGIN block has no matching -----END line",
            "copy the complete file again",
        )
    if len(_END.findall(data)) > len(blocks):
        # The first line of a block lost in copying: the blocks after it would otherwise be
        # read as if they were the whole file (an intermediate taken for the certificate).
        raise ConfigError(
            setting,
            f"{path} is damaged: an -----END line has no matching -----BEGIN line",
            "copy the complete file again",
        )
    return blocks


def _describe(blocks: Sequence[_Pem]) -> str:
    kinds = [
        "a private key" if block.label in _KEY_LABELS else _WHAT_IT_IS.get(block.label, "")
        for block in blocks
    ]
    known = sorted({kind for kind in kinds if kind})
    return " and ".join(known) or f"'{blocks[0].label}'"


def _read_certificates(setting: str, path: Path) -> list[x509.Certificate]:
    blocks = _pem_blocks(setting, path)
    pems = [block for block in blocks if block.label in _CERT_LABELS]
    if not pems:
        raise ConfigError(
            setting, f"{path} holds {_describe(blocks)}, not a certificate", _FILE_HINT[setting]
        )
    certs = []
    for number, pem in enumerate(pems, start=1):
        try:
            certs.append(_parsed(x509.load_pem_x509_certificate(pem.text)))
        except (ValueError, TypeError, KeyError, UnsupportedAlgorithm):
            raise ConfigError(
                setting,
                f"certificate {number} in {path} is damaged (it does not decode)",
                "copy the file again from the CA",
            ) from None
    return certs


def _parsed(cert: x509.Certificate) -> x509.Certificate:
    """``cert`` with every part the checks read decoded now: the library decodes lazily, so a
    damaged byte would otherwise surface later, as a traceback from some other check."""
    for name in (cert.subject, cert.issuer):
        _dn_of(name)
    list(cert.extensions)
    cert.public_key()
    _ = cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_hash_algorithm
    return cert


def _read_private_key(path: Path) -> PrivateKeyTypes:
    _check_key_mode(path)
    blocks = _pem_blocks(KEY, path)
    keys = [block for block in blocks if block.label in _KEY_LABELS]
    if not keys:
        raise ConfigError(
            KEY, f"{path} holds {_describe(blocks)}, not a private key", _FILE_HINT[KEY]
        )
    if len(keys) > 1:
        raise ConfigError(
            KEY, f"{path} holds {len(keys)} private keys", "keep only the server certificate's key"
        )
    pem = keys[0]
    # PKCS#8 says so in its label, OpenSSL's legacy format in a Proc-Type header.
    if pem.label == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in pem.text:
        raise ConfigError(
            KEY,
            f"{path} is encrypted with a passphrase, which charon cannot be given at start",
            "provide an unencrypted key (openssl pkey -in encrypted.key -out server.key)",
        )
    try:
        return serialization.load_pem_private_key(pem.text, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The library's message is not passed on: it could quote the key's bytes.
        raise ConfigError(
            KEY, f"{path} does not decode as a private key", "copy the key file again"
        ) from None


def _check_key_mode(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(KEY, *_not_found(path)) from None
    except OSError:
        return  # reading it reports the problem
    if stat.S_ISREG(mode) and mode & 0o004:
        raise ConfigError(
            KEY,
            f"{path} is readable by every user on the host (mode {mode & 0o777:04o})",
            f"chmod 600 {path} (on Kubernetes: defaultMode 0600 or 0640 on the secret volume)",
        )


def _read_trust_store(path: Path | None) -> list[x509.Certificate]:
    if path is None:
        return []
    try:
        data = path.read_bytes()
    except OSError:
        log.warning("trust store %s is unreadable; only roots in the files are trusted", path)
        return []
    roots = []
    for match in _BLOCK.finditer(data):
        try:
            roots.append(x509.load_pem_x509_certificate(match.group(0)))
        except ValueError:
            continue  # one odd root must not stop the server
    return roots


# --- the leaf and its key ----------------------------------------------------------------


def _check_key(
    leaf: x509.Certificate,
    key: PrivateKeyTypes,
    certs: Sequence[x509.Certificate],
) -> None:
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise ConfigError(
            KEY,
            "the key does not belong to the certificate in VPN_CERT_PATH",
            _key_mismatch_fix(key, certs),
        )
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= MIN_RSA_BITS:
        return
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in SUPPORTED_CURVES:
        return
    raise ConfigError(
        KEY,
        f"the certificate's key is {_key_kind(key)}, which native VPN clients do not support",
        f"have it reissued with an RSA key of at least {MIN_RSA_BITS} bits",
    )


def _key_mismatch_fix(key: PrivateKeyTypes, certs: Sequence[x509.Certificate]) -> str:
    for number, cert in enumerate(certs[1:], start=2):
        if _spki(cert.public_key()) == _spki(key.public_key()):
            return (
                f"it matches certificate {number} in VPN_CERT_PATH: put the server "
                "certificate first, followed by its intermediates"
            )
    return "use the key the certificate was issued for (with certbot: privkey.pem)"


def _spki(public_key: PublicKeyTypes) -> bytes:
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public_key.public_bytes(*spki)


def _key_kind(key: PrivateKeyTypes) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"ECDSA {SUPPORTED_CURVES.get(key.curve.name, key.curve.name)}"
    return type(key).__name__.removesuffix("PrivateKey").removeprefix("_")


_RENEW = "renew it (with certbot: certbot renew) and restart the container"
_NEW_INTERMEDIATE = (
    "use the intermediate your CA issues today (with certbot: the fullchain.pem of the "
    "latest renewal)"
)


def _check_dates(
    setting: str, what: str, cert: x509.Certificate, now: datetime, renew: str = _RENEW
) -> None:
    if now < cert.not_valid_before_utc:
        raise ConfigError(
            setting,
            f"{what} is not valid until {_when(cert.not_valid_before_utc)}",
            "check the server's clock, or use the certificate from before the renewal",
        )
    if now > cert.not_valid_after_utc:
        raise ConfigError(setting, f"{what} expired on {_when(cert.not_valid_after_utc)}", renew)


def _check_server_auth(leaf: x509.Certificate) -> None:
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and ExtendedKeyUsageOID.SERVER_AUTH in usages:
        return
    has = "has no Extended Key Usage" if usages is None else "lacks Extended Key Usage serverAuth"
    raise ConfigError(
        CERT,
        f"the certificate {has}, so macOS, iOS and Windows reject it",
        "have it issued with extendedKeyUsage serverAuth (1.3.6.1.5.5.7.3.1)",
    )


def _check_host(leaf: x509.Certificate, host: str) -> None:
    dns, ips = _alt_names(leaf)
    address = _ip_address(host)
    if address is None and any(_dns_matches(pattern, host) for pattern in dns):
        return
    if address is not None and address in ips:
        if str(address) not in dns:
            log.warning(
                "the certificate lists %s as an IP address but not as a DNS name; Windows "
                "may fail with error 13801 (add it as both, or have clients dial a DNS name)",
                address,
            )
        return
    if host in _common_names(leaf):
        problem = (
            f"the certificate names {host} only in its CN, which iOS 13+ and macOS 10.15+ ignore"
        )
    else:
        listed = ", ".join([*dns, *map(str, ips)]) or "nothing"
        problem = f"the certificate does not cover {host} (its subjectAltName lists {listed})"
    kind = "an IP address" if address else "a DNS name"
    raise ConfigError(
        CERT,
        problem,
        f"have it issued with {host} as {kind} in subjectAltName, "
        "or set VPN_HOST to a name it covers",
    )


def _alt_names(cert: x509.Certificate) -> tuple[list[str], list[IPAddress]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName)]
    ips = [
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
    ]
    return dns, ips


def _dns_matches(pattern: str, host: str) -> bool:
    """RFC 6125 matching as clients do it: a wildcard stands for exactly one leftmost label."""
    host = host.lower().rstrip(".")
    if not pattern.startswith("*."):
        return pattern == host
    label, dot, parent = host.partition(".")
    return bool(label and dot) and parent == pattern[2:]


def _ip_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _common_names(cert: x509.Certificate) -> set[str]:
    return {
        str(attribute.value).lower().rstrip(".")
        for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    }


# --- the chain -------------------------------------------------------------------------


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and _signed_by(cert, cert)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _to_send(
    leaf: x509.Certificate, certs: Iterable[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """Intermediates for charon to send: deduplicated, without the leaf and without roots.

    Clients already have the root (or import it) and ignore a copy sent by the server.
    """
    seen = {leaf}
    chain = []
    for cert in certs:
        if cert not in seen and not _self_signed(cert):
            seen.add(cert)
            chain.append(cert)
    return tuple(chain)


def _follow_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    setting: str,
    now: datetime,
) -> x509.Certificate:
    """Walk issuer by issuer from the leaf to a trust anchor and return the anchor.

    The library's path validation below only says that no path exists; walking it here
    first names the link that is missing or broken.
    """
    if _self_signed(leaf):
        raise ConfigError(
            CERT,
            "the certificate is self-signed, so clients cannot verify it",
            "use VPN_CERT=self-signed to let the server run its own CA, or a CA-issued one",
        )
    current = leaf
    for _ in range(MAX_CHAIN_LENGTH):
        anchor = _issuer_among(current, anchors)
        if anchor is not None:
            return anchor
        issuer = _issuer_among(current, intermediates)
        if issuer is None:
            raise _missing_issuer(current, intermediates, setting, anchors)
        what = f"the intermediate '{_dn(issuer)}'"
        _check_dates(setting, what, issuer, now, _NEW_INTERMEDIATE)
        current = issuer
    raise ConfigError(
        setting,
        f"the chain is longer than {MAX_CHAIN_LENGTH} certificates or loops",
        "provide only the server certificate's own intermediates",
    )


def _issuer_among(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if (
            candidate is not cert
            and candidate.subject == cert.issuer
            and _signed_by(cert, candidate)
        ):
            return candidate
    return None


def _missing_issuer(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    setting: str,
    anchors: Sequence[x509.Certificate],
) -> ConfigError:
    if any(candidate.subject == cert.issuer for candidate in [*intermediates, *anchors]):
        return ConfigError(
            setting,
            f"'{_dn(cert)}' was not signed by the '{_dn_of(cert.issuer)}' certificate provided "
            "(same name, different key: another generation of that CA)",
            "use the intermediate that came with the certificate (with certbot: fullchain.pem)",
        )
    return ConfigError(
        setting,
        f"the chain is incomplete: no certificate for '{_dn_of(cert.issuer)}', the issuer of "
        f"'{_dn(cert)}', in the files or the trust store",
        "add that CA certificate to VPN_CHAIN_PATH (with certbot: use fullchain.pem as "
        "VPN_CERT_PATH; for a private CA include its root)",
    )


def _validate_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchor: x509.Certificate,
    *,
    host: str,
    now: datetime,
    setting: str,
) -> None:
    """Full RFC 5280 path validation by the library, after the specific checks above passed.

    What can still fail here are profile rules clients also enforce, e.g. a CA certificate
    without keyUsage keyCertSign or a SHA-1 signature.
    """
    address = _ip_address(host)
    subject: Subject = x509.DNSName(host) if address is None else x509.IPAddress(address)
    verifier = PolicyBuilder().store(Store([anchor])).time(now).build_server_verifier(subject)
    try:
        verifier.verify(leaf, list(intermediates))
    except VerificationError as exc:
        # The library nests its reason, e.g. 'CandidatesExhausted(Other("..."))'.
        reason = (re.findall(r'"([^"]+)"', str(exc)) or [str(exc)])[-1]
        raise ConfigError(
            setting,
            f"the chain fails path validation: {' '.join(reason.split())}",
            "clients would reject it too; every CA certificate needs basicConstraints CA:TRUE "
            "and keyUsage keyCertSign, and signatures SHA-256 or better",
        ) from None


def _report(
    leaf: x509.Certificate, key: PrivateKeyTypes, anchor: x509.Certificate, host: str, now: datetime
) -> None:
    log.info(
        "server certificate for %s from %s, %s, expires %s, root '%s'",
        host,
        _dn_of(leaf.issuer),
        _key_kind(key),
        _when(leaf.not_valid_after_utc),
        _dn(anchor),
    )
    if isinstance(key, ec.EllipticCurvePrivateKey):
        log.warning(
            "the certificate has an ECDSA key; Apple clients have trouble with ECDSA server "
            "certificates, an RSA certificate is recommended (certbot: --key-type rsa)"
        )
    if leaf.not_valid_after_utc - now < EXPIRY_WARNING:
        log.warning(
            "the certificate expires on %s; renew it and restart the container",
            _when(leaf.not_valid_after_utc),
        )


def _dn(cert: x509.Certificate) -> str:
    return _dn_of(cert.subject)


def _dn_of(name: x509.Name) -> str:
    return name.rfc4514_string()


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
