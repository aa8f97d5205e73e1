"""Where client traffic leaves the container, and whether the pools and sysctls fit it.

Read-only, except that the IPv6 sysctl check sets what it finds missing where /proc/sys is
writable: failing here, before /data is touched, is what makes a wrong setting one line.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from typing import Any

from .. import defaults, sysctl
from ..errors import ConfigError, SystemSetupError
from ..fence import Gateway, first_host
from ..settings import V6Egress


@dataclass(frozen=True)
class Egress:
    """The interface of the default route: where client traffic leaves the container."""

    interface: str
    address: ipaddress.IPv4Address
    networks: tuple[ipaddress.IPv4Network, ...]  # every IPv4 network attached to the container


def _ip_json(*args: str) -> list[dict[str, Any]]:
    output = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
    result: list[dict[str, Any]] = json.loads(output.stdout or "[]")
    return result


def find_egress() -> Egress:
    """Find the egress interface from the routing table (interface names are not stable)."""
    routes = _ip_json("-4", "route", "show", "default")
    if not routes:
        raise SystemSetupError(
            "the container has no IPv4 default route, so client traffic has no way out; "
            "attach it to a network with a gateway"
        )
    interface = str(routes[0]["dev"])
    networks: list[ipaddress.IPv4Network] = []
    address: ipaddress.IPv4Address | None = None
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            if info.get("scope") != "global":
                continue
            iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            networks.append(iface.network)
            if link["ifname"] == interface and address is None:
                address = iface.ip
    if address is None:
        raise SystemSetupError(f"the egress interface {interface} has no IPv4 address")
    return Egress(interface, address, tuple(networks))


@dataclass(frozen=True)
class Neighbourhood:
    """The container's own global addresses and the gateways of its networks."""

    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    gateways: tuple[Gateway, ...]


def find_gateways() -> Neighbourhood:
    """The gateway address of each of the container's networks (IPv4 and IPv6): the host,
    on Docker's bridges. A route's gateway where the container has one; on a network
    without, the address Docker (and most address managers) give the gateway, its first."""
    families = ["-4"]
    if (sysctl.PROC_SYS / "net/ipv6").is_dir():
        families.append("-6")
    gateways: list[Gateway] = []
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for family in families:
        routes = _ip_json(family, "route", "show")
        links = _ip_json(family, "addr", "show", "scope", "global")
        gateways.extend(gateways_from(routes, links))
        addresses.extend(
            ipaddress.ip_address(info["local"])
            for link in links
            for info in link.get("addr_info", [])
            if "local" in info
        )
    return Neighbourhood(tuple(addresses), tuple(dict.fromkeys(gateways)))


def gateways_from(routes: list[dict[str, Any]], links: list[dict[str, Any]]) -> list[Gateway]:
    """Gateways in ``ip -j route show`` and ``ip -j addr show scope global`` output (one
    family). Link-local gateways are left out: nothing forwards to a link-local address."""
    found: list[Gateway] = []
    for route in routes:
        if "gateway" in route and "dev" in route:
            found.append(Gateway(ipaddress.ip_address(route["gateway"]), str(route["dev"])))
    for link in links:
        for info in link.get("addr_info", []):
            if "local" not in info:  # ip's filter leaves the other scopes as {}
                continue
            own = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
            first = first_host(own.network)
            if first is not None and first != own.ip:
                found.append(Gateway(first, str(link["ifname"])))
    return [gateway for gateway in found if not gateway.address.is_link_local]


@dataclass(frozen=True)
class EgressV6:
    """The interface of the IPv6 default route (it may differ from the IPv4 one)."""

    interface: str
    addresses: tuple[ipaddress.IPv6Interface, ...]  # its global addresses, with prefix
    networks: tuple[ipaddress.IPv6Network, ...]  # every global IPv6 network attached


def find_egress_v6() -> EgressV6 | None:
    """The IPv6 egress, or None when the container has no IPv6 default route."""
    if not (sysctl.PROC_SYS / "net/ipv6").is_dir():
        return None  # a kernel without IPv6, or booted with ipv6.disable=1
    routes = _ip_json("-6", "route", "show", "default")
    if not routes:
        return None
    interface = str(routes[0]["dev"])
    addresses: list[ipaddress.IPv6Interface] = []
    networks: list[ipaddress.IPv6Network] = []
    for link in _ip_json("-6", "addr", "show", "scope", "global"):
        for info in link.get("addr_info", []):
            if "local" not in info:  # ip's filter leaves the other scopes as {}
                continue
            iface = ipaddress.IPv6Interface(f"{info['local']}/{info['prefixlen']}")
            networks.append(iface.network)
            if link["ifname"] == interface:
                addresses.append(iface)
    return EgressV6(interface, tuple(addresses), tuple(networks))


def check_pool(pool: ipaddress.IPv4Network, egress: Egress) -> None:
    for network in egress.networks:
        if pool.overlaps(network):
            raise ConfigError(
                "VPN_POOL_V4",
                f"{pool} overlaps the container's network {network}",
                "choose a private range that no attached network uses",
            )


def check_pool_v6(pool: ipaddress.IPv6Network, egress: V6Egress, found: EgressV6 | None) -> None:
    """The container can carry clients' IPv6 traffic, and the pool fits its networks."""
    if found is None:
        raise SystemSetupError(
            "VPN_POOL_V6 is set but the container has no IPv6 default route; attach it to a "
            "network with IPv6 (Docker: --ipv6 on the network, enable_ipv6 in compose) or "
            "unset VPN_POOL_V6"
        )
    if egress is V6Egress.NDP_PROXY:
        on_link = [a.network for a in found.addresses if pool.subnet_of(a.network)]
        if not on_link:
            raise ConfigError(
                "VPN_POOL_V6",
                f"{pool} is not inside an on-link prefix of {found.interface} "
                f"({', '.join(str(a.network) for a in found.addresses) or 'none'}), which "
                "VPN_POOL_V6_EGRESS=ndp-proxy needs",
                "give a part of the /64 your provider put on this interface",
            )
        for own in found.addresses:
            if own.ip in pool:
                raise ConfigError(
                    "VPN_POOL_V6",
                    f"{pool} holds the server's own address {own.ip}",
                    "give a part of the on-link /64 that no host uses",
                )
        return
    for network in found.networks:
        if pool.overlaps(network):
            raise ConfigError(
                "VPN_POOL_V6",
                f"{pool} overlaps the container's network {network}",
                "choose a prefix that no attached network uses",
            )


def check_ipv6_sysctls(egress: V6Egress) -> None:
    """With VPN_POOL_V6: IPv6 forwarding on and IPv6 not disabled for new interfaces (ipsec0),
    or one line naming the --sysctl flags; NDP proxying also needs proxy_ndp."""
    if not (sysctl.PROC_SYS / "net/ipv6").is_dir():
        raise SystemSetupError(
            "VPN_POOL_V6 is set but the kernel has no IPv6 (booted with ipv6.disable=1?); "
            "unset VPN_POOL_V6 or enable IPv6 on the host"
        )
    wanted = dict(defaults.SYSCTLS_V6)
    if egress is V6Egress.NDP_PROXY:
        wanted["net.ipv6.conf.all.proxy_ndp"] = "1"
    missing = [name for name, value in wanted.items() if not sysctl.set_sysctl(name, value)]
    if missing:
        flags = " ".join(f"--sysctl {name}={wanted[name]}" for name in missing)
        raise SystemSetupError(
            f"VPN_POOL_V6 is set but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not as needed and /proc/sys is "
            f"read-only; add {flags} (sysctls: in compose, securityContext.sysctls in "
            "Kubernetes) or unset VPN_POOL_V6"
        )
