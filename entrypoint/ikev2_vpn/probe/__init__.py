"""Read-only facts about the machine, gathered before anything under /data is touched."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from .. import fence
from ..errors import ConfigError
from ..fence import Fenced, Gateway
from ..settings import IPAddress, Settings
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
    find_gateways,
)

log = logging.getLogger("ikev2_vpn")


@dataclass(frozen=True)
class Machine:
    """What the machine offers the server, as found at start."""

    egress: Egress
    egress_v6: EgressV6 | None  # with VPN_POOL_V6 only
    backend: BackendChoice
    identity: ServerIdentity
    gateways: tuple[Gateway, ...] = ()  # of every network attached: the host, on Docker
    # VPN_HOST when it is an address other than the container's own (the host's, or its load
    # balancer's): fenced off from clients.
    dialled: IPAddress | None = None


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
    around = find_gateways()
    dialled = dialled_address(identity, around.addresses)
    fenced = client_fence(settings, around.gateways, dialled)
    check_dns(settings, fenced)
    check_split_nets(settings, fenced)
    return Machine(egress, egress_v6, choice, identity, around.gateways, dialled)


def dialled_address(identity: ServerIdentity, own: tuple[IPAddress, ...]) -> IPAddress | None:
    """VPN_HOST as an address to fence off, unless it is the container's own: packets to
    those are VPN_ALLOW_SERVER_ACCESS's (a DNS server there, say), never forwarded."""
    if not identity.is_address:
        return None
    address = ipaddress.ip_address(identity.host)
    return None if address in own else address


def client_fence(
    settings: Settings, gateways: tuple[Gateway, ...], dialled: IPAddress | None
) -> tuple[Fenced, ...]:
    """The client fence for these settings on this machine (the plan's, before the plan)."""
    pools: list[fence.Network] = [settings.pool_v4]
    if settings.pool_v6 is not None:
        pools.append(settings.pool_v6)
    return fence.fence(
        gateways=gateways,
        dialled=dialled,
        deny=settings.client_deny,
        allow=settings.client_allow,
        link_local=settings.allow_link_local,
        pools=pools,
    )


def check_dns(settings: Settings, fenced: tuple[Fenced, ...]) -> None:
    """A DNS server pushed to clients must be one they can reach."""
    for server in settings.dns:
        for entry in fenced:
            if server in entry.network:
                raise ConfigError(
                    "VPN_DNS",
                    f"{server} is fenced off from VPN clients ({entry.network}: {entry.why})",
                    "add it to VPN_CLIENT_ALLOW or push another DNS server",
                )


def check_split_nets(settings: Settings, fenced: tuple[Fenced, ...]) -> None:
    """A split network wholly inside the fence would be tunnelled and then dropped."""
    for network in settings.split_nets:
        for entry in fenced:
            if fence.within(network, entry.network):
                raise ConfigError(
                    "VPN_SPLIT_NETS",
                    f"{network} is fenced off from VPN clients ({entry.network}: {entry.why})",
                    "add it to VPN_CLIENT_ALLOW or leave it out of VPN_SPLIT_NETS",
                )


def _egress_v6(settings: Settings) -> EgressV6 | None:
    """With VPN_POOL_V6: where IPv6 leaves, once the sysctls and the pool are known to fit."""
    if settings.pool_v6 is None:
        return None
    check_ipv6_sysctls(settings.pool_v6_egress)
    found = find_egress_v6()
    check_pool_v6(settings.pool_v6, settings.pool_v6_egress, found)
    return found
