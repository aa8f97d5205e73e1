"""What a connected client can reach besides the networks behind the server: services of
the server container, link-local addresses (cloud metadata) and other clients. Each setting
both ways: one server with the defaults, one with all three flipped.

The metadata service stays inside the lab: a target on the egress network holds
169.254.169.254 on its loopback, and each server routes that address on-link to the egress
network (as a cloud VM does), so the lookup is answered on the bridge and goes nowhere else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.vpnclient import Target, TrafficResult, VpnClient
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
PASSWORD = b"correct horse"
METADATA = "169.254.169.254"
SERVICE_PORT = 8081  # a service inside the server container
PEER_PORT = 8082  # a service on one client, for the other
FLIPPED = {
    "VPN_CLIENT_ISOLATION": "on",
    "VPN_ALLOW_SERVER_ACCESS": "on",
    "VPN_ALLOW_LINK_LOCAL": "on",
}


@dataclass(frozen=True)
class Scenario:
    settings: dict[str, str]
    server: Server
    egress_address: str
    phone: VpnClient
    phone_ip: str
    laptop: VpnClient
    service: Target  # in the server container, at its egress address
    peer: Target  # on the laptop, at its virtual IP
    metadata: Target

    def on(self, setting: str) -> bool:
        return self.settings.get(setting) == "on"


@pytest.fixture(scope="module")
def metadata(lab: Lab) -> Target:
    """A stand-in for a cloud metadata service, on the egress network only."""
    target = Target.start(
        lab.engine,
        image=lab.image,
        network=lab.topology.egress,
        name=lab.name("metadata"),
        run_id=lab.run_id,
        cap_add=["NET_ADMIN"],
    )
    eng.run_checked(target.container, ["ip", "address", "add", f"{METADATA}/32", "dev", "lo"])
    return Target(target.container, METADATA, target.port)


def connected(lab: Lab, server: Server) -> tuple[VpnClient, str]:
    client = lab.start_client(server)
    result = client.connect("alice", PASSWORD.decode())
    assert result.connected, result.error
    assert result.virtual_ip is not None
    return client, result.virtual_ip


@pytest.fixture(scope="module", params=[{}, FLIPPED], ids=["defaults", "flipped"])
def scenario(lab: Lab, metadata: Target, request: pytest.FixtureRequest) -> Iterator[Scenario]:
    settings: dict[str, str] = request.param
    role = "access-" + ("flipped" if settings else "defaults")
    server = lab.start_server(
        {"VPN_HOST": HOST, "VPN_USER": "alice", **settings},
        name=lab.name(role),
        volume=lab.name(f"{role}-data"),
        secret_files={"VPN_PASSWORD_FILE": PASSWORD},
    )
    egress = server.egress()
    eng.run_checked(
        server.container, ["ip", "route", "add", f"{METADATA}/32", "dev", egress.interface]
    )
    service = Target.serve_in(server.container, egress.address, SERVICE_PORT)
    phone, phone_ip = connected(lab, server)
    laptop, laptop_ip = connected(lab, server)
    peer = Target.serve_in(laptop.container, laptop_ip, PEER_PORT)
    yield Scenario(
        settings, server, egress.address, phone, phone_ip, laptop, service, peer, metadata
    )
    for container in (phone, laptop, server):  # one server at a time on two cores
        container.remove()


def reach(client: VpnClient, target: Target) -> TrafficResult:
    """One ping and one TCP connection; a blocked path costs about four seconds."""
    return client.send_traffic(target, count=1, timeout_s=2.0)


def assert_reached(traffic: TrafficResult, source: str) -> None:
    assert traffic.tcp_source == source, traffic
    assert traffic.icmp_received == 1, traffic


def assert_blocked(traffic: TrafficResult) -> None:
    assert traffic.tcp_source is None, traffic
    assert traffic.icmp_received == 0, traffic


def test_clients_reach_the_target_through_nat(lab: Lab, scenario: Scenario) -> None:
    target = lab.target(scenario.server)
    for client in (scenario.phone, scenario.laptop):
        assert_reached(reach(client, target), scenario.egress_address)


def test_services_of_the_server_container(scenario: Scenario) -> None:
    traffic = reach(scenario.phone, scenario.service)
    if scenario.on("VPN_ALLOW_SERVER_ACCESS"):
        assert_reached(traffic, scenario.phone_ip)  # not masqueraded: delivered locally
    else:
        assert_blocked(traffic)


def test_link_local_addresses(scenario: Scenario) -> None:
    traffic = reach(scenario.phone, scenario.metadata)
    if scenario.on("VPN_ALLOW_LINK_LOCAL"):
        assert_reached(traffic, scenario.egress_address)
    else:
        assert_blocked(traffic)


def test_clients_reach_each_other_unless_isolated(scenario: Scenario) -> None:
    traffic = reach(scenario.phone, scenario.peer)
    if scenario.on("VPN_CLIENT_ISOLATION"):
        assert_blocked(traffic)
    else:
        assert_reached(traffic, scenario.phone_ip)  # each other's virtual IPs, no NAT
        assert ipaddress.ip_address(scenario.phone_ip) in scenario.server.pool


def test_the_effective_policy_is_logged_at_start(scenario: Scenario) -> None:
    lines = [line for line in scenario.server.logs(200).splitlines() if "may reach" in line]
    assert len(lines) == 1
    isolated = scenario.on("VPN_CLIENT_ISOLATION")
    assert f"each other {'no' if isolated else 'yes'}" in lines[0]
