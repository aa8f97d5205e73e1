"""The state a start needs: the server certificate (self-signed, ACME or the operator's files)
and the accounts with their static IPs, each found under /data or created there once."""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass

from .. import defaults
from ..errors import ConfigError
from ..probe.identity import ServerIdentity
from ..settings import Account, AcmeFallback, CertSource, Settings
from . import acme, certcheck, pki
from .credentials import ServerCredentials
from .users import STORE_NAME, ResolvedAccounts, resolve_accounts, usable_static_ips

log = logging.getLogger("ikev2_vpn")


@dataclass(frozen=True)
class Certificate:
    credentials: ServerCredentials
    acme: acme.AcmeRequest | None = None  # kept fresh by a Renewer
    fallback: bool = False  # self-signed while the ACME CA cannot be used


@dataclass(frozen=True)
class ServerState:
    certificate: Certificate
    accounts: tuple[Account, ...]  # empty with RADIUS
    static: dict[str, ipaddress.IPv4Address]  # the usable static IPs, by user


def load(settings: Settings, identity: ServerIdentity) -> ServerState:
    certificate = server_certificate(settings, identity)
    resolved = accounts(settings)
    static, warnings = usable_static_ips(
        resolved.static_ips, settings.pool_v4_static, settings.pool_v4
    )
    for warning in warnings:
        log.warning(warning)
    return ServerState(certificate, resolved.accounts, static)


def accounts(settings: Settings) -> ResolvedAccounts:
    """Local accounts, or with RADIUS none at all (and no generated one): RADIUS replaces
    them, so a login never depends on which of two user lists a server asked."""
    if not settings.radius_servers:
        resolved = resolve_accounts(settings.accounts(), defaults.DATA_DIR)
        if resolved.generated is not None:
            log.warning(
                "no user configured: created user %r with password %s (shown once, kept in %s)",
                resolved.generated.name,
                resolved.generated.password.get_secret_value(),
                defaults.DATA_DIR / STORE_NAME,
            )
        return resolved
    if (defaults.DATA_DIR / STORE_NAME).exists():
        log.warning(
            "the users in %s are not used: with VPN_RADIUS_SERVERS users live in RADIUS",
            defaults.DATA_DIR / STORE_NAME,
        )
    return ResolvedAccounts((), None, {})


def server_certificate(settings: Settings, identity: ServerIdentity) -> Certificate:
    if settings.cert is CertSource.FILES:
        return Certificate(
            certcheck.load_operator_credentials(
                settings.cert_path, settings.key_path, settings.chain_path, identity.host
            )
        )
    if settings.cert is CertSource.LETSENCRYPT:
        return acme_certificate(settings, identity)
    return Certificate(pki.ensure_self_signed(defaults.DATA_DIR, identity.host))


def acme_certificate(settings: Settings, identity: ServerIdentity) -> Certificate:
    """The stored certificate while it is valid (no request: CA rate limits), else a new one.

    A failed first issuance stops the container with the CA's reason, unless the operator
    chose ACME_FALLBACK=self-signed.
    """
    request = acme.AcmeRequest.from_settings(settings, identity.host)
    acme.remove_stale_temporaries(request)
    stored = acme.load_live(request)
    if stored is not None:
        log.info(
            "ACME: reusing the certificate in %s (valid until %s); no request sent to the CA",
            request.root,
            acme.when(stored.leaf.not_valid_after_utc),
        )
        return Certificate(stored.credentials, request)
    delay, reason = acme.restart_delay(request)
    if delay > 0:
        log.warning(
            "ACME: the previous attempts failed (%s); waiting %.0f s before asking the CA "
            "again, to stay within its rate limits",
            reason,
            delay,
        )
        time.sleep(delay)
    log.info("ACME: requesting a certificate for %s from %s", request.host, request.directory)
    try:
        issued = acme.obtain(request)
    except ConfigError as exc:
        acme.record_failure(request, exc.line())
        if settings.acme_fallback is not AcmeFallback.SELF_SIGNED:
            raise
        log.error("ACME: %s", exc.line())
        log.warning(
            "ACME: serving a self-signed certificate meanwhile (ACME_FALLBACK=self-signed); "
            "retrying the CA in the background"
        )
        return Certificate(
            pki.ensure_self_signed(defaults.DATA_DIR, identity.host), request, fallback=True
        )
    acme.clear_failures(request)
    return Certificate(issued.credentials, request)
