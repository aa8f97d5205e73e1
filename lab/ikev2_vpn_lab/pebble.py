"""Pebble, Let's Encrypt's test ACME server, in a container on a lab network.

The end-to-end tests of ``VPN_CERT=letsencrypt`` run a real ACME exchange against it:
the server container resolves Pebble by a Docker network alias, and Pebble's HTTP-01
validation reaches port 80 of the server by the server's own alias on the same network.
Nothing involves a public name or address.

Two trust anchors are at play, and tests hand them to different parties:

- :attr:`Pebble.tls_ca_pem`: a throw-away CA made here for Pebble's HTTPS listener; the
  server gets it as ``ACME_CA_BUNDLE``.
- :meth:`Pebble.root_pem`: the root Pebble issues certificates under, made by Pebble at
  each start; VPN clients trust it to accept the server's certificate. Pebble issues from
  an intermediate, so a client that trusts only this root also proves that the server
  sends its intermediate.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from docker.models.containers import Container

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.base import DEFAULT_BASE, Log
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.image import ensure_tool_image, pem_certificates

PEBBLE_IMAGE = "ikev2-vpn-pebble:trixie"
DEFAULT_ALIAS = "acme.example.test"
ACME_PORT = 14000
MANAGEMENT_PORT = 15000
HTTP_01_PORT = 80  # where a real CA validates HTTP-01, so the server is tested as deployed
TLS_ALPN_01_PORT = 443
DEFAULT_VALIDITY_S = 90 * 24 * 3600  # Let's Encrypt's lifetime
# Seconds Pebble asks clients to wait between polls of a pending authorisation or order.
RETRY_AFTER_S = 1
CONFIG_DIR = "/etc/pebble"
CONFIG_PATH = f"{CONFIG_DIR}/config.json"
CERT_PATH = f"{CONFIG_DIR}/tls.crt"
KEY_PATH = f"{CONFIG_DIR}/tls.key"
TLS_CA_PATH = f"{CONFIG_DIR}/tls-ca.pem"
READY_TIMEOUT_S = 20.0
TLS_LIFETIME = timedelta(days=7)  # of the throw-away HTTPS certificates; one test session

# Pebble from Debian, and curl to ask its management interface from inside the container.
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl pebble \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
ENTRYPOINT ["pebble"]
"""

# Pebble's knobs, set for tests that are quick and give the same answer every run.
ENVIRONMENT = {
    # Validate at once: by default Pebble waits 0-15 s at random before each validation.
    "PEBBLE_VA_NOSLEEP": "1",
    # By default Pebble refuses 5 % of good nonces; the server's client retries a bad nonce
    # once, so two refusals in a row would fail a test now and then for no reason.
    "PEBBLE_WFE_NONCEREJECT": "0",
    # By default Pebble reuses a valid authorisation half of the time; never reusing makes
    # every order (renewals too) a real HTTP-01 validation of the running server.
    "PEBBLE_AUTHZREUSE": "0",
}

# What Pebble 2.6 logs (Go's log package, prefix "Pebble "):
#   Pebble 2025/06/01 12:00:00 POST /order-plz -> calling handler()
#   Pebble 2025/06/01 12:00:00 Added order "Xy..." to the db
#   Pebble 2025/06/01 12:00:01 Issued certificate serial 1a2b... for order "Xy..."
_NEW_ORDER = re.compile(r"^Pebble \S+ \S+ Added order \S+ to the db$", re.MULTILINE)
_ISSUED = re.compile(
    r"^Pebble \S+ \S+ Issued certificate serial ([0-9a-fA-F]+) for order", re.MULTILINE
)


# --- pure parts: image, configuration, certificates, logs -------------------------------------


def pebble_config(validity_s: int | None = None) -> dict[str, Any]:
    """Pebble's JSON configuration (keys as in Debian's examples/pebble-config.json)."""
    if validity_s is not None and validity_s <= 0:
        raise ValueError(f"a certificate lifetime must be positive, not {validity_s} s")
    return {
        "pebble": {
            "listenAddress": f"0.0.0.0:{ACME_PORT}",
            "managementListenAddress": f"0.0.0.0:{MANAGEMENT_PORT}",
            "certificate": CERT_PATH,
            "privateKey": KEY_PATH,
            "httpPort": HTTP_01_PORT,
            "tlsPort": TLS_ALPN_01_PORT,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "domainBlocklist": [],
            "retryAfter": {"authz": RETRY_AFTER_S, "order": RETRY_AFTER_S},
            "certificateValidityPeriod": validity_s or DEFAULT_VALIDITY_S,
        }
    }


@dataclass(frozen=True)
class TlsMaterial:
    """Pebble's HTTPS identity: a throw-away CA and a certificate for Pebble's alias (PEM)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def make_tls_material(alias: str, now: datetime | None = None) -> TlsMaterial:
    """A CA and a server certificate for ``alias``, with what strict verifiers ask for
    (key identifiers, critical basic constraints, key usages)."""
    start = (now or datetime.now(UTC)) - timedelta(minutes=5)  # tolerate clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ikev2-vpn test ACME TLS CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + TLS_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, alias)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + TLS_LIFETIME)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(alias)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return TlsMaterial(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=leaf.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def count_orders(log_text: str) -> int:
    """New orders Pebble accepted, from its log."""
    return len(_NEW_ORDER.findall(log_text))


def issued_serials(log_text: str) -> list[str]:
    """Serial numbers (lower-case hex, as Pebble logs them) of the certificates it issued."""
    return [serial.lower() for serial in _ISSUED.findall(log_text)]


# --- the image -----------------------------------------------------------------------------


def ensure_pebble_image(
    engine: docker.DockerClient,
    log: Log = print,
    *,
    tag: str = PEBBLE_IMAGE,
    base: str = DEFAULT_BASE,
) -> str:
    """Build the Pebble image when the engine does not have it yet; return its tag.

    The base image is found the way ``ikev2-vpn-helper build`` finds it (local, pulled,
    or the local debootstrap base).
    """
    return ensure_tool_image(
        engine, tag=tag, dockerfile=DOCKERFILE, what="pebble", log=log, base=base
    )


# --- the container -------------------------------------------------------------------------


class Pebble:
    """A running Pebble: where its ACME directory is, whom to trust, what it did."""

    def __init__(self, container: Container, alias: str, tls_ca_pem: bytes) -> None:
        self.container = container
        self.alias = alias
        self.tls_ca_pem = tls_ca_pem  # for the server's ACME_CA_BUNDLE

    @classmethod
    def start(
        cls,
        engine: docker.DockerClient,
        *,
        network: str,
        name: str,
        run_id: str | None,
        alias: str = DEFAULT_ALIAS,
        validity_s: int | None = None,
        image: str = PEBBLE_IMAGE,
        environment: Mapping[str, str] | None = None,
        timeout_s: float = READY_TIMEOUT_S,
    ) -> Pebble:
        """Start Pebble on ``network``, reachable there as ``alias``, and wait until both its
        ACME and management interfaces answer. ``validity_s``: lifetime of the certificates
        it issues (default 90 days); ``environment`` adds to or overrides :data:`ENVIRONMENT`.
        """
        tls = make_tls_material(alias)
        config = json.dumps(pebble_config(validity_s), indent=2).encode()
        container = eng.start_tool(
            engine,
            image,
            name=name,
            network=network,
            alias=alias,
            files=[
                eng.FileSpec(CONFIG_PATH, config),
                eng.FileSpec(CERT_PATH, tls.cert_pem),
                eng.FileSpec(KEY_PATH, tls.key_pem, 0o600),
                eng.FileSpec(TLS_CA_PATH, tls.ca_pem),
            ],
            builder="ensure_pebble_image",
            command=["-config", CONFIG_PATH, "-strict=false"],  # what its README advises
            environment={**ENVIRONMENT, **(environment or {})},
            labels=eng.labels(run_id, "pebble"),
        )
        pebble = cls(container, alias, tls.ca_pem)
        pebble.wait_ready(timeout_s)
        return pebble

    @property
    def name(self) -> str:
        return str(self.container.name)

    @property
    def directory_url(self) -> str:
        """The ACME directory, for the server's ACME_DIRECTORY."""
        return f"https://{self.alias}:{ACME_PORT}/dir"

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Seconds until the ACME directory and the root certificate can be fetched."""
        started = time.monotonic()
        urls = [self.directory_url, self._management_url("/roots/0")]
        while urls:
            self.container.reload()
            if self.container.status not in {"created", "running"}:
                raise HelperError(self._failure(f"stopped ({self.container.status})"))
            if self._fetch(urls[0]).exit_code == 0:
                urls.pop(0)
                continue
            if time.monotonic() - started > timeout_s:
                raise HelperError(self._failure(f"does not answer {urls[0]} after {timeout_s} s"))
            time.sleep(0.2)
        return time.monotonic() - started

    def root_pem(self) -> bytes:
        """The root Pebble issues under (new at each Pebble start): what VPN clients trust."""
        url = self._management_url("/roots/0")
        result = self._fetch(url)
        certificates = pem_certificates(result.stdout)
        if result.exit_code != 0 or not certificates:
            detail = (result.stderr or result.stdout).strip() or f"exit status {result.exit_code}"
            raise HelperError(f"cannot fetch Pebble's root from {url}: {detail}")
        return (certificates[0] + "\n").encode()

    def order_count(self) -> int:
        """New orders since Pebble started (a restart that reuses its certificate adds none)."""
        return count_orders(self.logs())

    def issued_serials(self) -> list[str]:
        return issued_serials(self.logs())

    def logs(self) -> str:
        return str(self.container.logs(stdout=True, stderr=True).decode(errors="replace"))

    def remove(self) -> None:
        self.container.remove(force=True, v=True)

    def _management_url(self, path: str) -> str:
        return f"https://{self.alias}:{MANAGEMENT_PORT}{path}"

    def _fetch(self, url: str) -> eng.ExecResult:
        """GET ``url`` from inside the container, verifying Pebble's own TLS certificate."""
        return eng.run_in(
            self.container,
            [
                *("curl", "--silent", "--show-error", "--fail", "--max-time", "5"),
                *("--cacert", TLS_CA_PATH),
                # The alias resolves on the Docker network; inside, Pebble is on loopback.
                *("--resolve", f"{self.alias}:{ACME_PORT}:127.0.0.1"),
                *("--resolve", f"{self.alias}:{MANAGEMENT_PORT}:127.0.0.1"),
                url,
            ],
        )

    def _failure(self, what: str) -> str:
        tail = eng.log_tail(self.container, 10).rstrip()
        indented = "\n".join(f"  | {line}" for line in tail.splitlines())
        return f"Pebble {self.name} {what}; its last log lines:\n{indented}"
