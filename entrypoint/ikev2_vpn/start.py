"""The start-up pipeline: environment -> settings -> probe -> state -> render -> apply -> run.

Every check that can fail on the operator's input runs before anything is written or
started; the first problem stops the container with one line and a non-zero status.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from . import defaults, probe, render
from .apply import network, profile_writer
from .apply.files import write_configuration, write_radius_secrets, write_users_configuration
from .probe.backend import BackendChoice
from .run import users_live, vici_session
from .run.bans import BanGuard
from .run.charon import Supervisor
from .run.renewal import Renewer
from .settings import (
    Settings,
    V6Egress,
    describe,
    forget_environment,
    load_settings,
    unknown_variables,
)
from .state import pki, server
from .state.server import ServerState

if TYPE_CHECKING:
    from .run import metrics, web

log = logging.getLogger("ikev2_vpn")


def run() -> int:
    supervisor = Supervisor()  # handles SIGTERM from here on
    users_live.forget_facts()  # left by the previous run: no user change until charon is up
    settings = _settings()
    machine = probe.machine(settings)
    state = server.load(settings, machine.identity)
    plan = render.plan(settings, machine, state)
    _apply(plan)
    return _run(settings, state, plan, supervisor)


def _settings() -> Settings:
    for warning in unknown_variables():
        log.warning(warning)
    settings = load_settings()
    forget_environment()  # no child inherits a password (docs/security.md)
    for line in describe(settings):
        log.info(line)
    return settings


def _apply(plan: render.Plan) -> None:
    """Forwarding and the firewall, then the files charon, swanctl and clients read."""
    network.enable_forwarding()
    network.apply_firewall(render.nftables_conf(plan))
    if plan.pool_v6 is not None and plan.egress_interface_v6 is not None:
        if plan.pool_v6_egress is V6Egress.NDP_PROXY:
            count = network.add_ndp_proxies(plan.pool_v6, plan.egress_interface_v6)
            log.info(
                "NDP proxy: answering for %d pool addresses on %s", count, plan.egress_interface_v6
            )
        log.info(
            "IPv6: clients get addresses from %s, leaving through %s (%s)",
            plan.pool_v6,
            plan.egress_interface_v6,
            plan.pool_v6_egress,
        )
    log.info(render.client_access(plan))
    write_configuration(render.strongswan_conf(plan), render.swanctl_conf(plan), plan.credentials)
    write_users_configuration(render.users_conf(plan.users()))
    if plan.radius is not None:
        write_radius_secrets(render.radius_secrets_conf(plan.radius))
        log.info("client profiles: none written (users live in RADIUS, unknown to the server)")
    else:
        _write_profiles(plan)


def _run(settings: Settings, state: ServerState, plan: render.Plan, supervisor: Supervisor) -> int:
    """charon with the plan loaded over VICI, and the threads that watch over it."""
    collector = _start_metrics(settings, plan.backend)
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
    console = _start_console(settings, plan)
    certificate = state.certificate
    if certificate.acme is not None:
        Renewer(
            certificate.acme,
            plan,
            key_id,
            fallback=certificate.fallback,
            on_loaded=functools.partial(_certificate_replaced, settings, console),
        ).start()

    def login_failed(failure: object) -> None:
        if collector is not None:
            collector.login_failed(failure)
        if console is not None:
            console.counters.vpn_login_failed(failure)

    BanGuard(  # logs failed logins too, and RADIUS servers that do not answer
        settings.ban_after,
        settings.ban_seconds,
        on_failure=login_failed,
        radius_servers=plan.radius.server_names() if plan.radius is not None else None,
    ).start()
    _announce(plan)
    return supervisor.supervise()


def _start_metrics(settings: Settings, choice: BackendChoice) -> metrics.VpnCollector | None:
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


def _start_console(settings: Settings, plan: render.Plan) -> web.Console | None:
    """The web console, when VPN_WEB_PORT is set. Like the metrics, a port that cannot be
    opened costs the console, not the VPN."""
    if settings.web_port is None:
        return None
    from .run import web  # Flask: only when asked for

    pools = [plan.pool_v4, *([plan.pool_v6] if plan.pool_v6 is not None else [])]
    info = web.server_info(plan.backend.backend.value, str(settings.proposals), pools)
    console = web.Console(settings, info, vici_session.connect)
    try:
        console.serve(settings.web_port, plan.credentials)
    except OSError as exc:
        log.error(
            "VPN_WEB_PORT: cannot listen on TCP port %d (%s); the VPN runs without the "
            "console, choose a free port",
            settings.web_port,
            exc.strerror or exc,
        )
        return None
    console.watch()
    log.info("web console: https://%s:%d/ (VPN_WEB_PORT)", plan.host, settings.web_port)
    return console


def _certificate_replaced(
    settings: Settings, console: web.Console | None, plan: render.Plan, ca_changed: bool
) -> None:
    """After a renewal: `ikev2-vpn users` must see the new facts; the console serves the
    new certificate; when the self-signed fallback ended, profiles lose its CA (devices
    then trust the public CA instead)."""
    users_live.write_facts(plan)
    if console is not None:
        console.use_certificate(plan.credentials)
    if ca_changed and plan.radius is None:  # with RADIUS, no profiles are written
        users_live.LiveUsers(
            settings, users_live.read_facts(), vici_session.connect
        ).refresh_profiles()
        log.info("client profiles rewritten for the CA's certificate")


def _write_profiles(plan: render.Plan) -> None:
    """Client profiles for every account, rewritten at each start: that covers changes of
    the CA, the address and the proposals. Unchanged files are left untouched."""
    profiles = [profile_writer.profile_input(plan, account) for account in plan.accounts]
    changes = profile_writer.write_all(profiles, defaults.DATA_DIR)
    log.info(
        "client profiles written to %s (%d user%s)",
        profile_writer.clients_dir(defaults.DATA_DIR),
        len(profiles),
        "" if len(profiles) == 1 else "s",
    )
    current = {profile.user for profile in profiles}
    if updated := sorted(user for user in changes if user in current):
        log.info("client profiles changed for: %s", ", ".join(updated))
    if removed := sorted(user for user in changes if user not in current):
        log.info("client profiles removed for users that no longer exist: %s", ", ".join(removed))


def _announce(plan: render.Plan) -> None:
    users = ", ".join(account.name for account in plan.accounts)
    if plan.radius is not None:
        servers = ", ".join(map(str, plan.radius.servers))
        users = f"users of RADIUS server {servers} (NAS-Identifier {plan.radius.nas_identifier})"
    log.info(
        "ready: clients connect to %s (IKEv2, username and password) as: %s",
        plan.host,
        users,
    )
    if plan.credentials.ca is not None:
        log.info(
            "clients must trust the CA in %s (SHA-256 %s)",
            defaults.DATA_DIR / defaults.CA_CERT_NAME,
            pki.ca_fingerprint(plan.credentials.ca),
        )
