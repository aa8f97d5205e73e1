"""The container's network as the server needs it: forwarding, the firewall, NDP proxies.
(Where traffic leaves is a probe: :mod:`ikev2_vpn.probe.network`.)"""

from __future__ import annotations

import ipaddress
import logging
import subprocess

from .. import defaults, sysctl
from ..errors import SystemSetupError

log = logging.getLogger(__name__)


def add_ndp_proxies(pool: ipaddress.IPv6Network, interface: str) -> int:
    """Answer neighbour solicitations on ``interface`` for every address of the pool, so the
    provider's router delivers clients' traffic to the server. Static entries for the whole
    pool: nothing to keep in step with charon's leases, and an address without a tunnel
    only draws packets the forward chain drops. One ``ip`` process for all of them."""
    commands = "".join(
        f"neigh replace proxy {address} dev {interface}\n" for address in pool_hosts(pool)
    )
    subprocess.run(["ip", "-6", "-batch", "-"], input=commands, text=True, check=True)
    return commands.count("\n")


def pool_hosts(pool: ipaddress.IPv6Network) -> list[ipaddress.IPv6Address]:
    """The pool's addresses but its network address, which charon never hands out."""
    return list(pool)[1:]


def enable_forwarding() -> None:
    """Set the sysctls the server needs, or say which --sysctl flag is missing."""
    for name, wanted in defaults.SYSCTLS.items():
        if sysctl.set_sysctl(name, wanted):
            continue
        if name == "net.ipv4.ip_forward":
            raise SystemSetupError(
                f"{name} is off and /proc/sys is read-only; add --sysctl {name}={wanted} "
                f"(sysctls: [{name}={wanted}] in compose, securityContext.sysctls in "
                "Kubernetes)"
            )
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
