"""Helper pieces of the fault and soak tests: an always-on client's configuration, retransmit
arithmetic, and reading the server's SAs, leases and memory."""

from __future__ import annotations

import pytest

from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.serverstate import (
    Lease,
    Snapshot,
    count_child_sas,
    parse_ike_sas,
    parse_leases,
    parse_vmrss_kib,
)
from ikev2_vpn_helper.vpnclient import (
    STRONGSWAN_RETRANSMIT,
    ClientProfile,
    CycleResult,
    Retransmit,
    parse_tunnel,
    render_strongswan_conf,
    render_swanctl_conf,
)

PROFILE = ClientProfile(server_address="192.0.2.10", server_id="vpn.example.test", user="alice")


def test_a_one_shot_connection_neither_starts_nor_redials_itself() -> None:
    text = render_swanctl_conf(PROFILE)
    for option in ("start_action", "close_action", "dpd_action", "keyingtries", "dpd_delay"):
        assert option not in text


def test_a_persistent_connection_dials_itself_retries_forever_and_redials() -> None:
    text = render_swanctl_conf(
        ClientProfile("192.0.2.10", "vpn.example.test", "alice", persistent=True, dpd_delay_s=7)
    )
    assert "keyingtries = 0" in text
    assert "dpd_delay = 7s" in text
    assert "start_action = start" in text
    assert "close_action = start" in text
    assert "dpd_action = restart" in text
    # The IKE options sit in the connection, the CHILD options in its child.
    connection, _, child = text.partition("children {")
    assert "keyingtries" in connection and "start_action" in child


def test_client_retransmit_timers_are_rendered_only_when_given() -> None:
    assert "retransmit" not in render_strongswan_conf()
    text = render_strongswan_conf(retransmit=Retransmit(tries=2, timeout_s=1.0, base=1.5))
    assert "retransmit_tries = 2" in text
    assert "retransmit_timeout = 1.0" in text
    assert "retransmit_base = 1.5" in text


def test_give_up_time_sums_every_backed_off_wait() -> None:
    # strongSwan's documented defaults: 5 retransmits give up after about 165 s.
    assert STRONGSWAN_RETRANSMIT.give_up_after_s() == pytest.approx(165.0, abs=0.5)
    # The server's 3 tries: 4 + 7.2 + 12.96 + 23.328 s.
    assert Retransmit(3, 4.0, 1.8).give_up_after_s() == pytest.approx(47.488)


CLIENT_SAS = (
    "list-sa event {vpn {uniqueid=1 version=2 state=ESTABLISHED local-host=203.0.113.4 "
    "local-vips=[10.10.10.2] child-sas {vpn-1 {name=vpn uniqueid=1 reqid=1 state=INSTALLED "
    "mode=TUNNEL protocol=ESP}}}}\nlist-sas reply {}\n"
)


def test_tunnel_is_up_only_with_an_installed_child_and_an_address() -> None:
    assert parse_tunnel(CLIENT_SAS) == "10.10.10.2"
    assert parse_tunnel(CLIENT_SAS.replace("state=INSTALLED", "state=INSTALLING")) is None
    assert parse_tunnel(CLIENT_SAS.replace("state=ESTABLISHED", "state=CONNECTING")) is None
    assert parse_tunnel(CLIENT_SAS.replace("[10.10.10.2]", "[]")) is None
    assert parse_tunnel("list-sas reply {}\n") is None


def test_cycle_result_reads_the_probe_answer() -> None:
    result = CycleResult.from_probe({"done": 98, "failed": 2, "seconds": 4.5, "errors": ["x"]})
    assert (result.done, result.failed, result.seconds, result.errors) == (98, 2, 4.5, ["x"])


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


def test_cycles_count_failures_and_clean_up_after_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from ikev2_vpn_helper.client import probe

    calls: list[tuple[str, ...]] = []
    answers = iter([0, 0, 0, 1, 0, 0, 0])  # load, ok cycle, failed initiate, ok cycle

    def fake(*args: str) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        code = 0 if "--force" in args else next(answers)
        return subprocess.CompletedProcess(["swanctl", *args], code, "", "initiate failed")

    monkeypatch.setattr(probe, "swanctl", fake)
    result = probe.cycles(3, 5)
    assert (result["done"], result["failed"]) == (2, 1)
    assert result["errors"] == ["initiate failed; initiate failed"]
    assert sum("--force" in call for call in calls) == 1  # only after the failure
