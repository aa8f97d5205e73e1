"""Split tunnels set by the server (VPN_SPLIT_NETS): the setting, the traffic selectors
charon gets, and the firewall that keeps clients to them.

The profiles' side is in the test_profiles_* modules; end to end in
tests/e2e/test_split_tunnel.py.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace

import pytest
from planfactory import make_plan
from swanctl_syntax import swanctl

from ikev2_vpn import defaults, probe, render
from ikev2_vpn.errors import ConfigError, ConfigErrors
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.settings import Backend, ProposalSet, Settings, describe, split_selectors

Load = Callable[..., Settings]
CONN = defaults.CONNECTION_NAME
POOL = "10.10.10.0/24"
POOL_V6 = "fd00:10:10::/112"

pytestmark = pytest.mark.usefixtures("clean_environment")


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


# --- the setting ---------------------------------------------------------------------------


def test_unset_is_a_full_tunnel(load: Load) -> None:
    settings = load()
    assert settings.split_nets == ()
    assert settings.split_tunnel() == ()


def test_networks_separated_by_commas_or_spaces_and_dns_servers_added(load: Load) -> None:
    settings = load(VPN_SPLIT_NETS="10.20.0.0/16, 192.168.50.0/24  172.16.0.0/12")
    assert settings.split_nets == (
        net("10.20.0.0/16"),
        net("192.168.50.0/24"),
        net("172.16.0.0/12"),
    )
    # The default DNS servers (1.1.1.1, 1.0.0.1) lie outside: tunnelled as single addresses.
    assert settings.split_tunnel() == (
        *settings.split_nets,
        net("1.1.1.1/32"),
        net("1.0.0.1/32"),
    )


def test_a_dns_server_inside_a_split_network_is_not_added_again(load: Load) -> None:
    settings = load(VPN_SPLIT_NETS="10.20.0.0/16", VPN_DNS="10.20.0.53, 9.9.9.9")
    assert settings.split_tunnel() == (net("10.20.0.0/16"), net("9.9.9.9/32"))


def test_dns_servers_listed_twice_are_tunnelled_once() -> None:
    dns = (ipaddress.ip_address("9.9.9.9"), ipaddress.ip_address("9.9.9.9"))
    assert split_selectors((net("10.0.0.0/8"),), dns) == (net("10.0.0.0/8"), net("9.9.9.9/32"))
    assert split_selectors((), dns) == ()


def test_ipv6_networks_with_an_ipv6_pool(load: Load) -> None:
    settings = load(
        VPN_SPLIT_NETS="10.20.0.0/16,2001:db8:20::/48",
        VPN_POOL_V6=POOL_V6,
        VPN_DNS="10.20.0.53,2001:db8:20::53",
    )
    assert settings.split_tunnel() == (net("10.20.0.0/16"), net("2001:db8:20::/48"))


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (
            "10.20.0.1/16",
            "VPN_SPLIT_NETS: '10.20.0.1/16' has host bits set; use 10.20.0.0/16",
        ),
        (
            "10.20.0.0",
            "VPN_SPLIT_NETS: '10.20.0.0' is not an IP network; use CIDR notation like "
            "10.20.0.0/16 or 2001:db8:20::/48, separated by commas",
        ),
        (
            "office",
            "VPN_SPLIT_NETS: 'office' is not an IP network; use CIDR notation like "
            "10.20.0.0/16 or 2001:db8:20::/48, separated by commas",
        ),
        (
            "0.0.0.0/0",
            "VPN_SPLIT_NETS: 0.0.0.0/0 is everything; unset VPN_SPLIT_NETS for a full tunnel, "
            "or list only the networks clients reach through it",
        ),
        (
            "10.0.0.0/8,10.20.0.0/16",
            "VPN_SPLIT_NETS: 10.20.0.0/16 lies inside 10.0.0.0/8, which is listed too; "
            "list each range once",
        ),
        (
            "10.20.0.0/16 10.0.0.0/8",
            "VPN_SPLIT_NETS: 10.20.0.0/16 lies inside 10.0.0.0/8, which is listed too; "
            "list each range once",
        ),
        (
            "127.0.0.0/8",
            "VPN_SPLIT_NETS: 127.0.0.0/8 takes in loopback addresses (127.0.0.0/8), which VPN "
            "clients cannot reach through the server; list the networks behind the server",
        ),
        (
            "224.0.0.0/3",
            "VPN_SPLIT_NETS: 224.0.0.0/3 takes in multicast addresses (224.0.0.0/4), which VPN "
            "clients cannot reach through the server; list the networks behind the server",
        ),
        (
            "2001:db8:20::/48",
            "VPN_SPLIT_NETS: 2001:db8:20::/48 is an IPv6 network, and clients get no IPv6 "
            "address or route through the tunnel without VPN_POOL_V6; set VPN_POOL_V6 or "
            "list only IPv4 networks",
        ),
        (
            " , ",
            "VPN_SPLIT_NETS: no network given; list the CIDR ranges clients reach through the "
            "tunnel, or unset it for a full tunnel",
        ),
    ],
)
def test_bad_values_get_one_line_with_the_fix(load: Load, value: str, line: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(VPN_SPLIT_NETS=value)
    assert str(caught.value) == line


def test_ipv6_everything_is_refused_too(load: Load) -> None:
    with pytest.raises(ConfigErrors, match=r"::/0 is everything; unset VPN_SPLIT_NETS"):
        load(VPN_SPLIT_NETS="::/0", VPN_POOL_V6=POOL_V6)


def test_the_start_up_log_names_the_split(load: Load) -> None:
    assert "VPN_SPLIT_NETS=(full tunnel)" in "\n".join(describe(load()))
    split = "\n".join(describe(load(VPN_SPLIT_NETS="10.20.0.0/16,192.168.50.0/24")))
    assert "VPN_SPLIT_NETS=10.20.0.0/16,192.168.50.0/24" in split


def test_a_split_network_inside_the_fence_is_refused(load: Load) -> None:
    settings = load(VPN_SPLIT_NETS="192.168.1.0/24", VPN_CLIENT_DENY="192.168.0.0/16")
    with pytest.raises(ConfigError) as caught:
        probe.check_split_nets(settings, probe.client_fence(settings, (), None))
    assert caught.value.line() == (
        "VPN_SPLIT_NETS: 192.168.1.0/24 is fenced off from VPN clients (192.168.0.0/16: "
        "VPN_CLIENT_DENY); add it to VPN_CLIENT_ALLOW or leave it out of VPN_SPLIT_NETS"
    )
    # Partly fenced is allowed (the fence keeps its part), and so is a hole cut by ALLOW.
    wider = load(VPN_SPLIT_NETS="192.0.0.0/8", VPN_CLIENT_DENY="192.168.0.0/16")
    probe.check_split_nets(wider, probe.client_fence(wider, (), None))
    allowed = load(
        VPN_SPLIT_NETS="192.168.1.0/24",
        VPN_CLIENT_DENY="192.168.0.0/16",
        VPN_CLIENT_ALLOW="192.168.1.0/24",
    )
    probe.check_split_nets(allowed, probe.client_fence(allowed, (), None))


# --- traffic selectors ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan() -> render.Plan:
    return make_plan(
        host="vpn.example.test",
        pool_v4=ipaddress.IPv4Network(POOL),
        dns=(ipaddress.ip_address("1.1.1.1"),),
        backend=BackendChoice(Backend.USERSPACE, "test", esp_gcm=True),
        proposals=ProposalSet.MODERN,
        egress_interface="eth1",
    )


SPLIT = (net("10.20.0.0/16"), net("192.168.50.0/24"), net("1.1.1.1/32"))


def local_ts(plan: render.Plan) -> str:
    value: str = swanctl(plan)["connections"][CONN]["children"][CONN]["local_ts"]
    return value


def test_the_server_offers_only_the_split_networks_and_dns(plan: render.Plan) -> None:
    assert local_ts(plan) == "0.0.0.0/0"
    assert local_ts(replace(plan, split=SPLIT)) == "10.20.0.0/16, 192.168.50.0/24, 1.1.1.1/32"
    # With an IPv6 pool and IPv4-only split networks no ::/0: IPv6 goes around the tunnel.
    dual = replace(plan, split=SPLIT, pool_v6=ipaddress.IPv6Network(POOL_V6))
    assert local_ts(dual) == "10.20.0.0/16, 192.168.50.0/24, 1.1.1.1/32"


def test_static_ip_users_get_the_same_split(plan: render.Plan) -> None:
    static = render.StaticAddress("alice", ipaddress.IPv4Address("10.10.10.200"))
    split = replace(
        plan,
        split=SPLIT,
        pool_v4_static=ipaddress.IPv4Network("10.10.10.192/26"),
        static=(static,),
    )
    vici = render.vici_config(split)
    child = vici.static_connections[static.connection]["children"][CONN]
    assert child["local_ts"] == ["10.20.0.0/16", "192.168.50.0/24", "1.1.1.1/32"]


def test_swanctl_conf_says_what_the_selector_means(plan: render.Plan) -> None:
    text = render.swanctl_conf(replace(plan, split=SPLIT))
    assert "# VPN_SPLIT_NETS those networks and the DNS servers (a split tunnel)." in text


# --- the firewall --------------------------------------------------------------------------


def fence_rules(plan: render.Plan) -> list[str]:
    text = render.nftables_conf(plan)
    start = text.index("chain client_fence {")
    body = text[start : text.index("\n    }", start)]
    return [
        line.strip()
        for line in body.splitlines()[1:]
        if line.strip() and not line.strip().startswith("#")
    ]


def test_clients_are_kept_to_the_split_after_the_fence(plan: render.Plan) -> None:
    full = fence_rules(plan)
    assert not any("!=" in rule for rule in full)
    split = fence_rules(replace(plan, split=SPLIT))
    assert split[: len(full)] == full  # the fence first, unchanged
    assert split[len(full) :] == [
        "ip daddr != { 10.20.0.0/16, 192.168.50.0/24, 1.1.1.1/32 } counter drop"
    ]


def test_with_ipv6_both_families_are_kept_to_the_split(plan: render.Plan) -> None:
    dual = replace(plan, pool_v6=ipaddress.IPv6Network(POOL_V6))
    rules = fence_rules(replace(dual, split=(*SPLIT, net("2001:db8:20::/48"))))
    assert rules[-2:] == [
        "ip daddr != { 10.20.0.0/16, 192.168.50.0/24, 1.1.1.1/32 } counter drop",
        "ip6 daddr != { 2001:db8:20::/48 } counter drop",
    ]
    # IPv4-only split networks: no IPv6 is forwarded from clients at all.
    assert fence_rules(replace(dual, split=SPLIT))[-1] == "meta nfproto ipv6 counter drop"
    # IPv6-only split networks (and an IPv6 DNS server): no IPv4 either.
    v6_only = replace(dual, split=(net("2001:db8:20::/48"),))
    assert fence_rules(v6_only)[-2:] == [
        "meta nfproto ipv4 counter drop",
        "ip6 daddr != { 2001:db8:20::/48 } counter drop",
    ]


def test_the_start_up_log_says_what_clients_reach(plan: render.Plan) -> None:
    line = render.client_access(replace(plan, split=SPLIT))
    assert line.startswith(
        "VPN clients may reach: only the split networks and DNS servers 10.20.0.0/16, "
        "192.168.50.0/24, 1.1.1.1/32 (VPN_SPLIT_NETS; NAT); "
        "each other no (VPN_SPLIT_NETS leaves out VPN_POOL_V4); "
    )
    with_pool = replace(plan, split=(net("10.0.0.0/8"), net("1.1.1.1/32")))
    assert "; each other yes (VPN_CLIENT_ISOLATION); " in render.client_access(with_pool)
    assert render.client_access(plan).startswith(
        "VPN clients may reach: the networks behind the server yes (NAT); each other yes"
    )


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
@pytest.mark.parametrize(
    "split",
    [SPLIT, (*SPLIT, net("2001:db8:20::/48")), (net("2001:db8:20::/48"),)],
    ids=["ipv4", "dual", "ipv6-only"],
)
def test_nft_accepts_the_split_rules(
    plan: render.Plan, split: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> None:
    dual = replace(plan, pool_v6=ipaddress.IPv6Network(POOL_V6), split=split)
    result = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=render.nftables_conf(dual),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
