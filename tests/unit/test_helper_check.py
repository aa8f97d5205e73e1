"""Judging a check: what a user would notice."""

from __future__ import annotations

import ipaddress

import pytest

from ikev2_vpn_helper.check import (
    CheckReport,
    Finding,
    choose_client_network,
    evaluate,
    format_report,
)
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.vpnclient import ConnectResult, TrafficResult

POOL = ipaddress.IPv4Network("10.10.10.0/24")
EGRESS = "198.51.100.2"
CLIENT = "192.0.2.3"
CONNECTED = ConnectResult(True, "10.10.10.1", ["198.51.100.53"], 80.4)


def traffic(source: str | None = EGRESS, received: int = 3) -> TrafficResult:
    sources = [source] if source else []
    return TrafficResult("198.51.100.3", source, 3, received, sources)


def judge(connection: ConnectResult, seen: TrafficResult | None) -> dict[str, Finding]:
    findings = evaluate(connection, seen, pool=POOL, egress_address=EGRESS, client_address=CLIENT)
    return {finding.check: finding for finding in findings}


def test_a_working_server_passes_every_check() -> None:
    findings = judge(CONNECTED, traffic())
    assert all(finding.ok for finding in findings.values())
    assert list(findings) == ["connected", "virtual IP", "DNS pushed", "NAT (TCP)", "ICMP"]
    assert findings["connected"].detail == "in 80 ms"


def test_a_refused_login_is_one_failed_finding_with_the_error() -> None:
    failed = ConnectResult(False, error="received AUTHENTICATION_FAILED notify error")
    assert judge(failed, None) == {
        "connected": Finding("connected", False, "received AUTHENTICATION_FAILED notify error")
    }


def test_virtual_ip_outside_the_pool_fails() -> None:
    outside = ConnectResult(True, "10.99.0.1", ["198.51.100.53"], 80.0)
    finding = judge(outside, traffic())["virtual IP"]
    assert not finding.ok
    assert "outside the pool 10.10.10.0/24" in finding.detail


def test_missing_virtual_ip_fails() -> None:
    assert not judge(ConnectResult(True, None, ["198.51.100.53"], 80.0), traffic())["virtual IP"].ok


def test_missing_dns_fails() -> None:
    assert not judge(ConnectResult(True, "10.10.10.1", [], 80.0), traffic())["DNS pushed"].ok


@pytest.mark.parametrize(
    ("source", "explanation"),
    [
        ("10.10.10.1", "does not NAT"),
        (CLIENT, "bypassed the tunnel"),
        ("198.51.100.9", "not the server's egress address"),
    ],
)
def test_a_target_that_sees_another_source_fails_nat(source: str, explanation: str) -> None:
    findings = judge(CONNECTED, traffic(source))
    assert not findings["NAT (TCP)"].ok
    assert explanation in findings["NAT (TCP)"].detail
    assert not findings["ICMP"].ok


def test_no_answer_from_the_target_fails_both_traffic_checks() -> None:
    silent = TrafficResult("198.51.100.3", None, 3, 0, [], "timed out")
    findings = judge(CONNECTED, silent)
    assert "timed out" in findings["NAT (TCP)"].detail
    assert findings["ICMP"].detail == "0/3 echo replies from 198.51.100.3"


def test_echo_requests_from_the_virtual_ip_explain_missing_replies() -> None:
    unnatted = TrafficResult("198.51.100.3", None, 3, 0, ["10.10.10.1"], "timed out")
    assert "does not NAT" in judge(CONNECTED, unnatted)["ICMP"].detail


def test_no_traffic_fails() -> None:
    assert not judge(CONNECTED, None)["traffic"].ok


def report(findings: list[Finding], connection: ConnectResult = CONNECTED) -> CheckReport:
    return CheckReport(
        server="ikev2-vpn",
        server_address="192.0.2.10",
        server_id="vpn.example.test",
        client_network="wan",
        client_address=CLIENT,
        user="alice",
        pool=str(POOL),
        egress_address=EGRESS,
        target_address="198.51.100.3",
        connection=connection,
        traffic=traffic(),
        findings=findings,
    )


def test_report_is_ok_only_when_every_finding_holds() -> None:
    assert report([Finding("a", True, "")]).ok
    assert not report([Finding("a", True, ""), Finding("b", False, "")]).ok
    assert not report([]).ok


def test_human_report_ends_with_the_verdict() -> None:
    text = format_report(report([Finding("connected", True, "in 80 ms")]))
    assert text.splitlines()[-1] == "PASS"
    assert "ok   connected  in 80 ms" in text
    failed = ConnectResult(False, error="boom", log=["[IKE] line one", "[IKE] boom"])
    text = format_report(report([Finding("connected", False, "boom")], failed))
    assert "FAIL connected  boom" in text
    assert "| [IKE] boom" in text
    assert text.splitlines()[-1] == "FAIL"


def test_json_report_drops_the_log_of_a_good_connection() -> None:
    data = report([Finding("connected", True, "in 80 ms")]).to_dict()
    assert data["ok"] is True
    assert "log" not in data["connection"]
    assert data["traffic"]["tcp_source"] == EGRESS


def test_client_network_prefers_a_topology_wan() -> None:
    networks = {"a-egress": "198.51.100.2", "a-wan": "192.0.2.2"}
    assert choose_client_network(networks, "a-egress", {"a-wan"}) == "a-wan"


def test_client_network_avoids_the_egress_network() -> None:
    networks = {"lan": "172.20.0.2", "outside": "172.21.0.2"}
    assert choose_client_network(networks, "outside", set()) == "lan"


def test_client_network_falls_back_to_the_only_network() -> None:
    assert choose_client_network({"bridge": "172.17.0.2"}, "bridge", set()) == "bridge"


def test_a_server_without_network_address_cannot_be_checked() -> None:
    with pytest.raises(HelperError, match="host networking"):
        choose_client_network({}, None, set())


def test_a_target_outside_the_servers_split_tunnel_is_named_as_the_reason() -> None:
    """Against a server with VPN_SPLIT_NETS the check's target (on the server's egress
    network) may lie outside the split: say so rather than blame NAT."""
    split = (ipaddress.ip_network("10.20.0.0/16"),)
    unreached = TrafficResult("198.19.0.5", None, 3, 0, [])
    findings = evaluate(
        CONNECTED,
        unreached,
        pool=POOL,
        egress_address=EGRESS,
        client_address=CLIENT,
        split=split,
        target_address="198.19.0.5",
    )
    last = findings[-1]
    assert (last.check, last.ok) == ("traffic", False)
    assert "outside the server's VPN_SPLIT_NETS (10.20.0.0/16)" in last.detail
    inside = evaluate(
        CONNECTED,
        traffic(),
        pool=POOL,
        egress_address=EGRESS,
        client_address=CLIENT,
        split=(ipaddress.ip_network("198.51.100.0/24"),),
        target_address="198.51.100.3",
    )
    assert all(finding.ok for finding in inside)
