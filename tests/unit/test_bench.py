"""The benchmark's pure parts: statistics, parsing, the summary, README and chart output."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ikev2_vpn_bench import bare, chart, report, servers, vmlab
from ikev2_vpn_bench.measure import Plan, _count_at, parse_esp, parse_iperf
from ikev2_vpn_bench.servers import BARE, OURS
from ikev2_vpn_helper.vm.proof import ProofReport


def results(**changes: Any) -> dict[str, Any]:
    """A small but complete run, shaped like cli.run() returns it."""

    def server(first: float, connect: list[float], up: float, charon: int, entry: int) -> Any:
        return {
            "startup": {"first_ready_s": [first, first + 0.2], "restart_ready_s": [first / 2]},
            "memory_idle": {
                "charon_kib": charon,
                "entrypoint_kib": entry,
                "all_kib": charon + entry,
            },
            "connect": {"samples_ms": connect, "failed": 0, "errors": []},
            "throughput": {"default": {"esp": "AES_GCM_16-256", "up_mbps": up, "down_mbps": up}},
        }

    def burst(done: float | None, connected: int) -> Any:
        return {
            "server_ready_s": 1.0,
            "connected": connected,
            "failed": 200 - connected,
            "all_connected_s": done,
            "within_target": connected if done is not None and done <= 10 else 150,
            "timeline": [[0.0, 0], [5.0, 150], [done or 60.0, connected]],
            "memory": {"charon_kib": 20480, "entrypoint_kib": 0, "all_kib": 20480},
            "flood": {"sent": 1000, "rate": 400, "answers": {"cookie": 990, "ike_sa_init": 10}},
        }

    run = {
        "date": "2026-12-01T14:00:00+00:00",
        "machine": {"description": "2 cores, 24 GiB, userspace IPsec"},
        "plan": {"name": "full", "target_s": 10.0, "burst_timeout_s": 60.0},
        "servers": {
            OURS: server(1.0, [20.0, 22.0, 30.0], 300.0, 10240, 48000),
            BARE: server(0.25, [19.0, 21.0, 90.0], 270.0, 11000, 0),
        },
        "plain": {"up_mbps": 11000.0, "down_mbps": 12000.0},
        "bursts": [
            {
                "name": "200 users from 4 addresses",
                "addresses": 4,
                "clients": 200,
                "flood": True,
                OURS: burst(6.5, 200),
                BARE: burst(None, 190),
            }
        ],
    }
    run.update(changes)
    return run


def test_median_and_nearest_rank_p95() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert report.median(samples) == 50.5
    assert report.p95(samples) == 95.0
    assert report.p95([3.0]) == 3.0
    assert report.median([]) is None and report.p95([]) is None


def test_ratio_is_ours_over_bare_and_missing_when_either_is() -> None:
    assert report.Row("x", "s", 2.0, 4.0, "lower").ratio == 0.5
    assert report.Row("x", "s", None, 4.0, "lower").ratio is None
    assert report.Row("x", "s", 2.0, None, "lower").ratio is None
    assert report.Row("x", "s", 2.0, 0.0, "lower").ratio is None


def test_summary_compares_every_published_figure() -> None:
    rows = {row.figure: row for row in report.summary(results())}
    assert rows["Start to ready, first start"].ours == 1.1
    assert rows["Start to ready, first start"].bare == 0.35
    assert rows["Connect, p95"].bare == 90.0
    assert rows["200 users from 4 addresses: all connected after"].ratio is None  # bare never did
    assert rows["200 users from 4 addresses: not connected after 60 s"].bare == 10
    assert rows["200 users from 4 addresses: connected within 10 s"].ours == 200
    assert rows["200 users from 4 addresses: flood packets answered with a cookie"].ours == 99.0
    assert rows["Throughput through the tunnel, client to server"].ratio == 1.11
    assert rows["Memory at rest: charon"].ours == 10.0
    assert rows["Memory with 200 users from 4 addresses connected: charon"].bare == 20.0


def test_json_holds_the_figures_and_the_summary_with_ratios() -> None:
    document = json.loads(report.to_json(results()))
    assert document["servers"][OURS]["connect"]["samples_ms"] == [20.0, 22.0, 30.0]
    first = document["summary"][0]
    assert first["figure"] == "Start to ready, first start"
    assert first["ratio"] == pytest.approx(1.1 / 0.35, abs=0.01)


def test_readme_block_is_replaced_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# x\n\n## Benchmarks\n{report.README_START}\nold table\n{report.README_END}\n\n## Next\n"
    )
    block = report.markdown(results(), "bench/results/latest.png")
    report.update_readme(readme, block)
    text = readme.read_text()
    assert "old table" not in text
    assert text.count(report.README_START) == 1 and text.endswith("\n\n## Next\n")
    assert "Measured on 2026-12-01 on 2 cores, 24 GiB, userspace IPsec" in text
    assert "| Connect, median, ms | 22 | 21 | 1.05 |" in text
    assert "| no tunnel (plain network) | - | 1.1e+04 | 1.2e+04 |" not in text  # big: plain
    assert "| no tunnel (plain network) | - | 11000 | 12000 |" in text
    assert "![Benchmark chart](bench/results/latest.png)" in text


def test_readme_without_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# nothing to replace\n")
    with pytest.raises(ValueError, match="bench:start"):
        report.update_readme(readme, "x")


def test_chart_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    chart.draw(results(), path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 600


def test_docker_times_and_the_first_marked_line_after_start() -> None:
    began = servers.docker_time("2026-12-01T14:00:00.123456789Z")
    assert began == datetime(2026, 12, 1, 14, 0, 0, 123456, tzinfo=UTC)
    logs = (
        "2026-12-01T13:59:59.000000000Z [VPN] ready: clients connect to x (an earlier start)\n"
        "2026-12-01T14:00:00.500000000Z charon starting\n"
        "2026-12-01T14:00:01.250000000Z [VPN] ready: clients connect to vpn.bench.test\n"
    )
    seen = servers.line_time(logs, servers.OURS_READY, began)
    assert seen is not None and (seen - began).total_seconds() == pytest.approx(1.126544)
    assert servers.line_time(logs, bare.READY_MARKER, began) is None
    with pytest.raises(ValueError):
        servers.docker_time("yesterday")


def test_memory_counts_charon_the_entrypoint_and_everything() -> None:
    processes: dict[str, list[object]] = {
        "1": ["ikev2-vpn", 48000],
        "7": ["charon", 10000],
        "9": ["sh", 500],
    }
    ours = servers.memory_from(processes, OURS)
    assert (ours.charon_kib, ours.entrypoint_kib, ours.all_kib) == (10000, 48000, 58500)
    assert servers.memory_from(processes, BARE).entrypoint_kib == 0  # PID 1 is the shell


def test_iperf_and_esp_parsing() -> None:
    answer = {"end": {"sum_received": {"bits_per_second": 268_400_000.0}}}
    assert parse_iperf(json.dumps(answer)) == 268.4
    assert parse_iperf('{"error": "unable to connect"}') == "iperf3: unable to connect"
    assert parse_iperf("not json") == "iperf3 said: not json"
    listing = (
        "vpn: #1, ESTABLISHED, IKEv2 encr-alg=AES_GCM_16 encr-keysize=256 child-sas "
        "vpn: #2, INSTALLED, TUNNEL-in-UDP, encr-alg=AES_CBC encr-keysize=256 "
        "integ-alg=HMAC_SHA2_256_128"
    )
    assert parse_esp(listing) == "AES_CBC-256/HMAC_SHA2_256_128"


def test_count_at_reads_the_timeline_up_to_the_target() -> None:
    timeline: list[list[float]] = [[0.0, 0], [4.0, 120], [9.9, 199], [12.0, 200]]
    assert _count_at(timeline, 10.0) == 199
    assert _count_at(timeline, 20.0) == 200


def test_plans_size_the_users_for_the_largest_burst() -> None:
    assert Plan().users == 200
    assert Plan.quick().users == 10
    assert all(burst.clients <= Plan().users for burst in Plan().bursts)


def test_bare_server_gets_its_users_a_certificate_and_the_ca() -> None:
    placed = bare.files(["bench-001", "bench-002"], "pass word")
    assert placed[bare.USERS_PATH].decode().count("id = bench-") == 2
    assert f"secret = 0x{b'pass word'.hex()}" in placed[bare.USERS_PATH].decode()
    leaf = x509.load_pem_x509_certificate(placed[bare.CERT_PATH])
    ca = x509.load_pem_x509_certificate(placed["/data/ca.crt"])
    assert leaf.issuer == ca.subject
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert bare.HOST in names.get_values_for_type(x509.DNSName)
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert b"PRIVATE KEY" in placed[bare.KEY_PATH]
    conf = placed["/etc/swanctl/swanctl.conf"].decode()
    assert f"id = {bare.HOST}" in conf and "include conf.d/*.conf" in conf
    assert b"load = yes" in placed["/etc/strongswan.d/charon/kernel-libipsec.conf"]


def test_the_vm_lab_report_keeps_the_ratios(tmp_path: Path) -> None:
    proof = ProofReport(accel="tcg", accel_reason="test", kernel="6.12.0")
    proof.figures = {"ratio_up_kernel_over_userspace": 1.3, "kernel_up_mbit_s": 4.2}
    data = vmlab.results(proof, "2026-12-03T12:00:00+00:00")
    assert data["ratios"]["ratio_up_kernel_over_userspace"] == 1.3
    assert data["ratios"]["ratio_down_kernel_over_userspace"] is None
    assert data["ok"] is False  # no step proven
    lines = vmlab.summary(data)
    assert "TCP upload through the tunnel: kernel/userspace x1.30" in lines
    assert "connect time: not measured" in lines
    assert json.loads(vmlab.write(data, tmp_path).read_text())["figures"]["kernel_up_mbit_s"] == 4.2
