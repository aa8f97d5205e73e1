"""The Prometheus endpoint: what a scrape shows, fed with charon's real VICI answers.

``vici_list_sas.json`` is ``list_sas`` captured from charon 6.0.1 in the image (values
decoded from bytes): alice connected (one rekeyed CHILD_SA still DELETED beside its
successor), bob connected through his static-IP connection, and a third login with a wrong
password still in progress on the ``identify`` connection.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ports import free_port
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from ikev2_vpn import start
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.run import metrics, vici_session
from ikev2_vpn.run.bans import BanGuard
from ikev2_vpn.settings import Backend, Settings

CAPTURED = Path(__file__).with_name("vici_list_sas.json")
NOT_AFTER = 1_900_000_000.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def as_bytes(value: Any) -> Any:
    """VICI answers carry every value as bytes."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        return {key: as_bytes(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_bytes(item) for item in value]
    return value


def captured() -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = json.loads(CAPTURED.read_text())
    return answer


class FakeSession:
    """A VICI session that answers ``list_sas`` like charon did."""

    def __init__(self, answer: list[dict[str, Any]]) -> None:
        self.answer = as_bytes(answer)
        self.closed = False
        self.transport = self

    def list_sas(self) -> Iterator[dict[str, Any]]:
        return iter(self.answer)

    def close(self) -> None:
        self.closed = True


class Charon:
    """What the collector connects to: an answer to give, or down."""

    def __init__(self, answer: list[dict[str, Any]]) -> None:
        self.answer = answer
        self.up = True
        self.sessions: list[FakeSession] = []

    def connect(self) -> FakeSession:
        if not self.up:
            raise FileNotFoundError(2, "No such file or directory")
        self.sessions.append(FakeSession(self.answer))
        return self.sessions[-1]


@pytest.fixture
def charon() -> Charon:
    return Charon(captured())


@pytest.fixture
def collector(charon: Charon) -> metrics.VpnCollector:
    return metrics.VpnCollector(
        "userspace", connect=charon.connect, certificate_dates=lambda: (1.0, NOT_AFTER)
    )


def scrape(collector: metrics.VpnCollector) -> Samples:
    """One scrape, parsed the way Prometheus parses it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return parse(generate_latest(registry).decode())


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def user(name: str) -> tuple[tuple[str, str], ...]:
    return (("user", name),)


def alice_child(answer: list[dict[str, Any]], uniqueid: str) -> dict[str, Any]:
    child: dict[str, Any] = answer[1]["ikev2-vpn"]["child-sas"][f"ikev2-vpn-{uniqueid}"]
    return child


# --- reading charon's answer -------------------------------------------------------------


def test_established_ike_sas_are_the_connected_clients() -> None:
    snapshot = metrics.read_snapshot(as_bytes(captured()))
    assert snapshot.connected == 2  # the wrong-password login under way is no client
    assert snapshot.sas_per_user == {"alice": 1, "bob": 1}
    assert len(snapshot.children) == 3  # the rekeyed CHILD_SA is kept until it is deleted
    alice = [traffic for who, traffic in snapshot.children.values() if who == "alice"]
    assert sum(alice, metrics.Traffic()) == metrics.Traffic(431, 9, 490, 9)


def test_a_scrape_shows_clients_traffic_certificate_and_backend(
    collector: metrics.VpnCollector,
) -> None:
    samples = scrape(collector)
    assert samples[("ikev2_vpn_charon_up", ())] == 1
    assert samples[("ikev2_vpn_connected_clients", ())] == 2
    assert samples[("ikev2_vpn_user_ike_sas", user("alice"))] == 1
    assert samples[("ikev2_vpn_user_ike_sas", user("bob"))] == 1
    assert samples[("ikev2_vpn_user_received_bytes_total", user("alice"))] == 431
    assert samples[("ikev2_vpn_user_sent_bytes_total", user("alice"))] == 490
    assert samples[("ikev2_vpn_user_received_packets_total", user("alice"))] == 9
    assert samples[("ikev2_vpn_user_sent_packets_total", user("bob"))] == 0
    assert samples[("ikev2_vpn_received_bytes_total", ())] == 431
    assert samples[("ikev2_vpn_sent_packets_total", ())] == 9
    assert samples[("ikev2_vpn_failed_logins_total", ())] == 0
    assert samples[("ikev2_vpn_certificate_expiry_timestamp_seconds", ())] == NOT_AFTER
    assert samples[("ikev2_vpn_backend_info", (("backend", "userspace"),))] == 1


def test_every_metric_has_help_text_and_the_prefix(collector: metrics.VpnCollector) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    traffic = {
        f"{who}{direction}_{unit}"
        for who in ("", "user_")
        for direction in ("received", "sent")
        for unit in ("bytes", "packets")
    }
    assert {family.name.removeprefix("ikev2_vpn_") for family in families} == {
        "charon_up",
        "connected_clients",
        "user_ike_sas",
        *traffic,
        "failed_logins",
        "certificate_expiry_timestamp_seconds",
        "backend_info",
    }
    for family in families:
        assert family.name.startswith("ikev2_vpn_"), family.name
        assert family.documentation, family.name


def test_each_scrape_opens_and_closes_its_own_session(
    charon: Charon, collector: metrics.VpnCollector
) -> None:
    scrape(collector)
    scrape(collector)
    assert len(charon.sessions) == 2
    assert all(session.closed for session in charon.sessions)


# --- counters that rate() can use ----------------------------------------------------------


def test_traffic_of_ended_sas_stays_counted(
    charon: Charon, collector: metrics.VpnCollector
) -> None:
    scrape(collector)
    # The rekeyed CHILD_SA is deleted; its successor carries 100 bytes each way.
    answer = copy.deepcopy(charon.answer)
    children = answer[1]["ikev2-vpn"]["child-sas"]
    del children["ikev2-vpn-1"]
    children["ikev2-vpn-3"].update({"bytes-in": "100", "packets-in": "1"})
    children["ikev2-vpn-3"].update({"bytes-out": "100", "packets-out": "1"})
    charon.answer = answer
    samples = scrape(collector)
    assert samples[("ikev2_vpn_user_received_bytes_total", user("alice"))] == 531
    assert samples[("ikev2_vpn_user_sent_packets_total", user("alice"))] == 10
    # alice disconnects: her traffic stays, her SA count drops to 0.
    charon.answer = [answer[0], answer[2]]
    samples = scrape(collector)
    assert samples[("ikev2_vpn_user_received_bytes_total", user("alice"))] == 531
    assert samples[("ikev2_vpn_received_bytes_total", ())] == 531
    assert samples[("ikev2_vpn_user_ike_sas", user("alice"))] == 0
    assert samples[("ikev2_vpn_connected_clients", ())] == 1


def test_a_new_sa_under_an_old_key_does_not_make_counters_go_back(
    charon: Charon, collector: metrics.VpnCollector
) -> None:
    scrape(collector)
    answer = copy.deepcopy(charon.answer)
    alice_child(answer, "1").update({"bytes-in": "10", "packets-in": "1"})
    charon.answer = answer
    samples = scrape(collector)
    assert samples[("ikev2_vpn_user_received_bytes_total", user("alice"))] == 441


def test_an_ike_rekey_neither_drops_the_client_nor_counts_traffic_twice(
    charon: Charon, collector: metrics.VpnCollector
) -> None:
    scrape(collector)
    answer = copy.deepcopy(charon.answer)
    old = answer[1]["ikev2-vpn"]
    new = copy.deepcopy(old)
    old["state"], new["state"], new["child-sas"] = "REKEYING", "CONNECTING", {}
    new.update({"uniqueid": "7", "initiator-spi": "1111111111111111"})
    charon.answer = [answer[0], {"ikev2-vpn": old}, {"ikev2-vpn": new}]
    assert scrape(collector)[("ikev2_vpn_user_ike_sas", user("alice"))] == 1
    # Done: the CHILD_SAs, counting on, belong to the new IKE_SA; the old one goes.
    new["state"], new["child-sas"] = "ESTABLISHED", old["child-sas"]
    alice_child(answer, "3").update({"bytes-in": "50", "packets-in": "1"})
    old["state"], old["child-sas"] = "REKEYED", {}
    charon.answer = [answer[0], {"ikev2-vpn": old}, {"ikev2-vpn": new}]
    samples = scrape(collector)
    assert samples[("ikev2_vpn_user_ike_sas", user("alice"))] == 1
    assert samples[("ikev2_vpn_connected_clients", ())] == 2
    assert samples[("ikev2_vpn_user_received_bytes_total", user("alice"))] == 431 + 50


def test_a_client_being_deleted_is_gone_but_its_last_traffic_counts(
    charon: Charon, collector: metrics.VpnCollector
) -> None:
    scrape(collector)
    answer = copy.deepcopy(charon.answer)
    answer[1]["ikev2-vpn"]["state"] = "DELETING"
    alice_child(answer, "3").update({"bytes-out": "70", "packets-out": "1"})
    charon.answer = answer
    samples = scrape(collector)
    assert samples[("ikev2_vpn_connected_clients", ())] == 1
    assert samples[("ikev2_vpn_user_ike_sas", user("alice"))] == 0
    assert samples[("ikev2_vpn_user_sent_bytes_total", user("alice"))] == 490 + 70


def test_counters_never_decrease_over_random_sa_churn(charon: Charon) -> None:
    """IKE rekeys, counters restarting, clients vanishing and coming back: every counter
    only grows."""
    base = captured()
    collector = metrics.VpnCollector(
        "kernel", connect=charon.connect, certificate_dates=lambda: None
    )
    previous: Samples = {}
    growth = 0
    for step in range(60):
        answer = copy.deepcopy(base)
        ike = answer[1]["ikev2-vpn"]
        ike["uniqueid"] = str(2 + step // 3)  # a new IKE_SA every third scrape
        ike["initiator-spi"] = f"{step // 3:016x}"
        for child in ike["child-sas"].values():
            child["bytes-in"] = str(int(child["bytes-in"]) + (step % 3) * 1000)
        charon.answer = answer if step % 7 else [answer[0]]
        samples = scrape(collector)
        for key, value in samples.items():
            if key[0].endswith("_total") and key in previous:
                assert value >= previous[key], (step, key)
        growth = int(samples[("ikev2_vpn_received_bytes_total", ())])
        previous = samples
    assert growth > 20 * 431


# --- charon down, failed logins ------------------------------------------------------------


def test_charon_down_is_reported_and_counters_survive_it(
    charon: Charon, collector: metrics.VpnCollector
) -> None:
    scrape(collector)
    charon.up = False
    samples = scrape(collector)
    assert samples[("ikev2_vpn_charon_up", ())] == 0
    assert ("ikev2_vpn_connected_clients", ()) not in samples  # unknown, not 0
    assert samples[("ikev2_vpn_received_bytes_total", ())] == 431
    charon.up = True
    samples = scrape(collector)
    assert samples[("ikev2_vpn_charon_up", ())] == 1
    assert samples[("ikev2_vpn_connected_clients", ())] == 2


def test_a_charon_that_does_not_answer_costs_a_scrape_the_timeout_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VICI socket that accepts and then never answers (a hung charon)."""
    path = tmp_path / "charon.vici"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    monkeypatch.setattr(vici_session, "SOCKET", path)
    monkeypatch.setattr(metrics, "VICI_TIMEOUT_S", 0.5)
    collector = metrics.VpnCollector(
        "userspace",
        connect=lambda: vici_session.connect(timeout=metrics.VICI_TIMEOUT_S),
        certificate_dates=lambda: None,
    )
    started = time.monotonic()
    samples = scrape(collector)
    assert time.monotonic() - started < 2.0
    assert samples[("ikev2_vpn_charon_up", ())] == 0
    listener.close()


def test_a_scrape_stuck_in_charon_does_not_hold_up_the_next_ones_for_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    charon = Charon(captured())

    def stuck() -> FakeSession:
        release.wait(10)
        return charon.connect()

    monkeypatch.setattr(metrics, "QUEUE_WAIT_S", 0.3)
    collector = metrics.VpnCollector("userspace", connect=stuck, certificate_dates=lambda: None)
    first = threading.Thread(target=scrape, args=(collector,))
    first.start()
    time.sleep(0.1)
    started = time.monotonic()
    samples = scrape(collector)
    assert time.monotonic() - started < 2.0
    assert samples[("ikev2_vpn_charon_up", ())] == 0
    release.set()
    first.join()
    assert scrape(collector)[("ikev2_vpn_charon_up", ())] == 1  # and then it answers again


def test_failed_logins_reported_by_the_login_watch_are_counted(
    collector: metrics.VpnCollector,
) -> None:
    guard = BanGuard(0, 600, run=lambda _command: None, on_failure=collector.login_failed)
    for sa, address in (("7", "203.0.113.7"), ("8", "203.0.113.8")):
        guard.handle({"ikesa-uniqueid": sa, "msg": f"{address} is initiating an IKE_SA"})
        guard.handle({"ikesa-uniqueid": sa, "msg": "received EAP identity 'bob'"})
        guard.handle({"ikesa-uniqueid": sa, "msg": "EAP-MS-CHAPv2 verification failed, retry (1)"})
    guard.handle({"ikesa-uniqueid": "9", "msg": "received EAP identity 'carol'"})  # no failure
    assert scrape(collector)[("ikev2_vpn_failed_logins_total", ())] == 2


# --- the HTTP endpoint and start-up --------------------------------------------------------


@pytest.fixture
def endpoint(collector: metrics.VpnCollector) -> Iterator[str]:
    port = free_port()
    server = metrics.serve(port, collector)
    yield f"http://127.0.0.1:{port}"
    server.close()


def test_the_endpoint_serves_metrics_at_its_path(endpoint: str) -> None:
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=5) as answer:  # noqa: S310
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = parse(answer.read().decode())
    assert samples[("ikev2_vpn_connected_clients", ())] == 2
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{endpoint}/", timeout=5)  # noqa: S310
    assert caught.value.code == 404


def test_a_slow_scrape_does_not_hold_up_another_connection(charon: Charon, endpoint: str) -> None:
    """A client that never sends its request (a port scanner) does not keep Prometheus
    from scraping."""
    port = int(endpoint.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port)),
        urllib.request.urlopen(f"{endpoint}/metrics", timeout=5) as answer,  # noqa: S310
    ):
        assert answer.status == 200


USERSPACE = BackendChoice(Backend.USERSPACE, "no ESP in this kernel", esp_gcm=True)


def settings_with(port: int | None) -> Settings:
    return Settings.model_validate({"metrics_port": port})


def test_start_without_the_setting_opens_no_port() -> None:
    assert start._start_metrics(settings_with(None), USERSPACE) is None


def test_a_port_in_use_is_one_error_line_and_the_vpn_starts_anyway(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as holder:
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with caplog.at_level(logging.INFO, logger="ikev2_vpn"):
            assert start._start_metrics(settings_with(port), USERSPACE) is None
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == [
        f"VPN_METRICS_PORT: cannot listen on TCP port {port} (Address already in use); the VPN "
        "runs without metrics, choose a free port"
    ]


def test_start_with_the_setting_serves_the_backend_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: list[metrics.VpnCollector] = []

    def serve(_port: int, collector: metrics.VpnCollector) -> None:
        served.append(collector)

    monkeypatch.setattr(metrics, "serve", serve)
    collector = start._start_metrics(settings_with(9814), USERSPACE)
    assert collector is not None and served == [collector]
    assert collector.backend == "userspace"


def test_scrapes_from_several_threads_agree(collector: metrics.VpnCollector) -> None:
    results: list[float] = []

    def one() -> None:
        results.append(scrape(collector)[("ikev2_vpn_received_bytes_total", ())])

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [431] * 8
