"""What VPN clients may reach: the nftables rules behind VPN_CLIENT_ISOLATION,
VPN_ALLOW_SERVER_ACCESS and VPN_ALLOW_LINK_LOCAL, for every combination of the three, and the
client fence (the host at its gateways, cloud platforms, VPN_CLIENT_DENY, VPN_CLIENT_ALLOW).

nft itself checks the syntax in test_render.py (when installed) and in every end-to-end test,
since the container refuses to start with a ruleset nft rejects.
"""

from __future__ import annotations

import ipaddress
import itertools
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from planfactory import make_plan

from ikev2_vpn import fence, probe, render
from ikev2_vpn.errors import ConfigError, ConfigErrors
from ikev2_vpn.probe import network as probe_network
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.probe.identity import ServerIdentity
from ikev2_vpn.settings import Backend, ProposalSet, Settings

POOL = "10.10.10.0/24"
COMBINATIONS = list(itertools.product((False, True), repeat=3))
LINK_LOCAL_V4 = f"ip saddr {POOL} ip daddr 169.254.0.0/16 drop"  # to the container itself
FENCED_LINK_LOCAL = "ip daddr 169.254.0.0/16 counter drop"  # through it
TO_FENCE = f"ip saddr {POOL} jump client_fence"
CLIENT_TO_CLIENT = f"ip saddr {POOL} ip daddr {POOL} drop"
TO_SERVER = f"ip saddr {POOL} drop"
ACCEPT = f'iifname "ipsec0" ip saddr {POOL} accept'  # userspace backend
# The rest of the pool's packets, after the accepts: the chain's policy accepts, so that it
# leaves alone what is not the pool's (a host's own forwarding under host networking).
POOL_DROPS = [f"ip saddr {POOL} drop", f"ip daddr {POOL} drop"]


@pytest.fixture(scope="module")
def base() -> render.Plan:
    return make_plan(
        host="vpn.example.test",
        pool_v4=ipaddress.IPv4Network(POOL),
        dns=(),
        backend=BackendChoice(Backend.USERSPACE, "test", esp_gcm=True),
        proposals=ProposalSet.MODERN,
        egress_interface="eth1",
    )


def chain(plan: render.Plan, name: str) -> list[str]:
    """The rules of one chain, without comments and the chain's own header."""
    lines = [
        line.strip()
        for line in render.nftables_conf(plan).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    start = lines.index(f"chain {name} {{")
    rules = lines[start + 1 : lines.index("}", start)]
    return rules[1:] if rules and rules[0].startswith("type ") else rules


def plan_for(base: render.Plan, isolation: bool, server: bool, link_local: bool) -> render.Plan:
    return replace(
        base,
        client_isolation=isolation,
        allow_server_access=server,
        allow_link_local=link_local,
    )


def test_defaults_are_the_closed_ones(base: render.Plan) -> None:
    """A plan built without the settings (older callers) gets the documented defaults."""
    assert (base.client_isolation, base.allow_server_access, base.allow_link_local) == (
        False,
        False,
        False,
    )
    assert chain(base, "forward") == [
        TO_FENCE,
        ACCEPT,
        f"ip daddr {POOL} ct state established,related accept",
        *POOL_DROPS,
    ]
    assert chain(base, "input_from_clients") == [
        f"ip saddr {POOL} ct state established,related accept",
        LINK_LOCAL_V4,
        TO_SERVER,
    ]


@pytest.mark.parametrize(("isolation", "server", "link_local"), COMBINATIONS)
def test_each_setting_adds_or_removes_only_its_own_rules(
    base: render.Plan, isolation: bool, server: bool, link_local: bool
) -> None:
    plan = plan_for(base, isolation, server, link_local)
    forward = chain(plan, "forward")
    to_server = chain(plan, "input_from_clients")

    assert (CLIENT_TO_CLIENT in forward) is isolation
    assert (FENCED_LINK_LOCAL in chain(plan, "client_fence")) is not link_local
    assert (LINK_LOCAL_V4 in to_server) is not link_local
    assert (TO_SERVER in to_server) is not server

    # The fence and the drops come before the accept they restrict; what stays is the same
    # in every case.
    accept = forward.index(ACCEPT)
    assert forward[0] == TO_FENCE
    assert all(rule.endswith(" drop") for rule in forward[1:accept])
    assert forward[accept:] == [
        ACCEPT,
        f"ip daddr {POOL} ct state established,related accept",
        *POOL_DROPS,
    ]
    assert to_server[0] == f"ip saddr {POOL} ct state established,related accept"


@pytest.mark.parametrize(("isolation", "server", "link_local"), COMBINATIONS)
def test_ike_and_esp_from_anywhere_stay_open(
    base: render.Plan, isolation: bool, server: bool, link_local: bool
) -> None:
    """The input chain only ever matches the pool: clients' real addresses (IKE, NAT-T,
    ESP) and everyone else are left to the policy, which accepts."""
    plan = plan_for(base, isolation, server, link_local)
    text = render.nftables_conf(plan)
    header = "type filter hook input priority filter; policy accept;"
    assert header in text
    assert all(rule.startswith(f"ip saddr {POOL} ") for rule in chain(plan, "input_from_clients"))


def test_forwarding_of_others_is_left_alone(base: render.Plan) -> None:
    """Under host networking the forward hook also sees the host's other traffic (other
    containers, a router's own routes): every drop names the pool, and the policy accepts."""
    text = render.nftables_conf(base)
    assert "type filter hook forward priority filter; policy accept;" in text
    drops = [rule for rule in chain(base, "forward") if rule.endswith(" drop")]
    assert drops and all(POOL in rule for rule in drops)
    # The fence is a regular chain (no hook): only the pool's packets jump to it.
    assert "jump client_fence" not in text.replace(TO_FENCE, "")
    assert chain(base, "client_fence")[0].startswith("ip daddr ")


def test_clients_are_not_masqueraded_towards_each_other(base: render.Plan) -> None:
    """With kernel IPsec, traffic between clients leaves by the egress interface too."""
    assert chain(base, "postrouting") == [
        f'ip saddr {POOL} ip daddr != {POOL} oifname "eth1" masquerade'
    ]


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
@pytest.mark.parametrize(("isolation", "server", "link_local"), COMBINATIONS)
def test_nft_accepts_every_combination(
    base: render.Plan, isolation: bool, server: bool, link_local: bool
) -> None:
    result = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=render.nftables_conf(plan_for(base, isolation, server, link_local)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_policy_is_logged_in_one_line(base: render.Plan) -> None:
    default = render.client_access(base)
    assert "\n" not in default
    assert "each other yes" in default
    assert "services of this container no" in default
    assert "cloud metadata no" in default
    flipped = render.client_access(plan_for(base, True, True, True))
    assert "each other no" in flipped
    assert "services of this container yes" in flipped
    assert "cloud metadata yes" in flipped


# --- the client fence ----------------------------------------------------------------------

GATEWAY = fence.Gateway(ipaddress.ip_address("198.19.0.1"), "eth0")
GATEWAY_WAN = fence.Gateway(ipaddress.ip_address("198.18.0.1"), "eth1")
GATEWAY_V6 = fence.Gateway(ipaddress.ip_address("2001:db8:1::1"), "eth0")
POOL_V6 = "fd00:10:10::/112"


def net(text: str) -> fence.Network:
    return ipaddress.ip_network(text)


def fenced(plan: render.Plan) -> list[str]:
    return [str(entry.network) for entry in plan.fence]


def test_by_default_the_host_and_the_platforms_are_fenced_off(base: render.Plan) -> None:
    plan = replace(base, gateways=(GATEWAY, GATEWAY_WAN))
    assert fenced(plan) == [
        "198.19.0.1/32",
        "198.18.0.1/32",
        "100.100.100.200/32",  # Alibaba Cloud metadata: role credentials
        "168.63.129.16/32",  # Azure WireServer
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
    ]
    assert chain(plan, "client_fence") == [
        "ip daddr 198.19.0.1/32 counter drop",
        "ip daddr 198.18.0.1/32 counter drop",
        "ip daddr 100.100.100.200/32 counter drop",
        "ip daddr 168.63.129.16/32 counter drop",
        "ip daddr 169.254.0.0/16 counter drop",
    ]  # no IPv6 without an IPv6 pool: clients send none through the tunnel
    assert "# the host: gateway of eth1" in render.nftables_conf(plan)


def test_ipv6_is_fenced_with_an_ipv6_pool(base: render.Plan) -> None:
    plan = replace(base, gateways=(GATEWAY, GATEWAY_V6), pool_v6=ipaddress.IPv6Network(POOL_V6))
    assert f"ip6 saddr {POOL_V6} jump client_fence" in chain(plan, "forward")
    rules = chain(plan, "client_fence")
    assert "ip6 daddr 2001:db8:1::1/128 counter drop" in rules
    assert "ip6 daddr fe80::/10 counter drop" in rules
    assert "ip6 daddr fd00:ec2::254/128 counter drop" in rules


def test_the_address_clients_dial_is_fenced_when_it_is_an_address(base: render.Plan) -> None:
    """The host's public address (or its load balancer's): never through the tunnel."""
    public = ipaddress.ip_address("203.0.113.7")
    assert "203.0.113.7/32" in fenced(replace(base, host=str(public), dialled=public))
    assert not any(entry.why.endswith("(VPN_HOST)") for entry in base.fence)
    host = ServerIdentity("203.0.113.7", "test")
    assert probe.dialled_address(host, (ipaddress.ip_address("198.19.0.3"),)) == public
    own = (ipaddress.ip_address("198.19.0.3"), public)  # host networking, a public address
    assert probe.dialled_address(host, own) is None
    assert probe.dialled_address(ServerIdentity("vpn.example.test", "test"), own) is None


def test_deny_adds_and_allow_cuts_out(base: render.Plan) -> None:
    plan = replace(
        base,
        gateways=(GATEWAY,),
        client_deny=(net("192.168.0.0/16"), net("198.19.0.64/26")),
        client_allow=(net("192.168.1.0/24"), net("198.19.0.1/32"), net("100.100.100.200/32")),
    )
    rules = chain(plan, "client_fence")
    assert "ip daddr 198.19.0.1/32 counter drop" not in rules  # the gateway allowed back
    assert "ip daddr 100.100.100.200/32 counter drop" not in rules
    assert "ip daddr 168.63.129.16/32 counter drop" in rules
    assert "ip daddr 198.19.0.64/26 counter drop" in rules
    denied = [entry.network for entry in plan.fence if entry.why == "VPN_CLIENT_DENY"]
    assert net("192.168.1.0/24") not in denied
    everything_but = {a for n in denied if n.version == 4 for a in (n[0], n[-1])}
    assert ipaddress.ip_address("192.168.0.255") in everything_but
    assert ipaddress.ip_address("192.168.2.0") in everything_but
    # What remains covers 192.168.0.0/16 exactly, less the allowed /24, and the /26.
    assert sum(n.num_addresses for n in denied) == 65536 - 256 + 64


def test_allow_opens_part_of_the_link_local_range(base: render.Plan) -> None:
    plan = replace(base, client_allow=(net("169.254.169.254/32"),))
    link_local = [e.network for e in plan.fence if e.why.startswith("link-local, cloud")]
    assert not any(ipaddress.ip_address("169.254.169.254") in n for n in link_local)
    assert ipaddress.ip_address("169.254.169.253") in link_local[-1] or any(
        ipaddress.ip_address("169.254.169.253") in n for n in link_local
    )
    assert sum(n.num_addresses for n in link_local) == 65536 - 1


def test_the_pools_are_never_fenced(base: render.Plan) -> None:
    """Clients reaching each other is VPN_CLIENT_ISOLATION's business, not the fence's."""
    plan = replace(base, client_deny=(net("10.0.0.0/8"),))
    denied = [e.network for e in plan.fence if e.why == "VPN_CLIENT_DENY"]
    assert all(not n.overlaps(net(POOL)) for n in denied)
    assert sum(n.num_addresses for n in denied) == 2**24 - 256


def test_the_log_line_names_what_is_fenced_and_allowed_back(base: render.Plan) -> None:
    plan = replace(
        base,
        gateways=(GATEWAY, GATEWAY_V6),
        client_deny=(net("192.168.0.0/16"),),
        client_allow=(net("192.168.1.0/24"),),
    )
    line = render.client_access(plan)
    assert "\n" not in line
    assert "198.19.0.1/32 (the host: gateway of eth0)" in line
    assert "100.100.100.200/32 (Alibaba Cloud metadata)" in line
    assert "168.63.129.16/32 (Azure WireServer)" in line
    assert "192.168.0.0/16 (VPN_CLIENT_DENY)" in line  # as named, not its pieces
    assert line.endswith("allowed back (VPN_CLIENT_ALLOW): 192.168.1.0/24")
    assert "2001:db8:1::1" not in line  # no IPv6 pool: not in the ruleset either
    dual = replace(plan, pool_v6=ipaddress.IPv6Network(POOL_V6))
    assert "2001:db8:1::1/128 (the host: gateway of eth0)" in render.client_access(dual)
    assert "allowed back" not in render.client_access(base)


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
@pytest.mark.parametrize("dual_stack", [False, True])
def test_nft_accepts_the_fence(base: render.Plan, dual_stack: bool) -> None:
    plan = replace(
        base,
        gateways=(GATEWAY, GATEWAY_WAN, GATEWAY_V6),
        client_deny=(net("192.168.0.0/16"), net("2001:db8:2::/48")),
        client_allow=(net("192.168.1.0/24"), net("169.254.169.254/32")),
        pool_v6=ipaddress.IPv6Network(POOL_V6) if dual_stack else None,
    )
    result = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=render.nftables_conf(plan),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- the gateways, as the probe reads them ------------------------------------------------

DOCKER_ROUTES: list[dict[str, Any]] = [
    {"dst": "default", "gateway": "198.19.0.1", "dev": "eth1", "flags": []},
    {"dst": "198.18.0.0/26", "dev": "eth0", "protocol": "kernel", "prefsrc": "198.18.0.2"},
    {"dst": "198.19.0.0/26", "dev": "eth1", "protocol": "kernel", "prefsrc": "198.19.0.3"},
]
DOCKER_LINKS: list[dict[str, Any]] = [
    {"ifname": "lo", "addr_info": [{}]},
    {"ifname": "eth0", "addr_info": [{"local": "198.18.0.2", "prefixlen": 26}]},
    {"ifname": "eth1", "addr_info": [{"local": "198.19.0.3", "prefixlen": 26}]},
]


def test_every_networks_gateway_is_found() -> None:
    """The default route's gateway, and on a network without a route through its gateway
    (Docker's wan here) the address Docker gives gateways: the subnet's first."""
    found = probe_network.gateways_from(DOCKER_ROUTES, DOCKER_LINKS)
    assert set(found) == {
        fence.Gateway(ipaddress.ip_address("198.19.0.1"), "eth1"),
        fence.Gateway(ipaddress.ip_address("198.18.0.1"), "eth0"),
    }


def test_ipv6_gateways_are_found_and_link_local_ones_left_out() -> None:
    routes = [
        {"dst": "default", "gateway": "fe80::1", "dev": "eth0"},
        {"dst": "default", "gateway": "2001:db8:1::1", "dev": "eth0"},
    ]
    links = [{"ifname": "eth0", "addr_info": [{"local": "2001:db8:1::3", "prefixlen": 64}]}]
    found = probe_network.gateways_from(routes, links)
    assert {gateway.address for gateway in found} == {ipaddress.ip_address("2001:db8:1::1")}


def test_a_pod_with_a_host_route_has_no_guessed_gateway() -> None:
    """Calico: a /32 pod address and a link-local gateway (fenced as link-local anyway)."""
    routes = [{"dst": "default", "gateway": "169.254.1.1", "dev": "eth0"}]
    links = [{"ifname": "eth0", "addr_info": [{"local": "10.244.1.7", "prefixlen": 32}]}]
    assert probe_network.gateways_from(routes, links) == []


def test_the_container_is_never_its_own_gateway() -> None:
    links = [{"ifname": "eth0", "addr_info": [{"local": "192.0.2.1", "prefixlen": 24}]}]
    assert probe_network.gateways_from([], links) == []


# --- the settings ---------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["VPN_CLIENT_DENY", "VPN_CLIENT_ALLOW"])
def test_networks_are_read_as_a_list(load: Callable[..., Settings], setting: str) -> None:
    field = setting.removeprefix("VPN_").lower()
    settings = load(**{setting: "192.168.0.0/16, 10.1.2.3 2001:db8::/32,fd00::1"})
    assert getattr(settings, field) == (
        net("192.168.0.0/16"),
        net("10.1.2.3/32"),  # a bare address is one host
        net("2001:db8::/32"),
        net("fd00::1/128"),
    )
    assert Settings.model_fields[field].default == ()


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("VPN_CLIENT_DENY", "192.168.1.1/16",
         "VPN_CLIENT_DENY: '192.168.1.1/16' has host bits set; use 192.168.0.0/16"),
        ("VPN_CLIENT_ALLOW", "lan",
         "VPN_CLIENT_ALLOW: 'lan' is not an IP network; use CIDR notation"),
        ("VPN_CLIENT_DENY", "10.0.0.0/33", "VPN_CLIENT_DENY: '10.0.0.0/33' is not an IP network"),
        ("VPN_CLIENT_DENY", "fe80::1%eth0/64", "is not an IP network"),
        ("VPN_CLIENT_DENY", "0.0.0.0/0",
         "VPN_CLIENT_DENY: 0.0.0.0/0 would fence clients off everything"),
        ("VPN_CLIENT_DENY", "::/0", "::/0 would fence clients off everything"),
        ("VPN_CLIENT_ALLOW", " , ", "VPN_CLIENT_ALLOW: no network given"),
    ],
)  # fmt: skip
def test_bad_networks_are_one_line(
    load: Callable[..., Settings], setting: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(**{setting: value})
    [line] = str(caught.value).splitlines()
    assert message in line


def test_allowing_everything_back_is_allowed(load: Callable[..., Settings]) -> None:
    assert load(VPN_CLIENT_ALLOW="0.0.0.0/0,::/0").client_allow == (net("0.0.0.0/0"), net("::/0"))


def test_a_fenced_dns_server_is_refused_with_its_fix(load: Callable[..., Settings]) -> None:
    settings = load(VPN_DNS="192.168.1.53", VPN_CLIENT_DENY="192.168.0.0/16")
    with pytest.raises(ConfigError) as caught:
        probe.check_dns(settings, probe.client_fence(settings, (), None))
    assert caught.value.line() == (
        "VPN_DNS: 192.168.1.53 is fenced off from VPN clients (192.168.0.0/16: VPN_CLIENT_DENY); "
        "add it to VPN_CLIENT_ALLOW or push another DNS server"
    )
    gateway = load(VPN_DNS="198.19.0.1")
    with pytest.raises(ConfigError, match="the host: gateway of eth0"):
        probe.check_dns(gateway, probe.client_fence(gateway, (GATEWAY,), None))
    allowed = load(VPN_DNS="198.19.0.1", VPN_CLIENT_ALLOW="198.19.0.1")
    probe.check_dns(allowed, probe.client_fence(allowed, (GATEWAY,), None))
