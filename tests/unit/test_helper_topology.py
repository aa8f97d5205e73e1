"""Test topology: subnets of the benchmarking range that never collide with the engine's
networks, the host's, or any address the host talks to."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from docker.errors import APIError, NotFound

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper import topology
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.hostnet import Address, Resolver, host_peers
from ikev2_vpn_helper.topology import (
    BENCHMARK_RANGE,
    EGRESS_SPACES,
    WAN_SPACES,
    free_subnets,
    network_names,
)

DOCUMENTATION = [
    ipaddress.IPv4Network(net) for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def test_only_the_benchmarking_range_is_used() -> None:
    assert net("198.18.0.0/15") == BENCHMARK_RANGE
    for space in (*WAN_SPACES, *EGRESS_SPACES):
        assert space.subnet_of(BENCHMARK_RANGE)
        assert not any(space.overlaps(documentation) for documentation in DOCUMENTATION)
    assert WAN_SPACES[0] == net("198.18.0.0/16")
    assert EGRESS_SPACES[0] == net("198.19.0.0/16")


def test_free_slots_skip_taken_subnets() -> None:
    taken = [net("198.18.0.0/26"), net("172.17.0.0/16")]
    slots = list(free_subnets([net("198.18.0.0/24")], taken))
    assert slots[0] == net("198.18.0.64/26")
    assert len(slots) == 3


def test_a_whole_taken_half_moves_on_to_the_other() -> None:
    first = next(free_subnets(WAN_SPACES, [net("198.18.0.0/16")]))
    assert first == net("198.19.0.0/26")


def test_egress_name_sorts_before_wan() -> None:
    wan, egress = network_names("ikev2-vpn-123")
    assert egress < wan  # the engine breaks default-route ties by network name


def fake_resolver(table: dict[str, str]) -> Resolver:
    def resolve(names: Iterable[str]) -> list[Address]:
        return [ipaddress.ip_address(table[name]) for name in names if name in table]

    return resolve


def test_a_slot_holding_the_package_mirror_is_never_chosen(tmp_path: Path) -> None:
    """The incident: a lab network over the mirror's address cut every download."""
    (tmp_path / "etc/apt").mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text(
        "deb http://mirror.example.test/debian trixie main\n"
    )
    resolve = fake_resolver({"mirror.example.test": "198.18.0.70"})
    avoid = [n for n in host_peers(tmp_path, {}, resolve) if isinstance(n, ipaddress.IPv4Network)]
    engine_networks = [net("198.18.0.0/26")]  # another run's wan
    slot = next(free_subnets(WAN_SPACES, [*engine_networks, *avoid]))
    assert slot == net("198.18.0.128/26")


def test_the_host_is_not_read_when_the_engine_runs_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eng, "engine_is_local", lambda: False)
    assert topology.host_avoided() == []


class RacingNetworks:
    """An engine's networks API where another run creates a network on the slot this one
    picked, ``lost`` times, between listing and creating."""

    def __init__(self, lost: int) -> None:
        self.lost = lost
        self.existing: list[str] = []
        self.asked: list[str] = []

    def get(self, name: str) -> None:
        raise NotFound(name)

    def list(self) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(attrs={"IPAM": {"Config": [{"Subnet": subnet}]}})
            for subnet in self.existing
        ]

    def create(self, name: str, **options: Any) -> str:
        subnet: str = options["ipam"]["Config"][0]["Subnet"]
        self.asked.append(subnet)
        if self.lost:
            self.lost -= 1
            self.existing.append(subnet)  # the other run got there first
            raise APIError("conflict", explanation="Pool overlaps with other one")
        return subnet


def ensure_wan(networks: RacingNetworks) -> Any:
    engine = SimpleNamespace(networks=networks)
    return topology._ensure_network(
        engine, "ikev2-vpn-x-net-wan", "x", "wan", WAN_SPACES, avoid=[], internal=False, run_id="x"
    )


@pytest.mark.parametrize("lost", [1, 12])
def test_a_slot_taken_meanwhile_by_another_run_moves_on_to_a_free_one(lost: int) -> None:
    networks = RacingNetworks(lost)
    created = ensure_wan(networks)
    assert len(networks.asked) == lost + 1 == len(set(networks.asked))
    assert created == networks.asked[-1] not in networks.existing


def test_slots_refused_again_and_again_end_with_a_clear_error() -> None:
    with pytest.raises(HelperError, match="taken by other runs meanwhile"):
        ensure_wan(RacingNetworks(lost=topology.ATTEMPTS))
