"""Split tunnels with IPv6 (VPN_SPLIT_NETS with VPN_POOL_V6): IPv6 split networks go
through the tunnel, the rest of IPv6 leaves the client directly.

The lab's networks are dual stack (2001:db8::/32). The server tunnels the egress network's
IPv6 prefix only, and no IPv4 network at all but its DNS server: an IPv6-only target there
is reached through the tunnel (it sees the server's IPv6 address, NAT66), an IPv6-only
target on the client's own network directly (it sees the client's own IPv6 address), and
the IPv4 target behind the server, outside the split, is not reached through the server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import docker
import pytest

from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.vpnclient import Target, VpnClient, address_on
from ikev2_vpn_lab.lab import Lab

USER, PASSWORD = "split6", "Split6-pw-1"
POOL_V6 = "fd00:10:10::/112"
DNS = "198.51.100.53"  # documentation address: pushed and tunnelled, never queried


@pytest.fixture(scope="module")
def lab(engine: docker.DockerClient, image: str) -> Iterator[Lab]:
    """A lab whose wan and egress networks are dual stack."""
    with Lab(engine, image=image, ipv6=True) as lab:
        yield lab


@pytest.fixture(scope="module")
def server(lab: Lab) -> Server:
    egress_v6 = lab.topology.egress_subnet_v6
    assert egress_v6 is not None
    return lab.start_server(
        {
            "VPN_HOST": "split6.example.test",
            "VPN_POOL_V6": POOL_V6,
            "VPN_DNS": DNS,
            "VPN_SPLIT_NETS": str(egress_v6),
        },
        name=lab.name("split6"),
        volume=lab.name("split6-data"),
        secret_files={"VPN_USERS_FILE": f"{USER}:{PASSWORD}\n".encode()},
    )


@pytest.fixture(scope="module")
def client(lab: Lab, server: Server) -> VpnClient:
    client = lab.start_client(server, ipv6=True)
    result = client.connect(USER, PASSWORD, ipv6=True)
    assert result.connected, result.error
    assert result.virtual_ip_v6 is not None
    assert ipaddress.ip_address(result.virtual_ip_v6) in ipaddress.ip_network(POOL_V6)
    return client


def test_an_ipv6_split_network_goes_through_the_tunnel(
    lab: Lab, server: Server, client: VpnClient
) -> None:
    traffic = client.send_traffic(lab.target_v6(server), count=1)
    assert traffic.tcp_source == server.networks_v6()[lab.topology.egress], traffic


def test_ipv6_outside_the_split_goes_directly(lab: Lab, client: VpnClient) -> None:
    outside = Target.start(
        lab.engine,
        image=lab.image,
        network=lab.topology.wan,
        name=lab.name("target-outside-v6"),
        run_id=lab.run_id,
        ipv6_only=True,
    )
    traffic = client.send_traffic(outside, count=1)
    own = address_on(client.container, lab.topology.wan, ipv6=True)
    assert traffic.tcp_source == own, traffic


def test_ipv4_outside_the_split_is_not_sent_through_the_server(
    lab: Lab, server: Server, client: VpnClient
) -> None:
    """The IPv4 target behind the server is in no split network: the client has no route
    to it through the tunnel, and the wan network is internal, so nothing reaches it."""
    target = lab.target(server)
    traffic = client.send_traffic(target, count=1, timeout_s=2.0)
    assert traffic.tcp_source is None, traffic
    assert target.report().get("icmp_sources", []) == []
