"""The start-up pipeline: environment -> settings -> state -> render -> apply -> run.

Every check that can fail on the operator's input runs before anything is written or
started; the first problem stops the container with one line and a non-zero status.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import defaults, render
from .apply import network
from .apply import profiles as writer
from .apply.files import write_configuration, write_radius_secrets, write_users_configuration
from .errors import ConfigError
from .probe import backend
from .probe import network as egresses
from .probe.identity import ServerIdentity, resolve_identity
from .run import users_live, vici_session
from .run.bans import BanGuard
from .run.charon import Supervisor
from .run.renewal import Renewer
from .settings import (
    AcmeFallback,
    CertSource,
    Settings,
    V6Egress,
    describe,
    load_settings,
    unknown_variables,
)
from .state import acme, certcheck, pki
from .state.credentials import ServerCredentials
from .state.users import STORE_NAME, ResolvedAccounts, resolve_accounts, usable_static_ips

if TYPE_CHECKING:
    from .run import metrics

log = logging.getLogger("ikev2_vpn")


def run() -> int:
    supervisor = Supervisor()  # handles SIGTERM from here on
    users_live.forget_facts()  # left by the previous run: no user change until charon is up
    for warning in unknown_variables():
        log.warning(warning)
    settings = load_settings()
    for line in describe(settings):
        log.info(line)

    # What the system offers (read-only, except the probe's throw-away XFRM state and, with
    # VPN_POOL_V6, its sysctls where /proc/sys is writable).
    egress = egresses.find_egress()
    egresses.check_pool(settings.pool_v4, egress)
    egress_v6 = _egress_v6(settings)
    choice = backend.choose_backend(
        settings.ipsec_backend, backend.probe_kernel(), backend.tun_available()
    )
    log.info("IPsec backend: %s (%s)", choice.backend, choice.reason)
    identity = resolve_identity(settings, egress)
    log.info("server identity: %s (%s)", identity.host, identity.reason)

    # State under /data.
    certificate = _certificate(settings, identity)
    credentials = certificate.credentials
    accounts = _accounts(settings)
    static, warnings = usable_static_ips(
        accounts.static_ips, settings.pool_v4_static, settings.pool_v4
    )
    for warning in warnings:
        log.warning(warning)

    plan = render.Plan(
        host=identity.host,
        accounts=accounts.accounts,
        credentials=credentials,
        pool_v4=settings.pool_v4,
        dns=settings.dns,
        backend=choice,
        proposals=settings.proposals,
        log_level=settings.log_level,
        egress_interface=egress.interface,
        pool_v4_static=settings.pool_v4_static,
        static=tuple(render.StaticAddress(name, address) for name, address in static.items()),
        dpd_delay=settings.dpd_delay,
        client_isolation=settings.client_isolation,
        allow_server_access=settings.allow_server_access,
        allow_link_local=settings.allow_link_local,
        radius=_radius(settings, identity.host),
        pool_v6=settings.pool_v6,
        pool_v6_egress=settings.pool_v6_egress,
        egress_interface_v6=egress_v6.interface if egress_v6 else None,
    )

    # Apply.
    network.enable_forwarding()
    network.apply_firewall(render.nftables_conf(plan))
    if settings.pool_v6 is not None and egress_v6 is not None:
        if settings.pool_v6_egress is V6Egress.NDP_PROXY:
            count = network.add_ndp_proxies(settings.pool_v6, egress_v6.interface)
            log.info("NDP proxy: answering for %d pool addresses on %s", count, egress_v6.interface)
        log.info(
            "IPv6: clients get addresses from %s, leaving through %s (%s)",
            settings.pool_v6,
            egress_v6.interface,
            settings.pool_v6_egress,
        )
    log.info(render.client_access(plan))
    write_configuration(render.strongswan_conf(plan), render.swanctl_conf(plan), credentials)
    write_users_configuration(render.users_conf(plan.users()))
    if plan.radius is not None:
        write_radius_secrets(render.radius_secrets_conf(plan.radius))
        log.info("client profiles: none written (users live in RADIUS, unknown to the server)")
    else:
        _write_profiles(settings, plan)

    # Run.
    collector = _start_metrics(settings, choice)
    supervisor.start()
    try:
        session = vici_session.wait_for_charon(supervisor.alive)
        key_id = vici_session.load(session, render.vici_config(plan))
    except vici_session.ViciError:
        supervisor.stop()
        if supervisor.stopping:  # asked to stop while starting: not an error
            return 0
        raise
    users_live.write_facts(plan)  # from here on `ikev2-vpn users` can change accounts
    if certificate.acme is not None:
        Renewer(
            certificate.acme,
            plan,
            key_id,
            fallback=certificate.fallback,
            on_loaded=functools.partial(_certificate_replaced, settings),
        ).start()
    BanGuard(  # logs failed logins too, and RADIUS servers that do not answer
        settings.ban_after,
        settings.ban_seconds,
        on_failure=collector.login_failed if collector else lambda _failure: None,
        radius_servers=plan.radius.server_names() if plan.radius is not None else None,
    ).start()
    _announce(settings, identity, plan)
    return supervisor.supervise()


def _start_metrics(
    settings: Settings, choice: backend.BackendChoice
) -> metrics.VpnCollector | None:
    """The Prometheus endpoint, when VPN_METRICS_PORT is set. A port that cannot be opened
    costs the metrics, not the VPN: one error line, and the server starts anyway."""
    if settings.metrics_port is None:
        return None
    from .run import metrics  # prometheus_client: about 3 MiB, only when asked for

    collector = metrics.VpnCollector(choice.backend.value)
    try:
        metrics.serve(settings.metrics_port, collector)
    except OSError as exc:
        log.error(
            "VPN_METRICS_PORT: cannot listen on TCP port %d (%s); the VPN runs without "
            "metrics, choose a free port",
            settings.metrics_port,
            exc.strerror or exc,
        )
        return None
    log.info(
        "metrics: Prometheus endpoint on TCP port %d, path %s (VPN_METRICS_PORT)",
        settings.metrics_port,
        metrics.PATH,
    )
    return collector


def _accounts(settings: Settings) -> ResolvedAccounts:
    """Local accounts, or with RADIUS none at all (and no generated one): RADIUS replaces
    them, so a login never depends on which of two user lists a server asked."""
    if not settings.radius_servers:
        accounts = resolve_accounts(settings.accounts(), defaults.DATA_DIR)
        if accounts.generated is not None:
            log.warning(
                "no user configured: created user %r with password %s (shown once, kept in %s)",
                accounts.generated.name,
                accounts.generated.password.get_secret_value(),
                defaults.DATA_DIR / STORE_NAME,
            )
        return accounts
    if (defaults.DATA_DIR / STORE_NAME).exists():
        log.warning(
            "the users in %s are not used: with VPN_RADIUS_SERVERS users live in RADIUS",
            defaults.DATA_DIR / STORE_NAME,
        )
    return ResolvedAccounts((), None, {})


def _radius(settings: Settings, host: str) -> render.RadiusPlan | None:
    if not settings.radius_servers or settings.radius_secret is None:
        return None
    return render.RadiusPlan(
        servers=settings.radius_servers,
        secret=settings.radius_secret,
        nas_identifier=settings.radius_nas_identifier or host,
        accounting_port=settings.radius_accounting_port,
        interim_interval=settings.radius_interim_interval,
    )


def _egress_v6(settings: Settings) -> egresses.EgressV6 | None:
    """With VPN_POOL_V6: where IPv6 leaves, once the sysctls and the pool are known to fit."""
    if settings.pool_v6 is None:
        return None
    egresses.check_ipv6_sysctls(settings.pool_v6_egress)
    found = egresses.find_egress_v6()
    egresses.check_pool_v6(settings.pool_v6, settings.pool_v6_egress, found)
    return found


@dataclass(frozen=True)
class Certificate:
    credentials: ServerCredentials
    acme: acme.AcmeRequest | None = None  # kept fresh by a Renewer
    fallback: bool = False  # self-signed while the ACME CA cannot be used


def _certificate(settings: Settings, identity: ServerIdentity) -> Certificate:
    if settings.cert is CertSource.FILES:
        return Certificate(
            certcheck.load_operator_credentials(
                settings.cert_path, settings.key_path, settings.chain_path, identity.host
            )
        )
    if settings.cert is CertSource.LETSENCRYPT:
        return _acme_certificate(settings, identity)
    return Certificate(pki.ensure_self_signed(defaults.DATA_DIR, identity.host))


def _acme_certificate(settings: Settings, identity: ServerIdentity) -> Certificate:
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


def _certificate_replaced(settings: Settings, plan: render.Plan, ca_changed: bool) -> None:
    """After a renewal: `ikev2-vpn users` must see the new facts; when the self-signed
    fallback ended, profiles lose its CA (devices then trust the public CA instead)."""
    users_live.write_facts(plan)
    if ca_changed and plan.radius is None:  # with RADIUS, no profiles are written
        users_live.LiveUsers(
            settings, users_live.read_facts(), vici_session.connect
        ).refresh_profiles()
        log.info("client profiles rewritten for the CA's certificate")


def _write_profiles(settings: Settings, plan: render.Plan) -> None:
    """Client profiles for every account, rewritten at each start: that covers changes of
    the CA, the address and the proposals. Unchanged files are left untouched."""
    profiles = [writer.profile_input(settings, plan, account) for account in plan.accounts]
    changes = writer.write_all(profiles, defaults.DATA_DIR)
    log.info(
        "client profiles written to %s (%d user%s)",
        writer.clients_dir(defaults.DATA_DIR),
        len(profiles),
        "" if len(profiles) == 1 else "s",
    )
    current = {profile.user for profile in profiles}
    if updated := sorted(user for user in changes if user in current):
        log.info("client profiles changed for: %s", ", ".join(updated))
    if removed := sorted(user for user in changes if user not in current):
        log.info("client profiles removed for users that no longer exist: %s", ", ".join(removed))


def _announce(settings: Settings, identity: ServerIdentity, plan: render.Plan) -> None:
    users = ", ".join(account.name for account in plan.accounts)
    if plan.radius is not None:
        servers = ", ".join(map(str, plan.radius.servers))
        users = f"users of RADIUS server {servers} (NAS-Identifier {plan.radius.nas_identifier})"
    log.info(
        "ready: clients connect to %s (IKEv2, username and password) as: %s",
        identity.host,
        users,
    )
    if plan.credentials.ca is not None:
        log.info(
            "clients must trust the CA in %s (SHA-256 %s)",
            defaults.DATA_DIR / defaults.CA_CERT_NAME,
            pki.ca_fingerprint(plan.credentials.ca),
        )
