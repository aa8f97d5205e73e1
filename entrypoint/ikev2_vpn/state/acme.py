"""Certificates from an ACME CA (VPN_CERT=letsencrypt): obtained over HTTP-01, kept in /data.

The ACME protocol is the ``acme`` library's (certbot's); this module decides what to ask
for, where to keep it and how to explain a refusal. Layout under ``/data/acme``::

    accounts/<directory id>/key.pem    account key (0600), one account per ACME directory
    accounts/<directory id>/account.json   the account's URL and directory, for people
    certs/<stamp>/                     one issued certificate: cert.pem, chain.pem,
                                       privkey.pem (0600), order.json
    live -> certs/<stamp>              the certificate in use, switched atomically
    failures.json                      failed issuances in a row (restart back-off)

A certificate directory is complete and synced before ``live`` points at it, so a kill at
any moment leaves the old certificate in use or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .. import defaults
from ..errors import ConfigError
from ..settings import KeyType, Settings
from . import http01
from .credentials import ServerCredentials
from .files import atomic_write, ensure_dir

if TYPE_CHECKING:
    from acme import client, messages

# The acme library and requests (about 10 MB of resident memory in the long-running
# entrypoint) are imported only by the functions that talk to a CA.

log = logging.getLogger(__name__)

USER_AGENT = "ikev2-vpn (acme-python)"
LIVE = "live"
KEEP_OLD = 1  # certificate directories kept besides the live one (to look back at)


@dataclass(frozen=True)
class AcmeRequest:
    """What to ask the CA for, from the settings."""

    host: str
    directory: str
    email: str | None
    ca_bundle: Path | None
    key_type: KeyType
    data_dir: Path = defaults.DATA_DIR
    http_port: int = defaults.ACME_HTTP_PORT

    @classmethod
    def from_settings(cls, settings: Settings, host: str) -> AcmeRequest:
        return cls(
            host=host,
            directory=settings.acme_directory,
            email=settings.acme_email,
            ca_bundle=settings.acme_ca_bundle,
            key_type=settings.acme_key_type,
        )

    @property
    def root(self) -> Path:
        return self.data_dir / defaults.ACME_DIR_NAME

    @property
    def directory_id(self) -> str:
        """A readable, stable folder name per ACME directory URL."""
        host = urlsplit(self.directory).hostname or "acme"
        digest = hashlib.sha256(self.directory.encode()).hexdigest()[:10]
        return f"{re.sub(r'[^A-Za-z0-9.-]', '_', host)}-{digest}"


@dataclass(frozen=True)
class Issued:
    """A certificate from the CA, as stored under ``certs/<stamp>``."""

    credentials: ServerCredentials
    directory: str
    path: Path

    @property
    def leaf(self) -> x509.Certificate:
        return self.credentials.leaf

    def renew_at(self) -> datetime:
        return renew_at(self.leaf)


def renew_at(leaf: x509.Certificate) -> datetime:
    """When a third of the lifetime is left (works for 90-day and 6-day certificates alike)."""
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    return leaf.not_valid_after_utc - lifetime * defaults.ACME_RENEW_FRACTION


def lifetime_of(leaf: x509.Certificate) -> timedelta:
    return leaf.not_valid_after_utc - leaf.not_valid_before_utc


# --- the certificate in use -------------------------------------------------------------


def load_live(request: AcmeRequest, now: datetime | None = None) -> Issued | None:
    """The stored certificate if it is still usable for ``request``, else None (with a log
    line saying why a new one is needed)."""
    now = now or datetime.now(UTC)
    live = request.root / LIVE
    if not live.exists():
        return None
    try:
        issued = _read_issued(live.resolve())
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ACME: the stored certificate in %s is unreadable (%s)", live, exc)
        return None
    if issued.directory != request.directory:
        log.info("ACME: the stored certificate comes from another CA; a new one is needed")
        return None
    if request.host not in _dns_names(issued.leaf):
        log.info("ACME: the stored certificate is not for %s; a new one is needed", request.host)
        return None
    if issued.leaf.not_valid_after_utc <= now:
        log.info(
            "ACME: the stored certificate expired on %s; a new one is needed",
            when(issued.leaf.not_valid_after_utc),
        )
        return None
    return issued


def _read_issued(folder: Path) -> Issued:
    order = json.loads((folder / "order.json").read_text())
    leaf = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    chain_pem = (folder / "chain.pem").read_bytes()
    chain = tuple(x509.load_pem_x509_certificates(chain_pem)) if chain_pem.strip() else ()
    key_pem = (folder / "privkey.pem").read_bytes()
    key = serialization.load_pem_private_key(key_pem, password=None)
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise ValueError("the private key does not belong to the certificate")
    credentials = ServerCredentials(
        leaf=leaf,
        intermediates=chain,
        key_pem=key_pem,
        # Through the live link: whoever follows it later reads the current key.
        key_path=folder.parent.parent / LIVE / "privkey.pem",
    )
    return Issued(credentials=credentials, directory=str(order["directory"]), path=folder)


# --- issuing ----------------------------------------------------------------------------


def obtain(request: AcmeRequest, now: datetime | None = None) -> Issued:
    """Order a certificate for ``request.host`` over HTTP-01, store it and make it live.

    Every failure becomes a ConfigError naming the setting to look at.
    """
    started = datetime.now(UTC)
    try:
        issued = _obtain(request, now or started)
    except ConfigError:
        raise
    except Exception as exc:
        raise explain(exc, request) from None
    log.info(
        "ACME: obtained a certificate for %s from %s in %.1f s (valid until %s, renewal from %s)",
        request.host,
        urlsplit(request.directory).hostname,
        (datetime.now(UTC) - started).total_seconds(),
        when(issued.leaf.not_valid_after_utc),
        when(issued.renew_at()),
    )
    return issued


def _obtain(request: AcmeRequest, now: datetime) -> Issued:
    from acme import challenges, crypto_util, messages

    acme = _client(request)
    key = _new_key(request.key_type)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    order = acme.new_order(crypto_util.make_csr(key_pem, [request.host]))
    answers: dict[str, str] = {}
    to_answer = []
    for authz in order.authorizations:
        if authz.body.status == messages.STATUS_VALID:
            continue  # validated recently (the CA reuses authorizations)
        challenge = next(
            (c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None
        )
        if challenge is None:
            raise ConfigError(
                "ACME_DIRECTORY",
                "the CA offers no HTTP-01 challenge for this name",
                "use a CA that validates over HTTP-01 (Let's Encrypt does)",
            )
        response, validation = challenge.response_and_validation(acme.net.key)
        answers[challenge.chall.path] = validation
        to_answer.append((challenge, response))
    # acme compares naive local times
    deadline = datetime.now() + timedelta(seconds=defaults.ACME_ORDER_TIMEOUT_S)
    with http01.responder(request.http_port, answers):
        for challenge, response in to_answer:
            acme.answer_challenge(challenge, response)
        order = acme.poll_and_finalize(order, deadline)
    chain = x509.load_pem_x509_certificates(order.fullchain_pem.encode())
    return _store(request, key_pem, chain, now)


def _client(request: AcmeRequest) -> client.ClientV2:
    from acme import client, messages
    from acme import errors as acme_errors
    from josepy.jwk import JWKRSA

    key_path = request.root / "accounts" / request.directory_id / "key.pem"
    account_key = _account_key(key_path)
    # requests takes a CA bundle path where acme's signature says bool.
    verify = cast(bool, str(request.ca_bundle)) if request.ca_bundle else True
    net = client.ClientNetwork(
        JWKRSA(key=account_key),
        user_agent=USER_AGENT,
        verify_ssl=verify,
        timeout=defaults.ACME_TIMEOUT_S,
    )
    directory = client.ClientV2.get_directory(request.directory, net)
    acme = client.ClientV2(directory, net)
    if acme.external_account_required():
        raise ConfigError(
            "ACME_DIRECTORY",
            "this CA requires external account binding (EAB), which this image does not do",
            "use a CA without EAB, such as Let's Encrypt",
        )
    registration = messages.NewRegistration.from_data(
        email=request.email, terms_of_service_agreed=True
    )
    try:
        account = acme.new_account(registration)
        log.info("ACME: registered a new account at %s", urlsplit(request.directory).hostname)
    except acme_errors.ConflictError as existing:  # this key has an account already
        account = messages.RegistrationResource(uri=existing.location, body=registration)
        net.account = account
    atomic_write(
        key_path.parent / "account.json",
        json.dumps(
            {"directory": request.directory, "account": account.uri, "email": request.email},
            indent=2,
        ).encode(),
        mode=0o600,
    )
    return acme


def _account_key(path: Path) -> rsa.RSAPrivateKey:
    ensure_dir(path.parent, 0o700)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            return key
        raise ConfigError(
            str(path), "is not an RSA account key", "delete it to register a new account"
        )
    key = rsa.generate_private_key(public_exponent=65537, key_size=defaults.ACME_ACCOUNT_KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(path, pem, mode=0o600)
    return key


def _new_key(key_type: KeyType) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    match key_type:
        case KeyType.RSA_2048:
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        case KeyType.RSA_3072:
            return rsa.generate_private_key(public_exponent=65537, key_size=3072)
        case KeyType.ECDSA_P256:
            return ec.generate_private_key(ec.SECP256R1())
        case KeyType.ECDSA_P384:
            return ec.generate_private_key(ec.SECP384R1())


def _store(
    request: AcmeRequest, key_pem: bytes, chain: list[x509.Certificate], now: datetime
) -> Issued:
    if not chain:
        raise ConfigError("ACME_DIRECTORY", "the CA returned no certificate", "try again later")
    leaf, intermediates = chain[0], chain[1:]
    key = serialization.load_pem_private_key(key_pem, password=None)
    if _spki(leaf.public_key()) != _spki(key.public_key()) or request.host not in _dns_names(leaf):
        raise ConfigError(
            "ACME_DIRECTORY",
            "the CA returned a certificate that does not match the request",
            "report this to the CA; nothing was changed",
        )
    certs = request.root / "certs"
    ensure_dir(certs, 0o700)
    name = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{leaf.serial_number:x}"[:48]
    staging = certs / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    pem = serialization.Encoding.PEM
    atomic_write(staging / "cert.pem", leaf.public_bytes(pem), mode=0o644)
    atomic_write(
        staging / "chain.pem", b"".join(c.public_bytes(pem) for c in intermediates), mode=0o644
    )
    atomic_write(staging / "privkey.pem", key_pem, mode=0o600)
    atomic_write(
        staging / "order.json",
        json.dumps(
            {
                "directory": request.directory,
                "host": request.host,
                "issued": now.isoformat(),
                "serial": f"{leaf.serial_number:x}",
                "not_after": leaf.not_valid_after_utc.isoformat(),
            },
            indent=2,
        ).encode(),
        mode=0o644,
    )
    final = certs / name
    staging.rename(final)
    _fsync_dir(certs)
    _switch_live(request.root, Path("certs") / name)
    _prune(certs, keep={name})
    return _read_issued(final)


def _switch_live(root: Path, target: Path) -> None:
    link = root / f".{LIVE}.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    link.replace(root / LIVE)  # rename(2): atomic
    _fsync_dir(root)


def _prune(certs: Path, keep: set[str]) -> None:
    """Keep the live certificate and the one before it; drop older ones and leftovers."""
    folders = sorted(p for p in certs.iterdir() if p.is_dir() and not p.name.startswith("."))
    old = [p for p in folders if p.name not in keep]
    for folder in old[: max(0, len(old) - KEEP_OLD)]:
        shutil.rmtree(folder, ignore_errors=True)
    for leftover in certs.glob(".*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def remove_stale_temporaries(request: AcmeRequest) -> None:
    """Leftovers of a write that was killed half-way (never the live certificate)."""
    accounts = request.root / "accounts"
    folders = [request.root, request.root / "certs"]
    if accounts.is_dir():
        folders.extend(p for p in accounts.iterdir() if p.is_dir())
    for folder in folders:
        if folder.is_dir():
            for leftover in folder.glob(".*.tmp"):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- failures in a row (restart back-off) ------------------------------------------------


def restart_delay(request: AcmeRequest, now: datetime | None = None) -> tuple[float, str]:
    """Seconds to wait before asking the CA again after failed starts, and the last reason.

    The first retry is immediate (an operator who fixed something wants to see it work);
    then 30 s, 60 s, ... up to 30 min, so a restart loop cannot exhaust the CA's limits.
    """
    now = now or datetime.now(UTC)
    record = _failures(request)
    count = _count(record)
    if count < 2:
        return 0.0, ""
    wait = min(
        defaults.ACME_RESTART_BACKOFF_S * 2.0 ** min(count - 2, 32),
        defaults.ACME_RESTART_BACKOFF_MAX_S,
    )
    last = datetime.fromisoformat(str(record["last"]))
    remaining = wait - (now - last).total_seconds()
    return max(0.0, min(remaining, wait)), str(record.get("reason", ""))


def record_failure(request: AcmeRequest, reason: str, now: datetime | None = None) -> None:
    record = _failures(request)
    ensure_dir(request.root, 0o700)
    atomic_write(
        request.root / "failures.json",
        json.dumps(
            {
                "host": request.host,
                "directory": request.directory,
                "count": _count(record) + 1,
                "last": (now or datetime.now(UTC)).isoformat(),
                "reason": reason,
            },
            indent=2,
        ).encode(),
        mode=0o600,
    )


def clear_failures(request: AcmeRequest) -> None:
    (request.root / "failures.json").unlink(missing_ok=True)


def _count(record: dict[str, Any]) -> int:
    try:
        return max(0, int(record.get("count", 0)))
    except (TypeError, ValueError):
        return 1  # a damaged record still counts as a failure


def _failures(request: AcmeRequest) -> dict[str, Any]:
    try:
        record = json.loads((request.root / "failures.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    if record.get("host") != request.host or record.get("directory") != request.directory:
        return {}  # about other settings: the operator changed something, start afresh
    try:
        datetime.fromisoformat(str(record["last"]))
    except (KeyError, ValueError):
        return {}
    return record


# --- explaining failures ----------------------------------------------------------------


def explain(exc: BaseException, request: AcmeRequest) -> ConfigError:  # noqa: PLR0911 - one branch per kind of failure
    """One operator-facing line for whatever went wrong talking to the CA."""
    import requests
    from acme import errors as acme_errors
    from acme import messages

    ca = urlsplit(request.directory).netloc
    if isinstance(exc, requests.exceptions.SSLError):
        return ConfigError(
            "ACME_CA_BUNDLE" if request.ca_bundle else "ACME_DIRECTORY",
            f"cannot verify the TLS certificate of {ca} ({_short(exc)})",
            "for a private ACME server set ACME_CA_BUNDLE to the CA that signed its "
            "certificate; behind a TLS-intercepting proxy, add the proxy's CA the same way",
        )
    # acme turns connection errors into ValueError("Requesting host/path: reason"); other
    # ValueErrors and OSErrors (a damaged account key, a full /data) are not the network's.
    if isinstance(exc, requests.exceptions.RequestException) or (
        isinstance(exc, ValueError) and str(exc).startswith("Requesting ")
    ):
        return ConfigError(
            "ACME_DIRECTORY",
            f"cannot reach the ACME server at {request.directory} ({_short(exc)})",
            "check the URL, and that the container can resolve the name and connect out over HTTPS",
        )
    if isinstance(exc, acme_errors.ValidationError):
        problems = [
            challenge.error
            for authz in exc.failed_authzrs
            for challenge in authz.body.challenges
            if challenge.error is not None
        ]
        if problems:
            return _from_problem(problems[0], request)
        return ConfigError(
            "VPN_HOST",
            f"the CA could not validate {request.host}",
            f"make sure {request.host} points at this server and TCP port 80 reaches it",
        )
    if isinstance(exc, acme_errors.IssuanceError):
        return _from_problem(exc.error, request)
    if isinstance(exc, messages.Error):
        return _from_problem(exc, request)
    if isinstance(exc, acme_errors.TimeoutError):
        return ConfigError(
            "ACME_DIRECTORY",
            f"the CA did not finish the order within {defaults.ACME_ORDER_TIMEOUT_S} s",
            "try again later (see the CA's status page)",
        )
    return ConfigError(
        "ACME_DIRECTORY",
        f"the ACME exchange with {ca} failed ({type(exc).__name__}: {_short(exc)})",
        "try again later; if it persists, report it with this line",
    )


# ACME problem type -> (setting, problem, fix); {host} and {detail} are filled in.
_PROBLEMS: dict[str, tuple[str, str, str]] = {
    "dns": (
        "VPN_HOST",
        "the CA could not look up {host} ({detail})",
        "create an A (or AAAA) record for {host} with this server's public address",
    ),
    "caa": (
        "VPN_HOST",
        "a CAA record of {host} forbids this CA ({detail})",
        "allow the CA in the domain's CAA records",
    ),
    "rejectedIdentifier": (
        "VPN_HOST",
        "the CA will not issue a certificate for {host} ({detail})",
        "use a name the CA accepts",
    ),
    "rateLimited": (
        "ACME_DIRECTORY",
        "the CA's rate limit was hit ({detail})",
        "wait until the limit resets; test with ACME_DIRECTORY=staging",
    ),
    "invalidContact": (
        "ACME_EMAIL",
        "the CA refused the account's contact address ({detail})",
        "set ACME_EMAIL to a working address (this CA may require one)",
    ),
    "externalAccountRequired": (
        "ACME_DIRECTORY",
        "this CA requires external account binding (EAB), which this image does not do",
        "use a CA without EAB, such as Let's Encrypt",
    ),
}
_VALIDATION_PROBLEM = (
    "VPN_HOST",
    "the CA could not validate {host} over HTTP-01 on TCP port 80 ({detail})",
    "make sure {host} points at this server and TCP port 80 reaches the container "
    "(publish 80:80/tcp, open it in the firewall)",
)
for _code in ("connection", "unauthorized", "incorrectResponse", "tls"):
    _PROBLEMS[_code] = _VALIDATION_PROBLEM
_PROBLEMS["unsupportedContact"] = _PROBLEMS["invalidContact"]


def _from_problem(problem: messages.Error, request: AcmeRequest) -> ConfigError:
    code = problem.code or "error"
    detail = _short(problem.detail or problem.description or code)
    if request.email is None and "contact" in detail.lower():
        code = "invalidContact"  # CAs that insist on an address word it differently
    if code not in _PROBLEMS:
        return ConfigError(
            "ACME_DIRECTORY",
            f"the CA refused the request ({_short(code, 60)}: {detail})",
            "check the settings against the CA's documentation, then restart",
        )
    setting, what, fix = _PROBLEMS[code]
    return ConfigError(
        setting, what.format(host=request.host, detail=detail), fix.format(host=request.host)
    )


# --- small helpers ----------------------------------------------------------------------


def _dns_names(cert: x509.Certificate) -> list[str]:
    with contextlib.suppress(x509.ExtensionNotFound):
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [name.lower() for name in names.get_values_for_type(x509.DNSName)]
    return []


def _spki(public_key: Any) -> bytes:
    return cast(
        bytes,
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def _short(value: object, limit: int = 200) -> str:
    """One line, bounded: CA details and library errors may span lines."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def when(moment: datetime) -> str:
    """How ACME log lines show a moment."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
