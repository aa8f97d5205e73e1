"""The helper's IPv6 side: test networks in 2001:db8::/32, clients that ask for IPv6."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from ikev2_vpn_helper import vpnclient
from ikev2_vpn_helper.topology import IPV6_DOC, free_subnets_v6


def test_ipv6_test_networks_are_free_slots_of_the_documentation_prefix() -> None:
    taken = [ipaddress.IPv6Network("2001:db8::/64"), ipaddress.IPv6Network("fd00::/8")]
    slots = free_subnets_v6(IPV6_DOC, taken)
    first, second = next(slots), next(slots)
    assert first == ipaddress.IPv6Network("2001:db8:0:1::/64")
    assert second == ipaddress.IPv6Network("2001:db8:0:2::/64")
    assert first.subnet_of(ipaddress.IPv6Network("2001:db8::/32"))


def test_client_asks_for_an_ipv6_address_only_when_told() -> None:
    profile = vpnclient.ClientProfile("2001:db8::2", "vpn.example.test", "alice")
    v4 = vpnclient.render_swanctl_conf(profile)
    assert "vips = 0.0.0.0\n" in v4 and "remote_ts = 0.0.0.0/0\n" in v4
    assert "remote_addrs = 2001:db8::2\n" in v4
    v6 = vpnclient.render_swanctl_conf(replace(profile, ipv6=True))
    assert "vips = 0.0.0.0, ::\n" in v6 and "remote_ts = 0.0.0.0/0, ::/0\n" in v6


def test_connect_result_reports_the_ipv6_virtual_ip() -> None:
    result = vpnclient.ConnectResult.from_probe(
        {"connected": True, "virtual_ips": ["fd00:10:10::1", "10.10.10.1"]}
    )
    assert result.virtual_ip == "10.10.10.1"
    assert result.virtual_ip_v6 == "fd00:10:10::1"
