"""Test topology: documentation subnets that never collide with the engine's networks."""

from __future__ import annotations

import ipaddress

from ikev2_vpn_helper.topology import (
    EGRESS_SPACES,
    WAN_SPACES,
    free_subnets,
    network_names,
)

DOCUMENTATION = [
    ipaddress.IPv4Network(net) for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]


def test_only_documentation_ranges_are_used() -> None:
    for space in (*WAN_SPACES, *EGRESS_SPACES):
        assert space in DOCUMENTATION
    assert WAN_SPACES[0] == ipaddress.IPv4Network("192.0.2.0/24")
    assert EGRESS_SPACES[0] == ipaddress.IPv4Network("198.51.100.0/24")


def test_free_slots_skip_taken_subnets() -> None:
    taken = [ipaddress.IPv4Network("192.0.2.0/26"), ipaddress.IPv4Network("172.17.0.0/16")]
    slots = list(free_subnets([ipaddress.IPv4Network("192.0.2.0/24")], taken))
    assert slots[0] == ipaddress.IPv4Network("192.0.2.64/26")
    assert len(slots) == 3


def test_a_whole_taken_range_moves_on_to_the_next() -> None:
    taken = [ipaddress.IPv4Network("192.0.2.0/24")]
    first = next(free_subnets(WAN_SPACES, taken))
    assert first == ipaddress.IPv4Network("203.0.113.0/26")


def test_egress_name_sorts_before_wan() -> None:
    wan, egress = network_names("ikev2-vpn-123")
    assert egress < wan  # the engine breaks default-route ties by network name
