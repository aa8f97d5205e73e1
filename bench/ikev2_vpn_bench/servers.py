"""Starting the two servers under test the same way, and reading when each is ready.

Both run from the same image, with the same least-privilege options, on the lab's networks.
"ikev2-vpn" is the image as users run it; "bare" replaces its entrypoint with the
hand-configured strongSwan of :mod:`.bare`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from docker.models.containers import Container

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.server import Server, ServerSpec, start_server
from ikev2_vpn_lab.lab import Lab
from ikev2_vpn_lab.serverstate import parse_ike_sas

from . import bare

OURS = "ikev2-vpn"
BARE = "bare"
KINDS = (OURS, BARE)
OURS_READY = "ready: clients connect to"  # start.py logs it once charon has the configuration
READY_TIMEOUT_S = 60.0


def user_names(count: int) -> list[str]:
    return [f"bench-{index:03d}" for index in range(1, count + 1)]


@dataclass
class Started:
    """A server container that was just started, and how long it took to become ready."""

    kind: str
    server: Server
    ready_s: float  # from the container's start to its ready line
    healthy_s: float | None = None  # ikev2-vpn only: until Docker reports it healthy


def start(
    lab: Lab,
    kind: str,
    users: Sequence[str],
    password: str,
    *,
    name: str,
    volume: str | None = None,
    wait_healthy: bool = False,
) -> Started:
    """Start a server of ``kind`` knowing ``users`` (all with ``password``); wait until ready."""
    topology = lab.topology
    spec = ServerSpec(
        image=lab.image,
        name=lab.name(name),
        env={"VPN_HOST": bare.HOST},  # the bare server ignores it; the lab reads the identity
        volume=lab.volume(volume or lab.name(f"{name}-data")),
        networks=[topology.egress, topology.wan],
        labels=eng.labels(lab.run_id, "server"),
        restart=None,
    )
    if kind == OURS:
        users_file = "".join(f"{user}:{password}\n" for user in users).encode()
        spec = dataclasses.replace(spec, secret_files={"VPN_USERS_FILE": users_file})
    else:
        spec = dataclasses.replace(
            spec, files=bare.files(users, password), entrypoint=bare.ENTRYPOINT
        )
    server = start_server(lab.engine, spec)
    started = Started(kind, server, wait_ready(server, kind))
    if wait_healthy:
        started.healthy_s = wait_docker_healthy(server)
    return started


def restart(started: Started) -> float:
    """Stop the container and start it again (same volume); seconds until ready."""
    started.server.container.stop(timeout=10)
    started.server.container.start()
    started.ready_s = wait_ready(started.server, started.kind)
    return started.ready_s


def wait_ready(server: Server, kind: str, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Seconds from the container's (latest) start to its ready line, by Docker's clock."""
    marker = OURS_READY if kind == OURS else bare.READY_MARKER
    container = server.container
    began = started_at(container)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = line_time(container.logs(timestamps=True).decode(errors="replace"), marker, began)
        if seen is not None:
            return (seen - began).total_seconds()
        container.reload()
        if container.status not in {"created", "running"}:
            break
        time.sleep(0.05)
    raise HelperError(f"{container.name} did not log {marker!r}:\n{eng.log_tail(container, 15)}")


def wait_docker_healthy(server: Server, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Seconds from the container's start until Docker reports it healthy."""
    began = started_at(server.container)
    server.wait_healthy(timeout_s)
    return (datetime.now(UTC) - began).total_seconds()


def started_at(container: Container) -> datetime:
    container.reload()
    return docker_time(str(container.attrs["State"]["StartedAt"]))


def docker_time(text: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, as an aware datetime (microseconds)."""
    found = _DOCKER_TIME.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"not a Docker timestamp: {text!r}")
    fraction = (found.group(2) or "").ljust(6, "0")[:6]
    zone = "+00:00" if found.group(3) == "Z" else found.group(3)
    return datetime.fromisoformat(f"{found.group(1)}.{fraction}{zone}")


_DOCKER_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def line_time(timestamped_logs: str, marker: str, after: datetime) -> datetime | None:
    """When the first line holding ``marker`` was logged at or after ``after``."""
    for line in timestamped_logs.splitlines():
        stamp, _, text = line.partition(" ")
        if marker not in text:
            continue
        try:
            when = docker_time(stamp)
        except ValueError:
            continue
        if when >= after:
            return when
    return None


# --- what a server holds ---------------------------------------------------------------------

_RSS_SCRIPT = """
import json, os, re
found = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        continue
    name = re.search(r"^Name:\\s+(.*)$", status, re.M).group(1)
    rss = re.search(r"^VmRSS:\\s+(\\d+) kB", status, re.M)
    found[pid] = [name, int(rss.group(1)) if rss else 0]
print(json.dumps(found))
"""


@dataclass(frozen=True)
class Memory:
    charon_kib: int
    entrypoint_kib: int  # PID 1 when it is the ikev2-vpn entrypoint; 0 for the bare server
    all_kib: int  # every process in the container

    def as_dict(self) -> dict[str, int]:
        return {
            "charon_kib": self.charon_kib,
            "entrypoint_kib": self.entrypoint_kib,
            "all_kib": self.all_kib,
        }


def memory(server: Server, kind: str) -> Memory:
    """Resident memory of charon, the entrypoint and all processes (KiB)."""
    output = eng.run_checked(server.container, ["python3", "-c", _RSS_SCRIPT])
    return memory_from(json.loads(output), kind)


def memory_from(processes: dict[str, list[object]], kind: str) -> Memory:
    charon = sum(int(str(rss)) for name, rss in processes.values() if name == "charon")
    first = processes.get("1")
    entrypoint = int(str(first[1])) if first is not None and kind == OURS else 0
    return Memory(
        charon_kib=charon,
        entrypoint_kib=entrypoint,
        all_kib=sum(int(str(rss)) for _, rss in processes.values()),
    )


def established(server: Server) -> int:
    """Established IKE_SAs the server holds right now (total minus half-open)."""
    total, half_open = parse_ike_sas(eng.run_checked(server.container, ["swanctl", "--stats"]))
    # A new IKE_SA may count as half-open a moment before it is counted in the total.
    return max(total - half_open, 0)
