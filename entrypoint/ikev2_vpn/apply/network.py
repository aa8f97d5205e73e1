"""The container's network: where traffic leaves, forwarding, and the firewall.

Reading functions (egress, addresses) come first; the rest changes the system.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import defaults
from ..errors import ConfigError, SystemSetupError

log = logging.getLogger(__name__)

PROC_SYS = Path("/proc/sys")


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


def check_pool(pool: ipaddress.IPv4Network, egress: Egress) -> None:
    for network in egress.networks:
        if pool.overlaps(network):
            raise ConfigError(
                "VPN_POOL_V4",
                f"{pool} overlaps the container's network {network}",
                "choose a private range that no attached network uses",
            )


def enable_forwarding() -> None:
    """Set the sysctls the server needs, or say which --sysctl flag is missing."""
    for name, wanted in defaults.SYSCTLS.items():
        path = PROC_SYS / name.replace(".", "/")
        if path.read_text().strip() == wanted:
            continue
        try:
            path.write_text(wanted + "\n")
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            if name == "net.ipv4.ip_forward":
                raise SystemSetupError(
                    f"{name} is off and /proc/sys is read-only; add --sysctl {name}={wanted} "
                    f"(sysctls: [{name}={wanted}] in compose, securityContext.sysctls in "
                    "Kubernetes)"
                ) from None
            log.warning(
                "%s is not %s and /proc/sys is read-only; add --sysctl %s=%s",
                name,
                wanted,
                name,
                wanted,
            )


def apply_firewall(ruleset: str) -> None:
    """Replace the server's own nftables table in one transaction."""
    result = subprocess.run(
        ["nft", "-f", "-"], input=ruleset, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[0] if result.stderr.strip() else "failed"
        raise SystemSetupError(f"installing the firewall rules failed: {message}")
