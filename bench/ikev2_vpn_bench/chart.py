"""The PNG chart of a run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from .report import median, p95
from .servers import BARE, OURS

matplotlib.use("Agg")  # files only, no display

COLOURS = {OURS: "#1f77b4", BARE: "#ff7f0e", "plain": "#7f7f7f"}
LABELS = {OURS: "ikev2-vpn", BARE: "bare strongSwan", "plain": "no tunnel"}


def _bars(axes: Axes, groups: list[str], series: dict[str, list[float | None]], unit: str) -> None:
    width = 0.8 / max(len(series), 1)
    for number, (kind, values) in enumerate(series.items()):
        offset = (number - (len(series) - 1) / 2) * width
        positions = [index + offset for index in range(len(groups))]
        heights = [value or 0.0 for value in values]
        label, colour = LABELS.get(kind, kind), COLOURS.get(kind)
        bars = axes.bar(positions, heights, width, label=label, color=colour)
        for bar, value in zip(bars, values, strict=True):
            text = "n/a" if value is None else f"{value:.3g}"
            axes.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    axes.set_xticks(range(len(groups)), groups, fontsize=8)
    axes.set_ylabel(unit)
    axes.legend(fontsize=7)


def draw(results: dict[str, Any], path: Path) -> None:
    servers = results["servers"]
    figure, grid = plt.subplots(2, 3, figsize=(15, 8.5))
    title = f"ikev2-vpn vs bare strongSwan, {results['date'][:10]}"
    figure.suptitle(f"{title}, {results['machine']['description']}", fontsize=10)

    axes = grid[0][0]
    axes.set_title("Start to ready", fontsize=10)
    _bars(
        axes,
        ["first start", "restart"],
        {
            kind: [
                median(servers[kind]["startup"]["first_ready_s"]),
                median(servers[kind]["startup"]["restart_ready_s"]),
            ]
            for kind in (OURS, BARE)
        },
        "seconds (median)",
    )

    axes = grid[0][1]
    axes.set_title("Connect latency, one client", fontsize=10)
    _bars(
        axes,
        ["median", "p95"],
        {
            kind: [
                median(servers[kind]["connect"]["samples_ms"]),
                p95(servers[kind]["connect"]["samples_ms"]),
            ]
            for kind in (OURS, BARE)
        },
        "milliseconds",
    )

    axes = grid[0][2]
    axes.set_title("Bursts: clients connected over time", fontsize=10)
    styles = ["-", "--", ":"]
    for number, entry in enumerate(results["bursts"]):
        for kind in (OURS, BARE):
            timeline = entry[kind]["timeline"]
            axes.plot(
                [point[0] for point in timeline],
                [point[1] for point in timeline],
                styles[number % len(styles)],
                color=COLOURS[kind],
                label=f"{LABELS[kind]}: {entry['name']}",
            )
    axes.axvline(results["plan"]["target_s"], color="green", linewidth=0.8)
    axes.set_xlabel("seconds after the users dialled", fontsize=8)
    axes.set_ylabel("established IKE_SAs")
    axes.legend(fontsize=6)

    axes = grid[1][0]
    axes.set_title("Throughput (iperf3, TCP)", fontsize=10)
    plain = results["plain"]
    _bars(
        axes,
        ["client to server", "server to client"],
        {
            **{
                kind: [
                    servers[kind]["throughput"]["default"].get("up_mbps"),
                    servers[kind]["throughput"]["default"].get("down_mbps"),
                ]
                for kind in (OURS, BARE)
            },
            "plain": [plain.get("up_mbps"), plain.get("down_mbps")],
        },
        "Mbit/s (log)",
    )
    axes.set_yscale("log")

    axes = grid[1][1]
    axes.set_title("ikev2-vpn throughput by variant", fontsize=10)
    variants = servers[OURS]["throughput"]
    names = list(variants)
    _bars(
        axes,
        [name.replace("ESP ", "ESP\n") for name in names],
        {
            "client to server": [variants[name].get("up_mbps") for name in names],
            "server to client": [variants[name].get("down_mbps") for name in names],
        },
        "Mbit/s",
    )

    axes = grid[1][2]
    axes.set_title("Resident memory", fontsize=10)
    groups = ["charon at rest", "all at rest"]
    series: dict[str, list[float | None]] = {
        kind: [
            servers[kind]["memory_idle"]["charon_kib"] / 1024,
            servers[kind]["memory_idle"]["all_kib"] / 1024,
        ]
        for kind in (OURS, BARE)
    }
    if results["bursts"]:
        first = results["bursts"][0]
        groups += [f"charon, {first['clients']} clients", f"all, {first['clients']} clients"]
        for kind in (OURS, BARE):
            series[kind] += [
                first[kind]["memory"]["charon_kib"] / 1024,
                first[kind]["memory"]["all_kib"] / 1024,
            ]
    _bars(axes, groups, series, "MiB")

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
