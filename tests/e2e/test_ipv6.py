"""Dual stack (VPN_POOL_V6): clients get an IPv4 and an IPv6 address, reach an IPv6-only
target through the tunnel, and can dial the server over IPv6.

The lab's networks carry IPv6 from 2001:db8::/32 (documentation prefix). The target keeps
only its IPv6 address, so whatever reaches it came through the tunnel over IPv6. With NAT66
it sees the server's IPv6 address; with a routed pool it sees the client's own pool address
(it has a route for the pool via the server, as the provider's router would).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import docker
import pytest
from cryptography import x509

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.vpnclient import ConnectResult, Target, TrafficResult, VpnClient
from ikev2_vpn_lab.lab import Lab

PASSWORD = b"correct horse"
POOL_V6_ULA = ipaddress.IPv6Network("fd00:10:10::/112")
# Routed: outside every lab network (those are low /64s of 2001:db8::/32).
POOL_V6_ROUTED = ipaddress.IPv6Network("2001:db8:ffff:7::/112")
DNS_V6 = "2001:db8:53::53"
SERVICE_PORT = 8081  # a service inside the server container
PEER_PORT = 8082  # a service on one client, for another
LEAF = "/data/pki/server.crt"  # the self-signed mode's server certificate


@pytest.fixture(scope="module")
def lab(engine: docker.DockerClient, image: str) -> Iterator[Lab]:
    """A lab whose wan and egress networks are dual stack."""
    with Lab(engine, image=image, ipv6=True) as lab:
        yield lab


def start(lab: Lab, role: str, **env: str) -> Server:
    return lab.start_server(
        {"VPN_HOST": f"{role}.example.test", "VPN_USER": "alice", **env},
        name=lab.name(role),
        volume=lab.name(f"{role}-data"),
        secret_files={"VPN_PASSWORD_FILE": PASSWORD},
    )


def egress_v6(server: Server, lab: Lab) -> str:
    return server.networks_v6()[lab.topology.egress]


def connect(client: VpnClient) -> ConnectResult:
    result = client.connect("alice", PASSWORD.decode(), ipv6=True)
    assert result.connected, result.error
    return result


def reach(client: VpnClient, target: Target) -> TrafficResult:
    return client.send_traffic(target, count=2, timeout_s=2.0)


@pytest.fixture(scope="module")
def nat66(lab: Lab) -> Iterator[Server]:
    server = start(lab, "nat66", VPN_POOL_V6=str(POOL_V6_ULA), VPN_DNS=f"1.1.1.1,{DNS_V6}")
    yield server
    server.remove()  # one server at a time on two cores


def test_client_gets_both_addresses_and_ipv6_dns(lab: Lab, nat66: Server) -> None:
    client = lab.start_client(nat66, ipv6=True)
    result = connect(client)
    assert result.virtual_ip is not None
    assert ipaddress.ip_address(result.virtual_ip) in nat66.pool
    assert result.virtual_ip_v6 is not None
    assert ipaddress.ip_address(result.virtual_ip_v6) in POOL_V6_ULA
    assert DNS_V6 in result.dns and "1.1.1.1" in result.dns


def test_nat66_target_sees_the_servers_ipv6_address(lab: Lab, nat66: Server) -> None:
    client = lab.start_client(nat66, ipv6=True)
    connect(client)
    traffic = reach(client, lab.target_v6(nat66))
    assert traffic.tcp_source == egress_v6(nat66, lab), traffic
    assert traffic.icmp_received == 2, traffic
    # IPv4 keeps working beside it, still behind the server's IPv4 address.
    traffic_v4 = reach(client, lab.target(nat66))
    assert traffic_v4.tcp_source == nat66.egress().address, traffic_v4


def test_ike_over_ipv6_outer_transport(lab: Lab, nat66: Server) -> None:
    client = lab.start_client(nat66, ipv6=True, dial_ipv6=True)
    assert ipaddress.ip_address(client.server_address).version == 6
    result = connect(client)
    assert result.virtual_ip_v6 is not None
    traffic = reach(client, lab.target_v6(nat66))
    assert traffic.tcp_source == egress_v6(nat66, lab), traffic
    sas = eng.run_checked(client.container, ["swanctl", "--list-sas", "--raw"])
    assert f"remote-host={client.server_address}" in sas


def test_clients_reach_each_other_over_ipv6_without_nat(lab: Lab, nat66: Server) -> None:
    phone, laptop = lab.start_client(nat66, ipv6=True), lab.start_client(nat66, ipv6=True)
    phone_ip, laptop_ip = connect(phone).virtual_ip_v6, connect(laptop).virtual_ip_v6
    assert phone_ip is not None and laptop_ip is not None
    peer = Target.serve_in(laptop.container, laptop_ip, PEER_PORT)
    traffic = reach(phone, peer)
    assert traffic.tcp_source == phone_ip, traffic  # its own pool address: no NAT66 inside
    assert traffic.icmp_received == 2, traffic


def test_vpn_host_as_an_ipv6_address_is_the_identity_clients_check(lab: Lab) -> None:
    """IKE over IPv6 without an IPv6 pool: the client dials VPN_HOST, an IPv6 address,
    and accepts only a certificate for it (subjectAltName) and that identity."""
    wan = lab.topology.wan_subnet_v6
    assert wan is not None
    address = str(wan[0x1234])
    server = lab.start_server(
        {"VPN_HOST": address.upper(), "VPN_USER": "alice"},
        name=lab.name("v6host"),
        volume=lab.name("v6host-data"),
        secret_files={"VPN_PASSWORD_FILE": PASSWORD},
        wan_ipv6=address,
    )
    assert server.identity() == address  # written in capitals, normalised as the server does
    client = lab.start_client(server, dial_ipv6=True)
    assert client.server_address == address
    result = client.connect("alice", PASSWORD.decode())
    assert result.connected, result.error
    assert result.virtual_ip_v6 is None  # no pool: IPv4 only inside
    traffic = reach(client, lab.target(server))
    assert traffic.tcp_source == server.egress().address, traffic
    leaf = x509.load_pem_x509_certificate(eng.read_file(server.container, LEAF))
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(address)]
    assert names.get_values_for_type(x509.DNSName) == [address]  # what Windows checks
    server.remove()


def test_services_of_the_server_stay_closed_over_ipv6(lab: Lab, nat66: Server) -> None:
    service = Target.serve_in(nat66.container, egress_v6(nat66, lab), SERVICE_PORT)
    client = lab.start_client(nat66, ipv6=True)
    connect(client)
    traffic = client.send_traffic(service, count=1, timeout_s=2.0)
    assert traffic.tcp_source is None, traffic
    assert traffic.icmp_received == 0, traffic


def test_routed_pool_reaches_the_target_unchanged(lab: Lab) -> None:
    server = start(lab, "routed", VPN_POOL_V6=str(POOL_V6_ROUTED), VPN_POOL_V6_EGRESS="routed")
    target = lab.target_v6(server)
    # The provider's router: the pool is routed to the server.
    eng.run_checked(
        target.container,
        ["ip", "-6", "route", "replace", str(POOL_V6_ROUTED), "via", egress_v6(server, lab)],
    )
    client = lab.start_client(server, ipv6=True)
    result = connect(client)
    assert result.virtual_ip_v6 is not None
    assert ipaddress.ip_address(result.virtual_ip_v6) in POOL_V6_ROUTED
    traffic = reach(client, target)
    assert traffic.tcp_source == result.virtual_ip_v6, traffic
    assert traffic.icmp_received == 2, traffic
    server.remove()


def test_ndp_proxy_answers_for_pool_addresses_on_link(lab: Lab) -> None:
    """The pool is the top of the egress network's /64 (what a provider puts on-link):
    the target has no route for it, asks the link for the client's address, and the
    server answers."""
    on_link = lab.topology.egress_subnet_v6
    assert on_link is not None
    pool = ipaddress.IPv6Network((int(on_link.broadcast_address) - 0xFFF, 116))
    server = lab.start_server(
        {
            "VPN_HOST": "ndp.example.test",
            "VPN_USER": "alice",
            "VPN_POOL_V6": str(pool),
            "VPN_POOL_V6_EGRESS": "ndp-proxy",
        },
        name=lab.name("ndp"),
        volume=lab.name("ndp-data"),
        secret_files={"VPN_PASSWORD_FILE": PASSWORD},
        sysctls={"net.ipv6.conf.all.proxy_ndp": "1"},
    )
    target = lab.target_v6(server)
    client = lab.start_client(server, ipv6=True)
    result = connect(client)
    assert result.virtual_ip_v6 is not None
    assert ipaddress.ip_address(result.virtual_ip_v6) in pool
    traffic = reach(client, target)
    assert traffic.tcp_source == result.virtual_ip_v6, traffic
    assert traffic.icmp_received == 2, traffic
    neighbours = eng.run_checked(target.container, ["ip", "-6", "neigh", "show"])
    assert result.virtual_ip_v6 in neighbours  # learnt from the server's NDP answer
    server.remove()


def test_missing_ipv6_forwarding_stops_the_server_with_one_line(lab: Lab) -> None:
    server = lab.start_server(
        {"VPN_HOST": "off.example.test", "VPN_POOL_V6": str(POOL_V6_ULA)},
        name=lab.name("noforward"),
        volume=lab.name("noforward-data"),
        sysctls={"net.ipv6.conf.all.forwarding": "0"},
        restart=None,
        wait=False,
    )
    assert server.wait_exit() != 0
    lines = [
        line for line in server.logs(20).splitlines() if "net.ipv6.conf.all.forwarding" in line
    ]
    assert len(lines) == 1, server.logs(20)
    assert "--sysctl net.ipv6.conf.all.forwarding=1" in lines[0]
