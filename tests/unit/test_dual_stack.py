"""Dual stack (VPN_POOL_V6, VPN_POOL_V6_EGRESS): settings, the configuration charon and nft
get, the container's IPv6 checks and client profiles."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import profilefactory
import pytest
from planfactory import make_plan
from procsys import fake_proc_sys
from swanctl_syntax import parse_conf

from ikev2_vpn import defaults, render, sysctl
from ikev2_vpn.apply import network
from ikev2_vpn.errors import ConfigError, ConfigErrors, SystemSetupError
from ikev2_vpn.probe import network as probe_network
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.probe.network import EgressV6
from ikev2_vpn.profiles import linux
from ikev2_vpn.settings import Backend, ProposalSet, Settings, V6Egress, load_settings

POOL_V4 = "10.10.10.0/24"
POOL_V6 = "fd00:10:10::/112"
CONN = defaults.CONNECTION_NAME


# --- settings --------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("clean_environment")


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def refused(monkeypatch: pytest.MonkeyPatch, setting: str, **env: str) -> str:
    """The one line a refused setting gives (it names the setting and says what to do)."""
    with pytest.raises(ConfigErrors) as caught:
        load(monkeypatch, **env)
    assert len(caught.value.errors) == 1, str(caught.value)
    error = caught.value.errors[0]
    assert error.setting == setting, error.line()
    assert error.fix and "\n" not in error.line()
    return error.line()


def test_ipv6_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch)
    assert settings.pool_v6 is None
    assert settings.pool_v6_egress is V6Egress.NAT66


@pytest.mark.parametrize(
    ("value", "egress"),
    [
        ("fd00:10:10::/112", "nat66"),
        ("fd12:3456:789a::/64", "NAT66"),
        ("2001:db8:1:2::/64", "routed"),
        ("2001:db8:1:2::f000/116", "ndp-proxy"),
        ("fd00::/48", "routed"),
    ],
)
def test_pool_v6_accepts_networks_of_sensible_size(
    monkeypatch: pytest.MonkeyPatch, value: str, egress: str
) -> None:
    settings = load(monkeypatch, VPN_POOL_V6=value, VPN_POOL_V6_EGRESS=egress)
    assert settings.pool_v6 == ipaddress.IPv6Network(value)
    assert settings.pool_v6_egress is V6Egress(egress.lower())


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("fd00:10:10::1/112", "host bits set; use fd00:10:10::/112"),
        ("fd00:10:10::", "not an IPv6 network"),
        ("10.10.10.0/24", "not an IPv6 network"),
        ("fd00::/47", "/47 is out of range"),
        ("fd00::/124", "/124 is out of range"),
        ("fe80::/64", "not unicast address space"),
        ("ff02::/64", "not unicast address space"),
        ("::ffff:0:0/112", "not unicast address space"),
    ],
)
def test_pool_v6_refuses_what_cannot_be_a_pool(
    monkeypatch: pytest.MonkeyPatch, value: str, words: str
) -> None:
    assert words in refused(monkeypatch, "VPN_POOL_V6", VPN_POOL_V6=value)


def test_nat66_wants_a_unique_local_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    line = refused(monkeypatch, "VPN_POOL_V6", VPN_POOL_V6="2001:db8:1::/64")
    assert "fc00::/7" in line and "VPN_POOL_V6_EGRESS=routed" in line


def test_ndp_proxy_wants_a_small_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    line = refused(
        monkeypatch,
        "VPN_POOL_V6",
        VPN_POOL_V6="2001:db8:1:2::/112",
        VPN_POOL_V6_EGRESS="ndp-proxy",
    )
    assert "/116" in line


def test_egress_mode_without_a_pool_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    line = refused(monkeypatch, "VPN_POOL_V6_EGRESS", VPN_POOL_V6_EGRESS="routed")
    assert "set VPN_POOL_V6" in line


def test_unknown_egress_mode_lists_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    line = refused(
        monkeypatch, "VPN_POOL_V6_EGRESS", VPN_POOL_V6=POOL_V6, VPN_POOL_V6_EGRESS="nat64"
    )
    assert "nat66, routed, ndp-proxy" in line


def test_ipv6_dns_server_needs_the_ipv6_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    line = refused(monkeypatch, "VPN_DNS", VPN_DNS="1.1.1.1,2606:4700:4700::1111")
    assert "2606:4700:4700::1111" in line and "VPN_POOL_V6" in line
    settings = load(monkeypatch, VPN_POOL_V6=POOL_V6)
    assert [str(s) for s in settings.dns] == ["1.1.1.1", "2606:4700:4700::1111"]


# --- rendering -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan() -> render.Plan:
    return make_plan(
        host="vpn.example.test",
        pool_v4=ipaddress.IPv4Network(POOL_V4),
        dns=(ipaddress.ip_address("1.1.1.1"), ipaddress.ip_address("2001:db8::53")),
        backend=BackendChoice(Backend.USERSPACE, "test", esp_gcm=True),
        proposals=ProposalSet.MODERN,
        egress_interface="eth1",
        pool_v6=ipaddress.IPv6Network(POOL_V6),
        egress_interface_v6="eth2",
    )


def swanctl(plan: render.Plan) -> dict[str, Any]:
    return parse_conf(
        render.swanctl_conf(plan), {render.USERS_FILE: render.users_conf(plan.users())}
    )


def test_connection_lists_both_pools_and_tunnels_both_families(plan: render.Plan) -> None:
    conf = swanctl(plan)
    connection = conf["connections"][CONN]
    assert connection["pools"] == f"{defaults.POOL_V4_NAME}, {defaults.POOL_V6_NAME}"
    assert connection["children"][CONN]["local_ts"] == "0.0.0.0/0, ::/0"
    assert conf["pools"][defaults.POOL_V6_NAME] == {"addrs": POOL_V6}
    # DNS servers of both families go out once, with the IPv4 pool every client gets.
    assert conf["pools"][defaults.POOL_V4_NAME]["dns"] == "1.1.1.1, 2001:db8::53"


def test_vici_messages_match_the_file(plan: render.Plan) -> None:
    vici = render.vici_config(plan)
    connection = vici.connection[CONN]
    assert connection["pools"] == [defaults.POOL_V4_NAME, defaults.POOL_V6_NAME]
    assert connection["children"][CONN]["local_ts"] == ["0.0.0.0/0", "::/0"]
    assert vici.pools[defaults.POOL_V6_NAME] == {"addrs": POOL_V6}
    assert vici.pools[defaults.POOL_V4_NAME]["dns"] == ["1.1.1.1", "2001:db8::53"]


def test_without_a_v6_pool_nothing_changes(plan: render.Plan) -> None:
    v4 = replace(plan, pool_v6=None, dns=(ipaddress.ip_address("1.1.1.1"),))
    conf = swanctl(v4)
    assert conf["connections"][CONN]["pools"] == defaults.POOL_V4_NAME
    assert conf["connections"][CONN]["children"][CONN]["local_ts"] == "0.0.0.0/0"
    assert set(conf["pools"]) == {defaults.POOL_V4_NAME}
    ruleset = render.nftables_conf(v4)
    assert "None" not in ruleset and POOL_V6 not in ruleset and "1340" not in ruleset
    assert ruleset.count("masquerade") == 1


def test_static_users_get_an_ipv6_address_from_the_pool_too(plan: render.Plan) -> None:
    static = render.StaticAddress("alice", ipaddress.IPv4Address("10.10.10.200"))
    with_static = replace(plan, pool_v4_static=ipaddress.IPv4Network("10.10.10.192/26"))
    users = replace(with_static.users(), static=(static,))
    connection = render.vici_users(users).connections[static.connection]
    assert connection["pools"] == [static.pool, defaults.POOL_V6_NAME]
    assert connection["children"][CONN]["local_ts"] == ["0.0.0.0/0", "::/0"]


def rules(plan: render.Plan, chain: str) -> list[str]:
    lines = [
        line.strip()
        for line in render.nftables_conf(plan).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    start = lines.index(f"chain {chain} {{")
    return lines[start + 2 : lines.index("}", start)]


def test_nat66_masquerades_the_v6_pool_out_of_the_v6_egress(plan: render.Plan) -> None:
    assert f'ip6 saddr {POOL_V6} ip6 daddr != {POOL_V6} oifname "eth2" masquerade' in rules(
        plan, "postrouting"
    )


@pytest.mark.parametrize("egress", [V6Egress.ROUTED, V6Egress.NDP_PROXY])
def test_routed_pools_are_forwarded_without_nat(plan: render.Plan, egress: V6Egress) -> None:
    routed = replace(plan, pool_v6_egress=egress)
    assert not [rule for rule in rules(routed, "postrouting") if "ip6" in rule]
    forward = rules(routed, "forward")
    assert f'iifname "ipsec0" ip6 saddr {POOL_V6} accept' in forward
    # Nobody outside may open a connection to a client's routed address.
    assert f"ip6 daddr {POOL_V6} ct state established,related accept" in forward
    # Only replies reach it: the one other rule naming it as destination is the final drop.
    others = [rule for rule in forward if f"ip6 daddr {POOL_V6}" in rule and "ct" not in rule]
    assert others == [f"ip6 daddr {POOL_V6} drop"]
    assert forward[-1] == f"ip6 daddr {POOL_V6} drop"


def test_client_access_rules_hold_for_ipv6(plan: render.Plan) -> None:
    closed = replace(plan, client_isolation=True)
    forward, local = rules(closed, "forward"), rules(closed, "input_from_clients")
    fenced = rules(closed, "client_fence")  # what the pool's packets jump to first
    assert forward[:2] == [
        f"ip saddr {POOL_V4} jump client_fence",
        f"ip6 saddr {POOL_V6} jump client_fence",
    ]
    assert "ip6 daddr fe80::/10 counter drop" in fenced
    assert "ip6 daddr fd00:ec2::254/128 counter drop" in fenced  # AWS metadata
    assert f"ip6 saddr {POOL_V6} ip6 daddr {POOL_V6} drop" in forward
    assert f"ip6 saddr {POOL_V6} ip6 daddr fe80::/10 drop" in local
    assert local[-1] == f"ip6 saddr {POOL_V6} drop"  # the server's own IPv6 addresses
    opened = replace(plan, allow_server_access=True, allow_link_local=True)
    every = render.nftables_conf(opened)
    assert "fe80::/10" not in every
    assert "fd00:ec2::254" not in every
    assert f"ip6 saddr {POOL_V6} drop" not in rules(opened, "input_from_clients")
    assert f"ip6 saddr {POOL_V6} ip6 daddr {POOL_V6} drop" not in every


def test_ipv6_mss_is_clamped_to_mtu_minus_60(plan: render.Plan) -> None:
    clamp = rules(plan, "clamp_mss")
    assert defaults.TCP_MSS_V6 == 1400 - 60
    for direction in ("saddr", "daddr"):
        assert (
            f"ip6 {direction} {POOL_V6} tcp flags & (syn | rst) == syn tcp option maxseg size "
            f"> 1340 tcp option maxseg size set 1340"
        ) in clamp


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
@pytest.mark.parametrize("egress", list(V6Egress))
@pytest.mark.parametrize("closed", [False, True])
def test_nft_accepts_the_dual_stack_ruleset(
    plan: render.Plan, egress: V6Egress, closed: bool
) -> None:
    variant = replace(
        plan,
        pool_v6_egress=egress,
        client_isolation=closed,
        allow_server_access=not closed,
        allow_link_local=not closed,
    )
    result = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=render.nftables_conf(variant),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_policy_line_says_how_ipv6_leaves(plan: render.Plan) -> None:
    assert "(IPv4: NAT, IPv6: nat66)" in render.client_access(plan)
    routed = replace(plan, pool_v6_egress=V6Egress.ROUTED)
    assert "(IPv4: NAT, IPv6: routed)" in render.client_access(routed)


# --- the container's IPv6 ----------------------------------------------------------------------


@pytest.fixture
def proc_sys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Path]:
    """A /proc/sys/net/ipv6 as Docker leaves it (forwarding off, IPv6 off for new devices)."""

    def _make(read_only: bool = False, **values: str) -> Path:
        start = {
            "net.ipv6.conf.all.forwarding": "0",
            "net.ipv6.conf.all.disable_ipv6": "1",
            "net.ipv6.conf.all.proxy_ndp": "0",
        }
        return fake_proc_sys(monkeypatch, tmp_path, start, values, read_only=read_only)

    return _make


def test_ipv6_sysctls_are_set_when_proc_sys_is_writable(proc_sys: Callable[..., Path]) -> None:
    root = proc_sys()
    probe_network.check_ipv6_sysctls(V6Egress.NAT66)
    assert (root / "net/ipv6/conf/all/forwarding").read_text() == "1\n"
    assert (root / "net/ipv6/conf/all/disable_ipv6").read_text() == "0\n"
    assert (root / "net/ipv6/conf/all/proxy_ndp").read_text() == "0\n"  # not asked for


def test_forwarding_off_and_read_only_gives_one_line_with_the_flags(
    proc_sys: Callable[..., Path],
) -> None:
    proc_sys(read_only=True, net__ipv6__conf__all__disable_ipv6="0")
    with pytest.raises(SystemSetupError) as caught:
        probe_network.check_ipv6_sysctls(V6Egress.NAT66)
    message = str(caught.value)
    assert message.startswith("VPN_POOL_V6 is set but net.ipv6.conf.all.forwarding is not")
    assert "--sysctl net.ipv6.conf.all.forwarding=1" in message
    assert "disable_ipv6" not in message
    assert "\n" not in message


def test_ndp_proxy_also_needs_proxy_ndp(proc_sys: Callable[..., Path]) -> None:
    proc_sys(
        read_only=True,
        net__ipv6__conf__all__forwarding="1",
        net__ipv6__conf__all__disable_ipv6="0",
    )
    probe_network.check_ipv6_sysctls(V6Egress.ROUTED)
    with pytest.raises(SystemSetupError, match=r"--sysctl net\.ipv6\.conf\.all\.proxy_ndp=1"):
        probe_network.check_ipv6_sysctls(V6Egress.NDP_PROXY)


def test_kernel_without_ipv6_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sysctl, "PROC_SYS", tmp_path)
    with pytest.raises(SystemSetupError, match="the kernel has no IPv6"):
        probe_network.check_ipv6_sysctls(V6Egress.NAT66)
    assert probe_network.find_egress_v6() is None


# Measured in a container on a Docker network created with --ipv6 --subnet 2001:db8:77::/64:
# `ip -j -6 addr show scope global` leaves the other scopes' entries as {}.
MEASURED_ADDR = [
    {
        "ifindex": 182,
        "ifname": "eth0",
        "addr_info": [
            {"family": "inet6", "local": "2001:db8:77::2", "prefixlen": 64, "scope": "global"},
            {},
        ],
    }
]
MEASURED_ROUTE = [{"dst": "default", "gateway": "2001:db8:77::1", "dev": "eth0"}]


@pytest.fixture
def ip_v6(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    (tmp_path / "net/ipv6").mkdir(parents=True)
    monkeypatch.setattr(sysctl, "PROC_SYS", tmp_path)
    batches: list[str] = []
    answers = {
        ("ip", "-j", "-6", "route", "show", "default"): json.dumps(MEASURED_ROUTE),
        ("ip", "-j", "-6", "addr", "show", "scope", "global"): json.dumps(MEASURED_ADDR),
    }

    def run(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert kwargs.get("check") is True
        if list(args) == ["ip", "-6", "-batch", "-"]:
            batches.append(kwargs["input"])
            return subprocess.CompletedProcess(args, 0, "", "")
        return subprocess.CompletedProcess(args, 0, answers[tuple(args)], "")

    monkeypatch.setattr(subprocess, "run", run)
    return batches


def test_ipv6_egress_from_output_measured_on_docker(ip_v6: list[str]) -> None:
    assert probe_network.find_egress_v6() == EgressV6(
        "eth0",
        (ipaddress.IPv6Interface("2001:db8:77::2/64"),),
        (ipaddress.IPv6Network("2001:db8:77::/64"),),
    )


def test_no_ipv6_default_route_is_one_line() -> None:
    with pytest.raises(SystemSetupError) as caught:
        probe_network.check_pool_v6(ipaddress.IPv6Network(POOL_V6), V6Egress.NAT66, None)
    assert "no IPv6 default route" in str(caught.value)
    assert "\n" not in str(caught.value)


EGRESS = EgressV6(
    "eth0",
    (ipaddress.IPv6Interface("2001:db8:77::2/64"),),
    (ipaddress.IPv6Network("2001:db8:77::/64"), ipaddress.IPv6Network("2001:db8:99::/64")),
)


@pytest.mark.parametrize("pool", ["2001:db8:99::/112", "2001:db8:77::/64", "2001:db8:77::/48"])
def test_pool_overlapping_an_attached_v6_network_is_refused(pool: str) -> None:
    with pytest.raises(ConfigError, match="overlaps the container's network"):
        probe_network.check_pool_v6(ipaddress.IPv6Network(pool), V6Egress.ROUTED, EGRESS)


def test_ndp_proxy_pool_must_be_on_link_and_spare_the_servers_address() -> None:
    probe_network.check_pool_v6(
        ipaddress.IPv6Network("2001:db8:77::f000/116"), V6Egress.NDP_PROXY, EGRESS
    )
    with pytest.raises(ConfigError, match="not inside an on-link prefix of eth0"):
        probe_network.check_pool_v6(
            ipaddress.IPv6Network("2001:db8:78::/116"), V6Egress.NDP_PROXY, EGRESS
        )
    with pytest.raises(ConfigError, match="holds the server's own address 2001:db8:77::2"):
        probe_network.check_pool_v6(
            ipaddress.IPv6Network("2001:db8:77::/116"), V6Egress.NDP_PROXY, EGRESS
        )


def test_ndp_proxies_cover_the_pool_in_one_ip_process(ip_v6: list[str]) -> None:
    count = network.add_ndp_proxies(ipaddress.IPv6Network("2001:db8:77::f000/116"), "eth0")
    assert count == 4095
    (batch,) = ip_v6
    lines = batch.splitlines()
    assert lines[0] == "neigh replace proxy 2001:db8:77::f001 dev eth0"
    assert lines[-1] == "neigh replace proxy 2001:db8:77::ffff dev eth0"
    assert len(lines) == 4095


# --- profiles ----------------------------------------------------------------------------------


def test_linux_swanctl_profile_asks_for_ipv6_when_the_server_has_a_pool() -> None:
    v6 = linux.swanctl_conf(profilefactory.make_profile(ipv6=True)).decode()
    assert "vips = 0.0.0.0, ::\n" in v6
    assert "remote_ts = 0.0.0.0/0, ::/0\n" in v6
    v4 = linux.swanctl_conf(profilefactory.make_profile()).decode()
    assert "vips = 0.0.0.0\n" in v4
    assert "remote_ts = 0.0.0.0/0\n" in v4
