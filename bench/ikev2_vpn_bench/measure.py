"""The measurements. Each returns plain data (JSON-ready); :mod:`.report` compares them.

Every measurement runs the same steps against ikev2-vpn and the bare server, one server at
a time, so the two never compete for the machine's cores.
"""

from __future__ import annotations

import json
import re
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.vpnclient import SWANCTL_CONF, Target, VpnClient, create_tool_container
from ikev2_vpn_lab.flood import (
    IDLE,
    Attacker,
    FloodResult,
    established_count,
    render_burst_conf,
)
from ikev2_vpn_lab.lab import Lab

from . import servers
from .servers import BARE, KINDS, OURS

Log = Callable[[str], None]
IPERF_PORT = 5201


@dataclass(frozen=True)
class Burst:
    """``addresses`` client containers dial at once, each as ``per_address`` users."""

    name: str
    addresses: int
    per_address: int
    flood: bool = False  # IKE_SA_INIT flood from other addresses at the same time

    @property
    def clients(self) -> int:
        return self.addresses * self.per_address


@dataclass(frozen=True)
class Plan:
    """How much to measure. The defaults are the published run; ``quick()`` checks the
    machinery in about two minutes (the test suite runs it)."""

    starts: int = 3  # first starts (each with a new volume) and restarts per server
    connects: int = 30  # connect latency samples per server
    bursts: tuple[Burst, ...] = (
        Burst("200 users from 4 addresses", 4, 50),
        Burst("100 users behind 1 address", 1, 100),
        Burst("200 users from 4 addresses, flood from 4 others", 4, 50, flood=True),
    )
    burst_timeout_s: float = 60.0
    target_s: float = 10.0  # the goal: every burst connected within this
    flood_rate: float = 400.0  # IKE_SA_INITs per second, cookies ignored
    flood_addresses: int = 4
    iperf_seconds: int = 5
    iperf_runs: int = 3  # per direction; the median is the figure (one run varies by ~15 %)
    esp_variants: tuple[str, ...] = ("aes256gcm16", "aes256-sha256")
    parallel_streams: int = 4

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            starts=1,
            connects=3,
            bursts=(
                Burst("10 users from 2 addresses", 2, 5),
                Burst("10 users from 2 addresses, flood from 2 others", 2, 5, flood=True),
            ),
            burst_timeout_s=30.0,
            flood_addresses=2,
            iperf_seconds=1,
            iperf_runs=1,
            esp_variants=("aes256-sha256",),
            parallel_streams=2,
        )

    @property
    def users(self) -> int:
        return max(burst.clients for burst in self.bursts)


@dataclass
class Run:
    """What a measurement needs: the lab, the plan, the users and their password."""

    lab: Lab
    plan: Plan
    log: Log
    password: str = field(default_factory=lambda: secrets.token_urlsafe(15))

    @property
    def users(self) -> list[str]:
        return servers.user_names(self.plan.users)


# --- start-up, memory at rest, connect latency, throughput ---------------------------------


def server_figures(run: Run, kind: str, target: Target) -> dict[str, Any]:
    """Start-up, idle memory, connect latency and tunnel throughput of one server."""
    plan = run.plan
    first: list[float] = []
    healthy: list[float] = []
    started = _start_measured(run, kind, 1, first, healthy)
    for attempt in range(2, plan.starts + 1):
        started.server.remove()
        started = _start_measured(run, kind, attempt, first, healthy)
    restarts = []
    for _ in range(plan.starts):
        restarts.append(servers.restart(started))
        run.log(f"{kind}: restart ready after {restarts[-1]:.2f} s")
    if kind == OURS:
        servers.wait_docker_healthy(started.server)
    time.sleep(3.0)  # settle: the first health checks and log lines are done
    idle = servers.memory(started.server, kind)
    run.log(f"{kind}: idle memory {idle.as_dict()}")
    client = run.lab.start_client(started.server)
    figures: dict[str, Any] = {
        "startup": {"first_ready_s": first, "restart_ready_s": restarts},
        "memory_idle": idle.as_dict(),
        "connect": connect_latency(run, client, kind),
        "throughput": throughput(run, client, target, kind),
    }
    if healthy:
        figures["startup"]["first_healthy_s"] = healthy
    backend = _BACKEND.search(started.server.container.logs().decode(errors="replace"))
    if backend:
        figures["backend"] = backend.group(1)
    client.remove()
    started.server.remove()
    return figures


def _start_measured(
    run: Run, kind: str, attempt: int, first: list[float], healthy: list[float]
) -> servers.Started:
    """A first start (new volume) of a one-user server; its times go into the lists."""
    started = servers.start(
        run.lab,
        kind,
        run.users[:1],
        run.password,
        name=f"{kind}-start-{attempt}",
        wait_healthy=kind == OURS,
    )
    first.append(started.ready_s)
    if started.healthy_s is not None:
        healthy.append(started.healthy_s)
    run.log(f"{kind}: first start ready after {started.ready_s:.2f} s")
    return started


def connect_latency(run: Run, client: VpnClient, kind: str) -> dict[str, Any]:
    """Connect and disconnect ``plan.connects`` times; the probe times each connect."""
    user = run.users[0]
    samples: list[float] = []
    failures: list[str] = []
    for _ in range(run.plan.connects):
        result = client.connect(user, run.password)
        if result.connected and result.connect_ms is not None:
            samples.append(float(result.connect_ms))
            client.disconnect()
        else:
            failures.append(result.error or "not connected")
    run.log(f"{kind}: {len(samples)} connects, {len(failures)} failed")
    return {"samples_ms": samples, "failed": len(failures), "errors": failures[:3]}


def throughput(run: Run, client: VpnClient, target: Target, kind: str) -> dict[str, Any]:
    """iperf3 through the tunnel, both directions; for ikev2-vpn also ESP and stream
    variants (what could close the gap to the plain network)."""
    variants: list[tuple[str, str | None, int]] = [("default", None, 1)]
    if kind == OURS:
        variants += [(f"ESP {esp}", esp, 1) for esp in run.plan.esp_variants]
        variants.append((f"{run.plan.parallel_streams} streams", None, run.plan.parallel_streams))
    found: dict[str, Any] = {}
    for name, esp, streams in variants:
        result = client.connect(run.users[0], run.password, esp_proposals=esp)
        if not result.connected:
            found[name] = {"error": result.error or "not connected"}
            continue
        figures = {
            "esp": negotiated_esp(client),
            **both_ways(client.container, target.address, run.plan, streams),
        }
        client.disconnect()
        run.log(f"{kind} {name}: {figures}")
        found[name] = figures
    return found


def plain_throughput(run: Run, target: Target) -> dict[str, Any]:
    """The same iperf3 between two containers on the egress network, without a tunnel."""
    container = create_tool_container(
        run.lab.engine,
        run.lab.client_image or run.lab.image,
        run.lab.name("plain"),
        run.lab.topology.egress,
        entrypoint=IDLE,
        labels=eng.labels(run.lab.run_id, "client"),
    )
    container.start()
    try:
        figures = both_ways(container, target.address, run.plan, 1)
    finally:
        container.remove(force=True, v=True)
    run.log(f"plain network: {figures}")
    return figures


def start_iperf_server(target: Target) -> None:
    eng.run_checked(target.container, ["iperf3", "--server", "--daemon", "--port", str(IPERF_PORT)])


def iperf(
    container: Any, address: str, seconds: int, streams: int, *, reverse: bool = False
) -> float | str:
    """Mbit/s the receiver got in an iperf3 TCP test, or why there is no figure."""
    argv = ["iperf3", "--client", address, "--port", str(IPERF_PORT), "--json"]
    argv += ["--time", str(seconds), "--omit", "1", "--parallel", str(streams)]
    argv += ["--connect-timeout", "3000"]
    if reverse:
        argv.append("--reverse")
    result = eng.run_in(container, argv)
    return parse_iperf(result.stdout) or f"iperf3 failed: {result.stderr.strip()[-200:]}"


def parse_iperf(output: str) -> float | str:
    """Mbit/s from iperf3's JSON, or its error."""
    try:
        answer = json.loads(output)
    except ValueError:
        return f"iperf3 said: {output.strip()[-200:]}"
    try:
        return round(float(answer["end"]["sum_received"]["bits_per_second"]) / 1e6, 1)
    except (KeyError, TypeError, ValueError):
        return f"iperf3: {answer.get('error', 'no result')}"


def both_ways(container: Any, address: str, plan: Plan, streams: int) -> dict[str, Any]:
    """Client to server (up) and server to client (down), the median of ``plan.iperf_runs``
    runs each (every run is kept); None and the errors when no run gave a figure."""
    found: dict[str, Any] = {}
    errors = []
    for direction, reverse in (("up", False), ("down", True)):
        runs = []
        for _ in range(plan.iperf_runs):
            result = iperf(container, address, plan.iperf_seconds, streams, reverse=reverse)
            if isinstance(result, float):
                runs.append(result)
            else:
                errors.append(f"{direction}: {result}")
        found[f"{direction}_mbps"] = round(statistics.median(runs), 1) if runs else None
        found[f"{direction}_runs"] = runs
    if errors:
        found["errors"] = errors
    return found


_BACKEND = re.compile(r"IPsec backend: (\w+)")
_ESP_FIELDS = re.compile(r"\b(encr-alg|encr-keysize|integ-alg)=(\S+)")


def negotiated_esp(client: VpnClient) -> str:
    """The ESP algorithms of the client's CHILD_SA, e.g. ``AES_GCM_16-256``."""
    listing = eng.run_in(client.container, ["swanctl", "--list-sas", "--raw"]).stdout
    return parse_esp(listing)


def parse_esp(list_sas_raw: str) -> str:
    child = list_sas_raw.partition("child-sas")[2]
    fields = dict(_ESP_FIELDS.findall(child))
    parts = [fields.get("encr-alg", "?")]
    if "encr-keysize" in fields:
        parts[0] += f"-{fields['encr-keysize']}"
    if "integ-alg" in fields:
        parts.append(fields["integ-alg"])
    return "/".join(parts)


# --- bursts ----------------------------------------------------------------------------------


def burst(run: Run, kind: str, spec: Burst, index: int) -> dict[str, Any]:
    """``spec.clients`` users dial at once; how many got in, and how fast."""
    plan = run.plan
    users = run.users[: spec.clients]
    started = servers.start(run.lab, kind, users, run.password, name=f"{kind}-burst-{index}")
    server = started.server
    clients = [run.lab.start_client(server) for _ in range(spec.addresses)]
    for number, client in enumerate(clients):
        chunk = users[number * spec.per_address : (number + 1) * spec.per_address]
        conf = render_burst_conf(client.server_address, client.server_id, chunk, run.password)
        eng.put_files(client.container, [eng.FileSpec(SWANCTL_CONF, conf.encode(), 0o600)])
    attacker = flood_thread = None
    flood_box: list[FloodResult] = []
    if spec.flood:
        attacker, flood_thread = _start_flood(run, clients[0], index, kind, flood_box)
    timeline, seconds = _dial_all(server, clients, spec.clients, plan.burst_timeout_s)
    connected = sum(
        established_count(eng.run_in(c.container, ["swanctl", "--list-sas", "--noblock"]).stdout)
        for c in clients
    )
    memory = servers.memory(server, kind)
    result: dict[str, Any] = {
        "server_ready_s": started.ready_s,
        "connected": connected,
        "failed": spec.clients - connected,
        "all_connected_s": seconds,
        "within_target": _count_at(timeline, plan.target_s),
        "timeline": timeline,
        "memory": memory.as_dict(),
    }
    if flood_thread is not None and attacker is not None:
        flood_thread.join()
        if flood_box:
            result["flood"] = {
                "sent": flood_box[0].sent,
                "rate": round(flood_box[0].rate),
                "answers": flood_box[0].answers,
            }
        attacker.remove()
    run.log(
        f"{kind} {spec.name}: {connected}/{spec.clients} connected, all after "
        f"{'-' if seconds is None else f'{seconds:.1f} s'}, memory {memory.as_dict()}"
    )
    for client in clients:
        client.remove()
    server.remove()
    return result


def _start_flood(
    run: Run, near: VpnClient, index: int, kind: str, box: list[FloodResult]
) -> tuple[Attacker, threading.Thread]:
    attacker = Attacker.start(
        run.lab.engine,
        image=run.lab.client_image or run.lab.image,
        network=run.lab.topology.wan,
        server_address=near.server_address,
        name=run.lab.name(f"attacker-{kind}-{index}"),
        run_id=run.lab.run_id,
    )
    attacker.add_addresses(run.plan.flood_addresses - 1)
    duration = min(run.plan.burst_timeout_s, 3 * run.plan.target_s)

    def flood() -> None:
        box.append(attacker.flood(rate=run.plan.flood_rate, duration_s=duration))

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    time.sleep(1.0)  # the flood is under way when the users dial
    return attacker, thread


def _dial_all(
    server: Server, clients: Sequence[VpnClient], expected: int, timeout_s: float
) -> tuple[list[list[float]], float | None]:
    """Load every client's burst configuration at once (charon dials on load); sample the
    server's established IKE_SAs until all are in or the time is up."""
    gate = threading.Barrier(len(clients) + 1)

    def load(client: VpnClient) -> None:
        gate.wait()
        eng.run_in(client.container, ["swanctl", "--load-all", "--noprompt"])

    loaders = [threading.Thread(target=load, args=(c,), daemon=True) for c in clients]
    for thread in loaders:
        thread.start()
    gate.wait()
    began = time.monotonic()
    timeline: list[list[float]] = [[0.0, 0]]
    done: float | None = None
    while (now := time.monotonic() - began) < timeout_s:
        count = servers.established(server)
        timeline.append([round(now, 2), count])
        if count >= expected:
            done = round(now, 2)
            break
        time.sleep(0.25)
    for thread in loaders:
        thread.join(timeout=5)
    return timeline, done


def _count_at(timeline: Sequence[Sequence[float]], seconds: float) -> int:
    """Connected clients at ``seconds`` into the burst (last sample not after it)."""
    reached = [int(count) for at, count in timeline if at <= seconds]
    return max(reached, default=0)


def all_bursts(run: Run) -> list[dict[str, Any]]:
    results = []
    for index, spec in enumerate(run.plan.bursts, 1):
        entry: dict[str, Any] = {
            "name": spec.name,
            "addresses": spec.addresses,
            "clients": spec.clients,
            "flood": spec.flood,
        }
        for kind in KINDS:
            entry[kind] = burst(run, kind, spec, index)
        results.append(entry)
    return results


def all_servers(run: Run, target: Target) -> dict[str, Any]:
    return {kind: server_figures(run, kind, target) for kind in (OURS, BARE)}
