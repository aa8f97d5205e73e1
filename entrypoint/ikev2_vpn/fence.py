"""The client fence: destinations VPN clients may not reach through the tunnel.

Clients get out to the networks behind the server, but not to the host and the platform it
runs on: the host at the gateway address of each of the container's networks, VPN_HOST when
it is an address (the host's or its load balancer's; packets to the container's own
addresses are VPN_ALLOW_SERVER_ACCESS's, and never pass this chain), cloud metadata and
control-plane addresses, and whatever the operator adds (VPN_CLIENT_DENY).
VPN_CLIENT_ALLOW takes ranges out of all of that again; the client pools are never fenced
(whether clients reach each other is VPN_CLIENT_ISOLATION's business).

Pure: the probe finds the gateways, the plan feeds the result to the nftables template
(one counted drop per entry) and to the start-up log line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Addresses of cloud platforms that answer to anything inside a VM, whatever it forwards.
PLATFORM = (
    (ipaddress.IPv4Network("100.100.100.200/32"), "Alibaba Cloud metadata"),
    (ipaddress.IPv4Network("168.63.129.16/32"), "Azure WireServer"),
)
# Off with VPN_ALLOW_LINK_LOCAL=on.
LINK_LOCAL = (
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local, cloud metadata"),
    (ipaddress.IPv6Network("fe80::/10"), "link-local"),
    (ipaddress.IPv6Network("fd00:ec2::254/128"), "AWS metadata over IPv6"),
)


@dataclass(frozen=True)
class Fenced:
    """One range clients may not reach, and why (a line of the ruleset's comments)."""

    network: Network
    why: str
    part_of: Network | None = None  # what it was cut from, where VPN_CLIENT_ALLOW cut holes

    @property
    def entry(self) -> Network:
        """The range as the operator or the server named it (for the log line)."""
        return self.part_of or self.network


@dataclass(frozen=True)
class Gateway:
    """The host (or a router) at the gateway address of one of the container's networks."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    interface: str


def fence(
    *,
    gateways: Iterable[Gateway] = (),
    dialled: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
    deny: Iterable[Network] = (),
    allow: Iterable[Network] = (),
    link_local: bool = False,
    pools: Iterable[Network] = (),
) -> tuple[Fenced, ...]:
    """What clients may not reach, in rule order, with ``allow`` and ``pools`` cut out.
    ``link_local``: VPN_ALLOW_LINK_LOCAL (link-local ranges stay reachable)."""
    wanted: list[Fenced] = [
        Fenced(_host(gateway.address), f"the host: gateway of {gateway.interface}")
        for gateway in gateways
    ]
    if dialled is not None:
        wanted.append(Fenced(_host(dialled), "the address clients dial (VPN_HOST)"))
    wanted += [Fenced(network, why) for network, why in PLATFORM]
    if not link_local:
        wanted += [Fenced(network, why) for network, why in LINK_LOCAL]
    wanted += [Fenced(network, "VPN_CLIENT_DENY") for network in deny]
    holes = [*allow, *pools]
    result: list[Fenced] = []
    for entry in wanted:
        for piece in _without(entry.network, holes):
            if not any(within(piece, kept.network) for kept in result):
                whole = None if piece == entry.network else entry.network
                result.append(Fenced(piece, entry.why, whole))
    return tuple(result)


def first_host(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address Docker (and most address managers) give a network's gateway; none for
    point-to-point and single-address networks."""
    if network.num_addresses <= 2:
        return None
    return network.network_address + 1


def _host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Network:
    return ipaddress.ip_network(address)


def within(inner: Network, outer: Network) -> bool:
    """``inner`` is ``outer`` or part of it (False across address families)."""
    return (
        inner.version == outer.version
        and outer.network_address <= inner.network_address  # type: ignore[operator]
        and inner.broadcast_address <= outer.broadcast_address  # type: ignore[operator]
    )


def _without(network: Network, holes: Iterable[Network]) -> list[Network]:
    """``network`` minus every hole, as the fewest CIDR ranges."""
    pieces = [network]
    for hole in holes:
        if hole.version != network.version:
            continue
        remaining: list[Network] = []
        for piece in pieces:
            if within(piece, hole):
                continue
            if within(hole, piece):
                remaining.extend(piece.address_exclude(hole))  # type: ignore[arg-type]
            else:
                remaining.append(piece)
        pieces = remaining
    return sorted(pieces, key=lambda piece: (piece.network_address, piece.prefixlen))
