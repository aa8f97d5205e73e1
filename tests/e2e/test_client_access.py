"""What a connected client can reach besides the networks behind the server: services of
the server container, link-local addresses (cloud metadata), other clients, and the client
fence: the host at its gateway address, cloud control planes, VPN_CLIENT_DENY and
VPN_CLIENT_ALLOW. Each setting both ways: one server with the defaults, one with all of them
flipped (isolation on, the server and link-local opened, the fenced addresses allowed back,
a sibling container denied).

Nothing leaves the lab. The metadata service: a container on the egress network holds
169.254.169.254 on its loopback, and each server routes that address on-link to the egress
network (as a cloud VM does). The public cloud addresses (100.100.100.200, 168.63.129.16):
the same container holds them, and each server routes them to it, so even a packet the
fence let through would end there; the drop itself is shown by the fence's counters inside
the server. The host: the test listens on this machine at the egress network's gateway
address, the host's own address on that bridge, and closes the listener afterwards.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.vpnclient import Target, TrafficResult, VpnClient
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
PASSWORD = b"correct horse"
METADATA = "169.254.169.254"
CLOUD = ("100.100.100.200", "168.63.129.16")  # Alibaba Cloud metadata, Azure WireServer
SERVICE_PORT = 8081  # a service inside the server container
PEER_PORT = 8082  # a service on one client, for the other
IP_FREEBIND = 15  # linux/in.h; Python's socket module does not name it
FLIPPED = {
    "VPN_CLIENT_ISOLATION": "on",
    "VPN_ALLOW_SERVER_ACCESS": "on",
    "VPN_ALLOW_LINK_LOCAL": "on",
}


class HostListener:
    """A TCP service on this machine (the Docker host) at one address, answering like the
    lab's target: one JSON line with the connection's source address."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.peers: list[str] = []
        self._socket = _bound(address)
        self._socket.settimeout(0.5)
        self.port = int(self._socket.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.peers.append(peer[0])
                conn.sendall(json.dumps({"peer": peer[0], "icmp_sources": []}).encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        self._socket.close()
        self._thread.join(timeout=5)


def _bound(address: str) -> socket.socket:
    """A listening socket at ``address``. A new bridge's IPv6 address stays tentative until a
    container is attached (no carrier, no duplicate address detection): bound freely, it
    answers once the address is usable."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    sock.bind((address, 0))
    sock.listen()
    return sock


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

    def on(self, setting: str) -> bool:
        return self.settings.get(setting) == "on"

    @property
    def flipped(self) -> bool:
        return "VPN_CLIENT_ALLOW" in self.settings


@pytest.fixture(scope="module")
def platform(lab: Lab) -> Target:
    """Stand-ins for the cloud's metadata and control-plane addresses, on the egress
    network only."""
    target = Target.start(
        lab.engine,
        image=lab.image,
        network=lab.topology.egress,
        name=lab.name("platform"),
        run_id=lab.run_id,
        cap_add=["NET_ADMIN"],
    )
    for address in (METADATA, *CLOUD):
        eng.run_checked(target.container, ["ip", "address", "add", f"{address}/32", "dev", "lo"])
    return target


@pytest.fixture(scope="module")
def sibling(lab: Lab) -> Target:
    """Another container on the server's egress network (a sibling container)."""
    return Target.start(
        lab.engine,
        image=lab.image,
        network=lab.topology.egress,
        name=lab.name("sibling"),
        run_id=lab.run_id,
    )


def egress_gateway(lab: Lab, version: int) -> str:
    """The host's address on the lab's egress bridge (the network's gateway)."""
    network = lab.engine.networks.get(lab.topology.egress)
    [gateway] = [
        # Docker takes the first address when the network was made without a gateway.
        pool.get("Gateway") or str(next(ipaddress.ip_network(pool["Subnet"]).hosts()))
        for pool in network.attrs["IPAM"]["Config"]
        if ipaddress.ip_network(pool["Subnet"]).version == version
    ]
    return str(gateway)


@pytest.fixture(scope="module")
def host(lab: Lab) -> Iterator[HostListener]:
    """A listener on the host at the egress network's gateway address: the host itself."""
    listener = HostListener(egress_gateway(lab, 4))
    yield listener
    listener.close()


def connected(lab: Lab, server: Server) -> tuple[VpnClient, str]:
    client = lab.start_client(server)
    result = client.connect("alice", PASSWORD.decode())
    assert result.connected, result.error
    assert result.virtual_ip is not None
    return client, result.virtual_ip


@pytest.fixture(scope="module", params=["defaults", "flipped"])
def scenario(
    lab: Lab,
    platform: Target,
    sibling: Target,
    host: HostListener,
    request: pytest.FixtureRequest,
) -> Iterator[Scenario]:
    settings: dict[str, str] = {}
    if request.param == "flipped":
        settings = {
            **FLIPPED,
            "VPN_CLIENT_ALLOW": ",".join([host.address, *CLOUD]),
            "VPN_CLIENT_DENY": sibling.address,
        }
    role = f"access-{request.param}"
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
    for address in CLOUD:  # to the lab's stand-in, whatever the fence does
        eng.run_checked(
            server.container, ["ip", "route", "add", f"{address}/32", "via", platform.address]
        )
    service = Target.serve_in(server.container, egress.address, SERVICE_PORT)
    phone, phone_ip = connected(lab, server)
    laptop, laptop_ip = connected(lab, server)
    peer = Target.serve_in(laptop.container, laptop_ip, PEER_PORT)
    yield Scenario(settings, server, egress.address, phone, phone_ip, laptop, service, peer)
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


def fence_counters(server: Server) -> dict[str, int]:
    """Packets dropped by each rule of the server's client fence, by destination range
    (none without the chain: a server from before the fence, which then fails on what its
    clients reach)."""
    listed = eng.run_in(
        server.container, ["nft", "-j", "list", "chain", "inet", "ikev2_vpn", "client_fence"]
    )
    counters: dict[str, int] = {}
    if listed.exit_code != 0:
        return counters
    for item in json.loads(listed.stdout)["nftables"]:
        rule: dict[str, Any] = item.get("rule") or {}
        expressions = rule.get("expr", [])
        right = next((e["match"]["right"] for e in expressions if "match" in e), None)
        packets = next((e["counter"]["packets"] for e in expressions if "counter" in e), None)
        if right is None or packets is None:
            continue
        if isinstance(right, dict):  # a prefix shorter than the address
            right = f"{right['prefix']['addr']}/{right['prefix']['len']}"
        counters[str(ipaddress.ip_network(right))] = int(packets)
    return counters


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


def test_link_local_addresses(scenario: Scenario, platform: Target) -> None:
    traffic = reach(scenario.phone, Target(platform.container, METADATA, platform.port))
    if scenario.on("VPN_ALLOW_LINK_LOCAL"):
        assert_reached(traffic, scenario.egress_address)
    else:
        assert_blocked(traffic)


@pytest.mark.parametrize("address", CLOUD)
def test_cloud_control_planes(scenario: Scenario, platform: Target, address: str) -> None:
    """Blocked by default, and the fence's counter shows the client's packets dropped (the
    stand-in sees nothing); reachable once allowed back."""
    platform.report()  # forget earlier echo requests
    before = fence_counters(scenario.server)
    traffic = reach(scenario.phone, Target(platform.container, address, platform.port))
    after = fence_counters(scenario.server)
    if scenario.flipped:
        assert_reached(traffic, scenario.egress_address)
        assert f"{address}/32" not in after
        return
    assert_blocked(traffic)
    # The ping and the TCP connection's SYN (retransmitted within its 2 s).
    assert after[f"{address}/32"] >= before[f"{address}/32"] + 2
    assert platform.report().get("icmp_sources") == []


def test_the_host_at_its_gateway_address(scenario: Scenario, host: HostListener) -> None:
    """The Docker host, at its address on the egress network's bridge: a TCP service the
    test opened there, and the host's own answers to pings."""
    # Only the address and port are used: the service runs in this test, on the host.
    on_host = Target(scenario.server.container, host.address, host.port)
    before = len(host.peers)
    traffic = reach(scenario.phone, on_host)
    if scenario.flipped:
        assert_reached(traffic, scenario.egress_address)
        return
    assert_blocked(traffic)
    assert host.peers[before:] == []
    assert fence_counters(scenario.server)[f"{host.address}/32"] >= 2


def test_denied_ranges(scenario: Scenario, sibling: Target) -> None:
    """A sibling container on the egress network: reachable unless VPN_CLIENT_DENY lists it."""
    traffic = reach(scenario.phone, sibling)
    if scenario.flipped:
        assert_blocked(traffic)
        assert fence_counters(scenario.server)[f"{sibling.address}/32"] >= 2
    else:
        assert_reached(traffic, scenario.egress_address)


def test_clients_reach_each_other_unless_isolated(scenario: Scenario) -> None:
    traffic = reach(scenario.phone, scenario.peer)
    if scenario.on("VPN_CLIENT_ISOLATION"):
        assert_blocked(traffic)
    else:
        assert_reached(traffic, scenario.phone_ip)  # each other's virtual IPs, no NAT
        assert ipaddress.ip_address(scenario.phone_ip) in scenario.server.pool


def test_the_effective_policy_is_logged_at_start(
    scenario: Scenario, host: HostListener, sibling: Target
) -> None:
    lines = [line for line in scenario.server.logs(200).splitlines() if "may reach" in line]
    assert len(lines) == 1
    isolated = scenario.on("VPN_CLIENT_ISOLATION")
    assert f"each other {'no' if isolated else 'yes'}" in lines[0]
    fenced = lines[0].partition("fenced off (VPN_CLIENT_DENY): ")[2]
    gateway = f"{host.address}/32 (the host: gateway of "
    if scenario.flipped:
        assert gateway not in fenced
        assert f"{sibling.address}/32 (VPN_CLIENT_DENY)" in fenced
        assert lines[0].endswith(
            f"allowed back (VPN_CLIENT_ALLOW): {host.address}/32, 100.100.100.200/32, "
            "168.63.129.16/32"
        )
    else:
        assert gateway in fenced
        assert "100.100.100.200/32 (Alibaba Cloud metadata)" in fenced
        assert "168.63.129.16/32 (Azure WireServer)" in fenced
        assert "allowed back" not in lines[0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"VPN_CLIENT_DENY": "192.168.1.1/16"},
            "VPN_CLIENT_DENY: '192.168.1.1/16' has host bits set; use 192.168.0.0/16",
        ),
        ({"VPN_CLIENT_ALLOW": "the-host"}, "VPN_CLIENT_ALLOW: 'the-host' is not an IP network"),
        # Only the running container knows its gateway: refused by the probe, before /data.
        ({"VPN_DNS": "{gateway}"}, "VPN_DNS: {gateway} is fenced off from VPN clients"),
    ],
    ids=["deny-host-bits", "allow-junk", "dns-at-the-host"],
)
def test_bad_fence_settings_stop_the_server_with_one_line(
    lab: Lab, host: HostListener, env: dict[str, str], expected: str
) -> None:
    env = {name: value.format(gateway=host.address) for name, value in env.items()}
    role = "fence-bad-" + "-".join(env).lower()
    server = lab.start_server(
        {"VPN_HOST": HOST, "VPN_USER": "alice", **env},
        name=lab.name(role),
        volume=lab.name(f"{role}-data"),
        secret_files={"VPN_PASSWORD_FILE": PASSWORD},
        wait=False,
        restart=None,
    )
    try:
        assert server.wait_exit() == 2
        output = server.logs(50)
        errors = [line for line in output.splitlines() if "error:" in line]
        assert len(errors) == 1, output
        assert expected.format(gateway=host.address) in errors[0]
        assert "charon started" not in output
    finally:
        server.remove()
    # Nothing was written to /data: no CA, no users.
    volume = lab.engine.volumes.get(lab.name(f"{role}-data"))
    listing = lab.engine.containers.run(
        lab.image,
        entrypoint=["ls", "-A", "/data"],
        volumes={volume.name: {"bind": "/data", "mode": "ro"}},
        network_mode="none",
        remove=True,
        labels=eng.labels(lab.run_id, "check"),
    )
    assert listing == b"", listing


# --- the host at its IPv6 gateway address ----------------------------------------------------


@pytest.fixture(scope="module")
def dual_lab(engine: docker.DockerClient, image: str) -> Iterator[Lab]:
    """A lab whose networks are dual stack (IPv6 from 2001:db8::/32)."""
    with Lab(engine, image=image, ipv6=True) as lab:
        yield lab


@pytest.fixture(scope="module")
def host_v6(dual_lab: Lab) -> Iterator[HostListener]:
    listener = HostListener(egress_gateway(dual_lab, 6))
    yield listener
    listener.close()


@pytest.mark.parametrize("allowed", [False, True], ids=["defaults", "allowed-back"])
def test_the_host_at_its_ipv6_gateway_address(
    dual_lab: Lab, host_v6: HostListener, allowed: bool
) -> None:
    """A client with an IPv6 address (VPN_POOL_V6, NAT66) and the host at the IPv6 gateway
    address of the egress network: fenced off, and reachable once allowed back."""
    role = "fence-v6-" + ("allowed" if allowed else "defaults")
    env = {"VPN_HOST": HOST, "VPN_USER": "alice", "VPN_POOL_V6": "fd00:10:10::/112"}
    if allowed:
        env["VPN_CLIENT_ALLOW"] = host_v6.address
    server = dual_lab.start_server(
        env,
        name=dual_lab.name(role),
        volume=dual_lab.name(f"{role}-data"),
        secret_files={"VPN_PASSWORD_FILE": PASSWORD},
    )
    client = dual_lab.start_client(server, ipv6=True)
    try:
        result = client.connect("alice", PASSWORD.decode(), ipv6=True)
        assert result.connected, result.error
        assert result.virtual_ip_v6 is not None
        on_host = Target(server.container, host_v6.address, host_v6.port)  # address, port
        before = len(host_v6.peers)
        traffic = reach(client, on_host)
        if allowed:
            assert_reached(traffic, server.networks_v6()[dual_lab.topology.egress])
        else:
            assert_blocked(traffic)
            assert host_v6.peers[before:] == []
            gateway = ipaddress.ip_network(host_v6.address)
            assert fence_counters(server)[str(gateway)] >= 2
    finally:
        for container in (client, server):  # one server at a time on two cores
            container.remove()
