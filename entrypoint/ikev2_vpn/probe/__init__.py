"""Read-only facts about the machine, gathered before anything under /data is touched."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..settings import Settings
from .backend import BackendChoice, choose_backend, probe_kernel, tun_available
from .identity import ServerIdentity, resolve_identity
from .network import (
    Egress,
    EgressV6,
    check_ipv6_sysctls,
    check_pool,
    check_pool_v6,
    find_egress,
    find_egress_v6,
)

log = logging.getLogger("ikev2_vpn")


@dataclass(frozen=True)
class Machine:
    """What the machine offers the server, as found at start."""

    egress: Egress
    egress_v6: EgressV6 | None  # with VPN_POOL_V6 only
    backend: BackendChoice
    identity: ServerIdentity


def machine(settings: Settings) -> Machine:
    """Every probe, in the order their failures should be reported. Read-only, except the
    kernel probe's throw-away XFRM state and, with VPN_POOL_V6, the IPv6 sysctls where
    /proc/sys is writable."""
    egress = find_egress()
    check_pool(settings.pool_v4, egress)
    egress_v6 = _egress_v6(settings)
    choice = choose_backend(settings.ipsec_backend, probe_kernel(), tun_available())
    log.info("IPsec backend: %s (%s)", choice.backend, choice.reason)
    identity = resolve_identity(settings, egress)
    log.info("server identity: %s (%s)", identity.host, identity.reason)
    return Machine(egress, egress_v6, choice, identity)


def _egress_v6(settings: Settings) -> EgressV6 | None:
    """With VPN_POOL_V6: where IPv6 leaves, once the sysctls and the pool are known to fit."""
    if settings.pool_v6 is None:
        return None
    check_ipv6_sysctls(settings.pool_v6_egress)
    found = find_egress_v6()
    check_pool_v6(settings.pool_v6, settings.pool_v6_egress, found)
    return found
