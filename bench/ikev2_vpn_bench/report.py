"""Turning a run's figures into the summary (every figure with its ratio to the bare
server), the JSON file, the chart and the table in docs/development.md."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .servers import BARE, OURS

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


@dataclass(frozen=True)
class Row:
    """One compared figure. ``ratio`` is ikev2-vpn / bare (None when either is missing)."""

    figure: str
    unit: str
    ours: float | None
    bare: float | None
    better: str  # "lower" or "higher"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.bare is None or self.bare == 0:
            return None
        return round(self.ours / self.bare, 2)


def median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def p95(values: Sequence[float]) -> float | None:
    """Nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[math.ceil(0.95 * len(ordered)) - 1], 3)


def _mib(kib: float | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def summary(results: dict[str, Any]) -> list[Row]:
    """The figures docs/development.md shows, in order."""
    ours, bare = results["servers"][OURS], results["servers"][BARE]
    rows = [
        Row(
            "Start to ready, first start",
            "s",
            median(ours["startup"]["first_ready_s"]),
            median(bare["startup"]["first_ready_s"]),
            "lower",
            "ikev2-vpn makes its CA, certificate and profiles; bare loads prepared files",
        ),
        Row(
            "Start to ready, restart",
            "s",
            median(ours["startup"]["restart_ready_s"]),
            median(bare["startup"]["restart_ready_s"]),
            "lower",
        ),
        Row(
            "Start to Docker 'healthy', first start",
            "s",
            median(ours["startup"].get("first_healthy_s", [])),
            None,
            "lower",
            "the first health check runs 3 s after start",
        ),
        Row(
            "Connect, median",
            "ms",
            median(ours["connect"]["samples_ms"]),
            median(bare["connect"]["samples_ms"]),
            "lower",
        ),
        Row(
            "Connect, p95",
            "ms",
            p95(ours["connect"]["samples_ms"]),
            p95(bare["connect"]["samples_ms"]),
            "lower",
        ),
    ]
    target = results["plan"]["target_s"]
    timeout = results["plan"]["burst_timeout_s"]
    for entry in results["bursts"]:
        a, b = entry[OURS], entry[BARE]
        rows += [
            Row(
                f"{entry['name']}: all connected after",
                "s",
                a["all_connected_s"],
                b["all_connected_s"],
                "lower",
                f"blank: not all within {timeout:.0f} s",
            ),
            Row(
                f"{entry['name']}: connected within {target:.0f} s",
                "clients",
                a["within_target"],
                b["within_target"],
                "higher",
                f"of {entry['clients']}",
            ),
            Row(
                f"{entry['name']}: not connected after {timeout:.0f} s",
                "clients",
                a["failed"],
                b["failed"],
                "lower",
            ),
        ]
        if entry["flood"]:
            rows.append(
                Row(
                    f"{entry['name']}: flood packets answered with a cookie",
                    "%",
                    _cookie_share(a.get("flood")),
                    _cookie_share(b.get("flood")),
                    "higher",
                )
            )
    up = ours["throughput"]["default"]
    bare_up = bare["throughput"]["default"]
    rows += [
        Row(
            "Throughput through the tunnel, client to server",
            "Mbit/s",
            up.get("up_mbps"),
            bare_up.get("up_mbps"),
            "higher",
            f"ESP {up.get('esp', '?')} / {bare_up.get('esp', '?')}",
        ),
        Row(
            "Throughput through the tunnel, server to client",
            "Mbit/s",
            up.get("down_mbps"),
            bare_up.get("down_mbps"),
            "higher",
        ),
        Row(
            "Memory at rest: charon",
            "MiB",
            _mib(ours["memory_idle"]["charon_kib"]),
            _mib(bare["memory_idle"]["charon_kib"]),
            "lower",
        ),
        Row(
            "Memory at rest: all processes",
            "MiB",
            _mib(ours["memory_idle"]["all_kib"]),
            _mib(bare["memory_idle"]["all_kib"]),
            "lower",
            f"the entrypoint: {_mib(ours['memory_idle']['entrypoint_kib'])} MiB",
        ),
    ]
    if results["bursts"]:
        first = results["bursts"][0]
        a, b = first[OURS], first[BARE]
        rows += [
            Row(
                f"Memory with {first['name']} connected: charon",
                "MiB",
                _mib(a["memory"]["charon_kib"]),
                _mib(b["memory"]["charon_kib"]),
                "lower",
                f"connected: {a['connected']} / {b['connected']}",
            ),
            Row(
                f"Memory with {first['name']} connected: all processes",
                "MiB",
                _mib(a["memory"]["all_kib"]),
                _mib(b["memory"]["all_kib"]),
                "lower",
            ),
        ]
    return rows


def _cookie_share(flood: dict[str, Any] | None) -> float | None:
    if not flood or not flood.get("sent"):
        return None
    cookies = int(flood.get("answers", {}).get("cookie", 0))  # ike_flood.py's names
    return round(100.0 * cookies / int(flood["sent"]), 1)


def variant_rows(results: dict[str, Any]) -> list[tuple[str, str, float | None, float | None]]:
    """(variant, ESP, up, down) for ikev2-vpn's throughput variants, then the plain network."""
    found = [
        (name, str(v.get("esp", v.get("error", "?"))), v.get("up_mbps"), v.get("down_mbps"))
        for name, v in results["servers"][OURS]["throughput"].items()
    ]
    plain = results["plain"]
    found.append(("no tunnel (plain network)", "-", plain.get("up_mbps"), plain.get("down_mbps")))
    return found


# --- output ----------------------------------------------------------------------------------


def to_json(results: dict[str, Any]) -> str:
    document = dict(results)
    document["summary"] = [{**asdict(row), "ratio": row.ratio} for row in summary(results)]
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def _cell(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:g}" if isinstance(value, int) or value >= 100 else f"{value:.3g}"


def markdown(results: dict[str, Any], chart: str) -> str:
    """The docs/development.md block: where the figures come from, the table, the chart."""
    machine = results["machine"]
    lines = [
        README_START,
        f"Measured on {results['date'][:10]} on {machine['description']} "
        f"(`bench/run`, {results['plan']['name']} plan).",
        "",
        "| Figure | ikev2-vpn | bare strongSwan | ikev2-vpn / bare |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in summary(results):
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}"
        note = f" ({row.note})" if row.note else ""
        lines.append(
            f"| {row.figure}, {row.unit}{note} | {_cell(row.ours)} | {_cell(row.bare)} | {ratio} |"
        )
    lines += [
        "",
        "Throughput of ikev2-vpn by ESP proposal and number of TCP streams, and of the "
        "plain container network (iperf3, Mbit/s):",
        "",
        "| Variant | ESP | Client to server | Server to client |",
        "| --- | --- | ---: | ---: |",
    ]
    for name, esp, up, down in variant_rows(results):
        lines.append(f"| {name} | {esp} | {_cell(up)} | {_cell(down)} |")
    lines += ["", f"![Benchmark chart]({chart})", README_END]
    return "\n".join(lines)


def update_readme(readme: Path, block: str) -> None:
    """Replace the text between the markers (inclusive) with ``block``."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    readme.write_text(text[:start] + block + text[end + len(README_END) :], encoding="utf-8")
