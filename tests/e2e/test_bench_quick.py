"""``bench/run --quick``: the benchmark machinery works end to end against both servers.

No speed is asserted (benchmarks print figures; noise never fails a test run). What is
asserted is what makes the published figures meaningful: the bare strongSwan server really
serves clients, every measurement produced its figures for both servers, bursts connected
every user, the flood met cookies, and the JSON, chart and README table are written.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ikev2_vpn_bench import cli, report
from ikev2_vpn_bench.measure import Plan
from ikev2_vpn_bench.servers import BARE, KINDS, OURS


@pytest.fixture(scope="module")
def quick(image: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    results = cli.run(image, Plan.quick(), "quick")
    out = tmp_path_factory.mktemp("bench")
    readme = out / "README.md"
    readme.write_text(f"# x\n{report.README_START}\n{report.README_END}\n")
    cli.write(results, out, readme)
    return results, out, readme


def test_both_servers_start_and_serve_every_connect(quick: Any) -> None:
    results, _, _ = quick
    plan = Plan.quick()
    for kind in KINDS:
        figures = results["servers"][kind]
        assert len(figures["startup"]["first_ready_s"]) == plan.starts
        assert len(figures["startup"]["restart_ready_s"]) == plan.starts
        assert all(0 < seconds < 60 for seconds in figures["startup"]["first_ready_s"])
        assert figures["connect"]["failed"] == 0, figures["connect"]["errors"]
        assert len(figures["connect"]["samples_ms"]) == plan.connects
        assert figures["memory_idle"]["charon_kib"] > 1024
    assert results["servers"][OURS]["memory_idle"]["entrypoint_kib"] > 1024
    assert results["servers"][BARE]["memory_idle"]["entrypoint_kib"] == 0
    assert results["servers"][OURS]["backend"] == "userspace"
    assert results["servers"][OURS]["startup"]["first_healthy_s"]


def test_throughput_is_measured_through_each_tunnel_and_without_one(quick: Any) -> None:
    results, _, _ = quick
    for kind in KINDS:
        default = results["servers"][kind]["throughput"]["default"]
        assert default["up_mbps"] and default["down_mbps"], default
        assert default["esp"].startswith("AES_")
    variant = results["servers"][OURS]["throughput"]["ESP aes256-sha256"]
    assert variant["esp"] == "AES_CBC-256/HMAC_SHA2_256_128"  # the client's choice was used
    assert results["plain"]["up_mbps"] > 0 and results["plain"]["down_mbps"] > 0


def test_bursts_connect_every_user_on_both_servers_and_the_flood_meets_cookies(
    quick: Any,
) -> None:
    results, _, _ = quick
    for entry in results["bursts"]:
        for kind in KINDS:
            outcome = entry[kind]
            assert outcome["connected"] == entry["clients"], (kind, entry["name"], outcome)
            assert outcome["all_connected_s"] is not None
            assert outcome["memory"]["charon_kib"] > 1024
            if entry["flood"]:
                assert outcome["flood"]["answers"].get("cookie", 0) > 0, outcome["flood"]


def test_json_chart_and_readme_table_are_written(quick: Any) -> None:
    results, out, readme = quick
    document = json.loads((out / cli.JSON_NAME).read_text())
    assert document["plan"]["name"] == "quick"
    assert document["machine"]["strongswan"].startswith("6.")
    ratios = {row["figure"]: row["ratio"] for row in document["summary"]}
    assert ratios["Connect, median"] is not None and ratios["Connect, median"] > 0
    assert (out / cli.CHART_NAME).read_bytes()[:4] == b"\x89PNG"
    text = readme.read_text()
    assert "| Start to ready, first start, s" in text
    assert f"![Benchmark chart]({cli.CHART_NAME})" in text
    assert results["date"][:10] in text
