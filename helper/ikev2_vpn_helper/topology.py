"""An isolated test topology: two Docker networks in the benchmarking range 198.18.0.0/15.

- ``wan``: clients and the server. Internal: the engine drops whatever would leave its
  subnet, so a client reaches nothing but the server except through the tunnel.
- ``egress``: the server's default route and the target. Not internal, because the engine
  prefers non-internal networks for a container's default route; nothing in a test sends to
  public addresses, so nothing leaves the machine.

The range is RFC 2544's, set aside for benchmarking networks and never routed on the
Internet. (The documentation ranges used before are not safe: machines sit in them, and
this project's CI reaches its package mirror at one.) It is cut into /26 slots so parallel
runs on one engine get their own subnets; each role starts with its own half (198.18.0.0/16
wan, 198.19.0.0/16 egress) and moves on to the other when it is full.

A slot is never used when it overlaps the engine's networks or, with a local engine, the
host's own networks or any address the host talks to (its resolvers, gateways, proxies,
TCP peers and package mirrors: :mod:`ikev2_vpn_helper.hostnet`). A bridge holding such an
address takes the host's route to it away and cuts the whole machine off.

With ``ipv6``, both networks are dual stack: each also gets a free /64 of IPv6's
documentation prefix 2001:db8::/32 (RFC 3849), found the same way.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import docker
from docker.errors import APIError, NotFound
from docker.models.networks import Network
from docker.types import IPAMConfig, IPAMPool

from . import engine as eng
from .errors import HelperError
from .hostnet import Network as AnyNetwork
from .hostnet import host_peers

# RFC 2544's benchmarking range, one half per role first.
BENCHMARK_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
WAN_HALF, EGRESS_HALF = BENCHMARK_RANGE.subnets(prefixlen_diff=1)
WAN_SPACES = (WAN_HALF, EGRESS_HALF)
EGRESS_SPACES = (EGRESS_HALF, WAN_HALF)
SLOT_PREFIX = 26
ATTEMPTS = 32  # slots tried when other runs take them between listing and creating
IPV6_DOC = ipaddress.IPv6Network("2001:db8::/32")
SLOT_PREFIX_V6 = 64
LABEL_TOPOLOGY = "ikev2-vpn.topology"


@dataclass(frozen=True)
class Topology:
    """Names and subnets of the two networks."""

    name: str
    wan: str
    egress: str
    wan_subnet: ipaddress.IPv4Network
    egress_subnet: ipaddress.IPv4Network
    wan_subnet_v6: ipaddress.IPv6Network | None = None  # dual stack topologies only
    egress_subnet_v6: ipaddress.IPv6Network | None = None


def network_names(name: str) -> tuple[str, str]:
    """(wan, egress). The egress name sorts first, which the engine also uses to pick the
    default route when priorities tie."""
    return f"{name}-wan", f"{name}-egress"


def free_subnets(
    spaces: Iterable[ipaddress.IPv4Network],
    taken: Iterable[ipaddress.IPv4Network],
    prefix: int = SLOT_PREFIX,
) -> Iterator[ipaddress.IPv4Network]:
    """Slots of ``spaces`` (in order) that overlap none of ``taken``."""
    used = list(taken)
    for space in spaces:
        for slot in space.subnets(new_prefix=prefix):
            if not any(slot.overlaps(other) for other in used):
                yield slot


def free_subnets_v6(
    space: ipaddress.IPv6Network,
    taken: Iterable[ipaddress.IPv6Network],
    prefix: int = SLOT_PREFIX_V6,
) -> Iterator[ipaddress.IPv6Network]:
    """IPv6 slots of ``space`` (in order) that overlap none of ``taken``."""
    used = list(taken)
    for slot in space.subnets(new_prefix=prefix):
        if not any(slot.overlaps(other) for other in used):
            yield slot


def engine_subnets(engine: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    return [s for s in _engine_networks(engine) if isinstance(s, ipaddress.IPv4Network)]


def engine_subnets_v6(engine: docker.DockerClient) -> list[ipaddress.IPv6Network]:
    return [s for s in _engine_networks(engine) if isinstance(s, ipaddress.IPv6Network)]


def _engine_networks(
    engine: docker.DockerClient,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    subnets = []
    for network in engine.networks.list():
        for pool in (network.attrs.get("IPAM") or {}).get("Config") or []:
            try:
                subnets.append(ipaddress.ip_network(pool.get("Subnet", ""), strict=False))
            except ValueError:
                continue
    return subnets


def host_subnets() -> list[ipaddress.IPv4Network]:
    """IPv4 networks the local host is attached to or routes to (not default routes).

    Read with ``ip`` when the engine runs on this host; elsewhere nothing can be known and
    the engine's own subnets are all that is avoided.
    """
    subnets = []
    for text in _host_prefixes("-4"):
        try:
            subnets.append(ipaddress.IPv4Network(text, strict=False))
        except ValueError:
            continue
    return subnets


def host_subnets_v6() -> list[ipaddress.IPv6Network]:
    """The same for IPv6."""
    subnets = []
    for text in _host_prefixes("-6"):
        try:
            subnets.append(ipaddress.IPv6Network(text, strict=False))
        except ValueError:
            continue
    return subnets


def _host_prefixes(family: str) -> Iterator[str]:
    ip = shutil.which("ip")
    if ip is None or not eng.engine_is_local():
        return
    for argv in ([ip, "-j", family, "route", "show", "table", "all"], [ip, "-j", family, "addr"]):
        try:
            output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            entries = json.loads(output or "[]")
        except (OSError, subprocess.CalledProcessError, ValueError):
            continue
        for entry in entries:
            yield from _prefixes(entry)


def _prefixes(entry: dict[str, object]) -> Iterator[str]:
    dst = entry.get("dst")
    if isinstance(dst, str) and dst not in {"default", "broadcast"}:
        yield dst
    for info in entry.get("addr_info", []) or []:  # type: ignore[attr-defined]
        if isinstance(info, dict) and "local" in info and "prefixlen" in info:
            yield f"{info['local']}/{info['prefixlen']}"


def host_avoided() -> list[AnyNetwork]:
    """What a lab network must not overlap on the host: its own networks and every address
    it talks to. Knowable only when the engine runs on this host; else nothing."""
    if not eng.engine_is_local():
        return []
    return [*host_subnets(), *host_subnets_v6(), *host_peers()]


def free_lab_subnet(engine: docker.DockerClient) -> ipaddress.IPv4Network:
    """A free /26 for a network made outside a topology (a Compose project's)."""
    avoid = [*engine_subnets(engine), *_v4(host_avoided())]
    slot = next(free_subnets(WAN_SPACES, avoid), None)
    if slot is None:
        raise HelperError(f"no free /{SLOT_PREFIX} left in {BENCHMARK_RANGE}")
    return slot


def _v4(networks: Iterable[AnyNetwork]) -> list[ipaddress.IPv4Network]:
    return [n for n in networks if isinstance(n, ipaddress.IPv4Network)]


def _v6(networks: Iterable[AnyNetwork]) -> list[ipaddress.IPv6Network]:
    return [n for n in networks if isinstance(n, ipaddress.IPv6Network)]


def ensure_topology(
    engine: docker.DockerClient, name: str, run_id: str | None = None, *, ipv6: bool = False
) -> Topology:
    """Create the two networks of topology ``name``, or reuse them when they exist."""
    wan_name, egress_name = network_names(name)
    avoid = host_avoided()
    wan = _ensure_network(
        engine,
        wan_name,
        name,
        "wan",
        WAN_SPACES,
        avoid=avoid,
        internal=True,
        run_id=run_id,
        ipv6=ipv6,
    )
    egress = _ensure_network(
        engine,
        egress_name,
        name,
        "egress",
        EGRESS_SPACES,
        avoid=avoid,
        internal=False,
        run_id=run_id,
        ipv6=ipv6,
    )
    return Topology(
        name,
        wan.name,
        egress.name,
        _subnet_of(wan),
        _subnet_of(egress),
        _subnet_v6_of(wan),
        _subnet_v6_of(egress),
    )


def _subnets(network: Network) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(pool["Subnet"]) for pool in network.attrs["IPAM"]["Config"]]


def _subnet_of(network: Network) -> ipaddress.IPv4Network:
    return next(s for s in _subnets(network) if isinstance(s, ipaddress.IPv4Network))


def _subnet_v6_of(network: Network) -> ipaddress.IPv6Network | None:
    return next((s for s in _subnets(network) if isinstance(s, ipaddress.IPv6Network)), None)


def _ensure_network(
    engine: docker.DockerClient,
    name: str,
    topology: str,
    role: str,
    spaces: Sequence[ipaddress.IPv4Network],
    *,
    avoid: Sequence[AnyNetwork],
    internal: bool,
    run_id: str | None,
    ipv6: bool = False,
) -> Network:
    try:
        return engine.networks.get(name)
    except NotFound:
        pass
    labels = {**eng.labels(run_id, role), LABEL_TOPOLOGY: topology}
    # Other runs on the same engine may take a slot between listing and creating: a slot
    # refused as overlapping is not tried again, and the engine's networks are listed anew.
    refused: list[AnyNetwork] = []
    for _attempt in range(ATTEMPTS):
        taken = [*engine_subnets(engine), *_v4(avoid), *_v4(refused)]
        slot = next(free_subnets(spaces, taken), None)
        if slot is None:
            raise HelperError(
                f"no free /{SLOT_PREFIX} left in {BENCHMARK_RANGE} for network {name}; "
                "remove old test networks with `ikev2-vpn-helper clean --all`"
            )
        pools = [IPAMPool(subnet=str(slot))]
        refused.append(slot)
        if ipv6:
            taken_v6 = [*engine_subnets_v6(engine), *_v6(avoid), *_v6(refused)]
            slot_v6 = next(free_subnets_v6(IPV6_DOC, taken_v6), None)
            if slot_v6 is None:
                raise HelperError(f"no free /{SLOT_PREFIX_V6} left in {IPV6_DOC} for {name}")
            pools.append(IPAMPool(subnet=str(slot_v6)))
            refused.append(slot_v6)
        try:
            return engine.networks.create(
                name,
                driver="bridge",
                internal=internal,
                labels=labels,
                enable_ipv6=ipv6,
                ipam=IPAMConfig(pool_configs=pools),
                check_duplicate=True,
            )
        except APIError as error:
            if "overlap" not in str(error.explanation).lower():
                raise HelperError(f"cannot create network {name}: {error.explanation}") from None
    raise HelperError(
        f"cannot create network {name}: {ATTEMPTS} free subnets were taken by other runs meanwhile"
    )
