"""Helper pieces of the fault and soak tests: an always-on client's configuration and
retransmit arithmetic (the server's SAs, leases and memory: test_lab_serverstate)."""

from __future__ import annotations

import pytest

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
