"""The lab's readers of a server's state: SAs, leases and memory (fault and soak tests)."""

from __future__ import annotations

import pytest

from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_lab.serverstate import (
    Lease,
    Snapshot,
    count_child_sas,
    parse_ike_sas,
    parse_leases,
    parse_vmrss_kib,
)

LEASES = (
    "pool-v4              10.10.10.1                          1 / 1 / 254\n"
    "  10.10.10.1                     offline  'a'\n"
    "  10.10.10.2                     online   'b b'\n"
)
STATS = (
    "uptime: 5 seconds, since Nov 27 00:58:28 2026\n"
    "worker threads: 16 total, 7 idle, working: 4/0/5/0\n"
    "IKE_SAs: 2 total, 1 half-open\n"
)
SERVER_SAS = (
    "list-sa event {ikev2-vpn {uniqueid=4 version=2 state=ESTABLISHED remote-vips=[10.10.10.2] "
    "child-sas {ikev2-vpn-2 {name=ikev2-vpn state=INSTALLED mode=TUNNEL}}}}\n"
    "list-sa event {ikev2-vpn {uniqueid=2 version=2 state=ESTABLISHED child-sas {}}}\n"
    "list-sas reply {}\n"
)


def test_leases_tell_online_from_offline() -> None:
    assert parse_leases(LEASES) == (
        Lease("10.10.10.1", online=False, identity="a"),
        Lease("10.10.10.2", online=True, identity="b b"),
    )
    assert parse_leases("pool-v4  10.10.10.1  0 / 0 / 254\n") == ()


def test_sa_counts() -> None:
    assert parse_ike_sas(STATS) == (2, 1)
    assert count_child_sas(SERVER_SAS) == 1
    assert count_child_sas("list-sas reply {}\n") == 0
    with pytest.raises(HelperError):
        parse_ike_sas("")


def test_a_server_is_idle_only_without_sas_and_online_leases() -> None:
    offline = (Lease("10.10.10.1", online=False, identity="a"),)
    assert Snapshot(0, 0, 0, offline).idle
    assert not Snapshot(1, 0, 0, offline).idle
    assert not Snapshot(0, 1, 0, offline).idle
    assert not Snapshot(0, 0, 1, offline).idle
    assert not Snapshot(0, 0, 0, (Lease("10.10.10.1", online=True, identity="a"),)).idle


def test_vmrss_in_kib() -> None:
    status = "Name:\tcharon\nVmPeak:\t  900000 kB\nVmRSS:\t   11980 kB\nThreads:\t16\n"
    assert parse_vmrss_kib(status) == 11980
    with pytest.raises(HelperError):
        parse_vmrss_kib("Name:\tcharon\n")
