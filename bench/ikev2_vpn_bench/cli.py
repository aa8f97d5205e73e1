"""``python -m ikev2_vpn_bench`` (what ``bench/run`` runs after building the image)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.vm.guest import build_guest
from ikev2_vpn_helper.vm.proof import run_proof
from ikev2_vpn_helper.vpnclient import Target
from ikev2_vpn_lab.images import ensure_bench_image
from ikev2_vpn_lab.lab import Lab

from . import chart, measure, report, vmlab
from .servers import OURS

BENCH_DIR = Path(__file__).resolve().parents[1]
DEFAULT_OUT = BENCH_DIR / "results"
BENCH_DOC = BENCH_DIR.parent / "docs" / "development.md"  # holds the bench:start/end block
CHART_NAME = "latest.png"
JSON_NAME = "latest.json"
STRONGSWAN_VERSION = ["dpkg-query", "--show", "--showformat=${Version}", "strongswan-charon"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark ikev2-vpn against a bare strongSwan server in one run: "
        "start-up, connect latency, bursts, throughput, memory.",
    )
    parser.add_argument("--image", default="ikev2-vpn:bench", help="the server image")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: checks the machinery in ~3 minutes"
    )
    parser.add_argument("--out", type=Path, default=None, help=f"default: {DEFAULT_OUT}")
    parser.add_argument(
        "--vm",
        action="store_true",
        help="instead: kernel vs userspace IPsec in the VM lab, as ratios (docs/vm-lab.md)",
    )
    parser.add_argument(
        "--no-readme",
        action="store_true",
        help="do not rewrite the benchmark table in docs/development.md",
    )
    args = parser.parse_args(argv)
    plan = measure.Plan.quick() if args.quick else measure.Plan()
    out = args.out or DEFAULT_OUT
    if args.vm:
        return run_vm(args.image, out)
    try:
        results = run(args.image, plan, "quick" if args.quick else "full")
    except HelperError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    write(results, out, readme=None if (args.no_readme or args.quick) else BENCH_DOC)
    for row in report.summary(results):
        ratio = "" if row.ratio is None else f"  (x{row.ratio:.2f})"
        print(f"{row.figure}: {row.ours} vs {row.bare} {row.unit}{ratio}")
    print(f"bench: wrote {out / JSON_NAME} and {out / CHART_NAME}")
    return 0


def run_vm(image: str, out: Path) -> int:
    """``vm check`` in a fresh guest; its ratios go to ``out``/vm.json."""
    try:
        guest = build_guest(log=print)
        proof = run_proof(guest, eng.connect_engine(), server_image=image, name="bench", log=print)
    except HelperError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    data = vmlab.results(proof, datetime.now(UTC).isoformat(timespec="seconds"))
    for line in vmlab.summary(data):
        print(line)
    print(f"bench: wrote {vmlab.write(data, out)}")
    return 0 if proof.ok else 1


def run(image: str, plan: measure.Plan, plan_name: str, log: Any = print) -> dict[str, Any]:
    """Every measurement of ``plan``; the lab is removed afterwards, whatever happens."""
    engine = eng.connect_engine()
    # Before the lab's networks exist: the build downloads iperf3 from Debian's mirror.
    bench_image = ensure_bench_image(engine, image, log)
    began = time.monotonic()
    with Lab(engine, image=image, client_image=bench_image, log=log) as lab:
        target = Target.start(
            engine,
            image=bench_image,
            network=lab.topology.egress,
            name=lab.name("target"),
            run_id=lab.run_id,
        )
        measure.start_iperf_server(target)
        bench = measure.Run(lab, plan, log)
        servers = measure.all_servers(bench, target)
        plain = measure.plain_throughput(bench, target)
        bursts = measure.all_bursts(bench)
        strongswan = eng.run_checked(target.container, STRONGSWAN_VERSION).strip()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(engine.version().get("Version", "?"), strongswan, servers),
        "plan": {"name": plan_name, **dataclasses.asdict(plan)},
        "seconds": round(time.monotonic() - began),
        "servers": servers,
        "plain": plain,
        "bursts": bursts,
    }


def machine(docker_version: str, strongswan: str, servers: dict[str, Any]) -> dict[str, Any]:
    cores = os.cpu_count() or 0
    memory_gib = _memory_gib()
    backend = servers[OURS].get("backend", "?")
    version = strongswan
    return {
        "cores": cores,
        "memory_gib": memory_gib,
        "kernel": platform.release(),
        "docker": docker_version,
        "strongswan": version,
        "backend": backend,
        "description": (
            f"{cores} cores, {memory_gib:.0f} GiB, Linux {platform.release()}, "
            f"Docker {docker_version}, strongSwan {version}, {backend} IPsec"
        ),
    }


def _memory_gib() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) / 1024**2 if found else 0.0


def write(results: dict[str, Any], out: Path, readme: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_NAME).write_text(report.to_json(results), encoding="utf-8")
    chart.draw(results, out / CHART_NAME)
    if readme is not None:
        relative = os.path.relpath(out / CHART_NAME, readme.parent)
        report.update_readme(readme, report.markdown(results, relative))
