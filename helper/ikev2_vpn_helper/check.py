"""Judging a check: what a user would notice of a connection attempt (pure functions).

:func:`ikev2_vpn_helper.session.run_check` produces the inputs with real containers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import HelperError
from .vpnclient import CONNECT_TIMEOUT_S, ConnectResult, TrafficResult


@dataclass(frozen=True)
class Finding:
    """One thing the check looked at: its name, whether it holds, and what was seen."""

    check: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class CheckOptions:
    ca_pem: bytes | None = None  # None: the server's /data/ca.crt
    server_id: str | None = None  # None: the server's VPN_HOST (or what charon loaded)
    client_network: str | None = None  # None: a network the server shares, wan preferred
    image: str | None = None  # None: the server container's own image
    timeout_s: int = CONNECT_TIMEOUT_S
    keep: bool = False
    run_id: str | None = None
    topology: str | None = None  # attach the server to this topology's wan for the client
    ike_proposals: str | None = None
    esp_proposals: str | None = None


@dataclass(frozen=True)
class CheckReport:
    server: str
    server_address: str
    server_id: str
    client_network: str
    client_address: str
    user: str
    pool: str
    egress_address: str
    target_address: str | None
    connection: ConnectResult
    traffic: TrafficResult | None
    findings: list[Finding] = field(default_factory=list)
    run_id: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.findings) and all(finding.ok for finding in self.findings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        if self.connection.connected:
            data["connection"].pop("log")
        return data


def evaluate(
    connection: ConnectResult,
    traffic: TrafficResult | None,
    *,
    pool: ipaddress.IPv4Network,
    egress_address: str,
    client_address: str,
    split: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
    target_address: str | None = None,
) -> list[Finding]:
    """Judge a connection attempt and the traffic that followed. ``split``: the server's
    VPN_SPLIT_NETS, which may leave the target outside the tunnel."""
    if not connection.connected:
        return [Finding("connected", False, connection.error or "the connection failed")]
    findings = [Finding("connected", True, f"in {connection.connect_ms:.0f} ms")]
    findings.append(_virtual_ip(connection.virtual_ip, pool))
    findings.append(
        Finding("DNS pushed", True, ", ".join(connection.dns))
        if connection.dns
        else Finding("DNS pushed", False, "the server pushed no DNS server")
    )
    if traffic is None:
        return [*findings, Finding("traffic", False, "no traffic was sent")]
    if split and target_address and not _inside(target_address, split):
        nets = ", ".join(map(str, split))
        return [
            *findings,
            Finding(
                "traffic",
                False,
                f"the target {target_address} is outside the server's VPN_SPLIT_NETS ({nets}), "
                "so the tunnel does not carry traffic to it; add the server's egress network "
                "to VPN_SPLIT_NETS to check traffic",
            ),
        ]
    findings.append(_nat(traffic, connection.virtual_ip, egress_address, client_address))
    findings.append(_icmp(traffic, connection.virtual_ip, egress_address, client_address))
    return findings


def _inside(
    address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    found = ipaddress.ip_address(address)
    return any(found in network for network in networks)


def _virtual_ip(address: str | None, pool: ipaddress.IPv4Network) -> Finding:
    if address is None:
        return Finding("virtual IP", False, "the server assigned no virtual IP")
    if ipaddress.ip_address(address) not in pool:
        return Finding("virtual IP", False, f"{address} is outside the pool {pool}")
    return Finding("virtual IP", True, f"{address} (pool {pool})")


def _source_problem(
    source: str, virtual_ip: str | None, egress_address: str, client_address: str
) -> str | None:
    if source == egress_address:
        return None
    if source == virtual_ip:
        return f"the target saw the client's virtual IP {source}: the server does not NAT"
    if source == client_address:
        return f"the target saw the client's own address {source}: traffic bypassed the tunnel"
    return f"the target saw {source}, not the server's egress address {egress_address}"


def _nat(
    traffic: TrafficResult, virtual_ip: str | None, egress_address: str, client_address: str
) -> Finding:
    if traffic.tcp_source is None:
        return Finding(
            "NAT (TCP)", False, f"the target did not answer ({traffic.error or 'no reply'})"
        )
    problem = _source_problem(traffic.tcp_source, virtual_ip, egress_address, client_address)
    if problem:
        return Finding("NAT (TCP)", False, problem)
    return Finding(
        "NAT (TCP)", True, f"the target saw {traffic.tcp_source} (the server's egress address)"
    )


def _icmp(
    traffic: TrafficResult, virtual_ip: str | None, egress_address: str, client_address: str
) -> Finding:
    replies = f"{traffic.icmp_received}/{traffic.icmp_sent} echo replies"
    for source in traffic.icmp_sources:
        problem = _source_problem(source, virtual_ip, egress_address, client_address)
        if problem:
            return Finding("ICMP", False, f"{replies}; {problem}")
    if traffic.icmp_received == 0:
        return Finding("ICMP", False, f"{replies} from {traffic.target}")
    if not traffic.icmp_sources:
        return Finding("ICMP", False, f"{replies}, but the target recorded no echo request")
    return Finding("ICMP", True, f"{replies}; the target saw {', '.join(traffic.icmp_sources)}")


def format_report(report: CheckReport) -> str:
    lines = [
        f"check of server {report.server} at {report.server_address} "
        f"(identity {report.server_id}) as user {report.user}"
    ]
    width = max(len(finding.check) for finding in report.findings) if report.findings else 0
    for finding in report.findings:
        mark = "ok  " if finding.ok else "FAIL"
        lines.append(f"  {mark} {finding.check.ljust(width)}  {finding.detail}")
    if not report.connection.connected and report.connection.log:
        lines.append("  client log (last lines):")
        lines.extend(f"    | {line}" for line in report.connection.log[-12:])
    lines.append("PASS" if report.ok else "FAIL")
    return "\n".join(lines)


def choose_client_network(
    server_networks: Mapping[str, str], egress_network: str | None, wan_networks: set[str]
) -> str:
    """The network the check's client shares with the server.

    A topology's wan when the server is on one; else a network that is not the server's
    egress (a client reaching the server from outside); else the egress network itself.
    """
    if not server_networks:
        raise HelperError(
            "the server has no address on a Docker network (host networking?); "
            "the check's client cannot reach it"
        )
    names = sorted(server_networks)
    for preferred in (
        [name for name in names if name in wan_networks],
        [name for name in names if name != egress_network],
        names,
    ):
        if preferred:
            return preferred[0]
    raise AssertionError("unreachable")
