"""``vm check``: the kernel IPsec path, proven end to end inside the guest.

The guest runs Debian's stock kernel, where ESP is a module nobody has loaded yet. The
server is the repository's own ``compose.yaml`` with the image built from this checkout;
clients are strongSwan containers using the kernel's XFRM, on a network with MTU 1400
where the guest drops ICMP "fragmentation needed", dialling the guest's address through
Compose's published ports. Then the same with the userspace backend, for the ratios.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import docker
from docker.models.containers import Container
from docker.types import IPAMConfig, IPAMPool

from .. import engine as eng
from ..base import Log
from ..errors import HelperError
from ..image import build_text, repository_root
from ..vpnclient import Target, VpnClient
from . import machine
from .chain import long_chain
from .guest import GuestDisk

PROJECT = "ikev2vpn"
LAB_DIR = "/root/ikev2-vpn"
WAN = "vmlab-wan"
WAN_SUBNET = "198.18.10.0/24"
GUEST_ON_WAN = "198.18.10.1"  # the guest's own address on the client network: what clients dial
WAN_MTU = 1400
POOL = "10.10.10.0/24"
DNS = "198.18.0.53"
USER = "vmlab"
DOWNLOAD_BYTES = 20 * 1024 * 1024
IPERF_SECONDS = 5
HEALTH_TIMEOUT_S = 240.0
POOL_V6 = "fd00:10:10::/112"
# What a user adds next to compose.yaml for IPv6 (docs/ipv6.md) and for their own
# certificate files; here the chain of :func:`long_chain`.
IPV6_AND_CERTS_OVERRIDE = """\
services:
  vpn:
    sysctls:
      net.ipv6.conf.all.disable_ipv6: "0"
      net.ipv6.conf.all.forwarding: "1"
    volumes:
      - ./certs:/certs:ro
networks:
  default:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 198.19.200.0/24
        - subnet: 2001:db8:19::/64
"""

# Every step a passing check reports, in order (the e2e test asserts each one).
STEPS = (
    "esp4 not loaded at boot",
    "auto chose kernel IPsec",
    "the probe loaded esp4",
    "no TUN device in use",
    "kernel: client connects through the published ports",
    "kernel: address from the pool",
    "kernel: DNS pushed",
    "kernel: ESP SAs in the server's XFRM, in UDP",
    "kernel: the client uses kernel IPsec",
    "kernel: target sees the server's address (NAT)",
    f"kernel: 20 MB TCP download over MTU {WAN_MTU}, ICMP frag-needed dropped",
    *(
        f"{how}: {claim}"
        for how in ("compose restart", "compose down/up")
        for claim in ("CA unchanged", "no stale XFRM state or policy", "the client reconnects")
    ),
    "userspace: server chose userspace IPsec",
    "userspace: client connects through the published ports",
    "userspace: address from the pool",
    "userspace: DNS pushed",
    "userspace: target sees the server's address (NAT)",
    "kernel: IKE_AUTH with a long certificate chain, in IKE fragments",
    "kernel: IPv6 address from VPN_POOL_V6",
    "kernel: IPv6 target sees the server's IPv6 address (NAT66)",
)

TOOLS_DOCKERFILE = """\
ARG SERVER_IMAGE
FROM ${SERVER_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iperf3 \\
 && rm -rf /var/lib/apt/lists/*
"""
TOOLS_REPOSITORY = "ikev2-vpn-vmtools"
TOOLS_LABEL = "ikev2-vpn.vm.server-image"

# The guest drops every ICMP "fragmentation needed" (v4) and "packet too big" (v6) it would
# forward or send: path MTU discovery cannot help, MSS clamping has to.
PMTU_BLACKHOLE = """\
table inet vmlab_pmtu {
    chain forward {
        type filter hook forward priority -10; policy accept;
        icmp type destination-unreachable icmp code frag-needed drop
        icmpv6 type packet-too-big drop
    }
    chain output {
        type filter hook output priority -10; policy accept;
        icmp type destination-unreachable icmp code frag-needed drop
        icmpv6 type packet-too-big drop
    }
}
"""


@dataclass(frozen=True)
class Step:
    """One claim of the proof, whether it held, and what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass
class ProofReport:
    accel: str = ""
    accel_reason: str = ""
    kernel: str = ""
    steps: list[Step] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.steps) and all(step.ok for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def format_proof(report: ProofReport) -> str:
    lines = [f"guest kernel {report.kernel or '?'} under {report.accel} ({report.accel_reason})"]
    for step in report.steps:
        lines.append(f"{'ok  ' if step.ok else 'FAIL'} {step.name}: {step.detail}")
    if report.error:
        lines.append(f"FAIL stopped: {report.error}")
    for name, value in report.figures.items():
        lines.append(f"     {name} = {value}")
    lines.append("vm check: " + ("passed" if report.ok else "FAILED"))
    return "\n".join(lines)


def ensure_tools_image(host: docker.DockerClient, server_image: str, log: Log) -> str:
    """The server image plus iperf3 (clients and targets), reused while the server's is."""
    try:
        server_id = str(host.images.get(server_image).id)
    except docker.errors.ImageNotFound:
        raise HelperError(f"image {server_image} does not exist; build it first") from None
    tag = f"{TOOLS_REPOSITORY}:{server_id.removeprefix('sha256:')[:12]}"
    try:
        if (host.images.get(tag).labels or {}).get(TOOLS_LABEL) == server_id:
            return tag
    except docker.errors.ImageNotFound:
        pass
    log(f"vm: building {tag} (iperf3 on {server_image})")
    build_text(
        host,
        TOOLS_DOCKERFILE,
        tag=tag,
        buildargs={"SERVER_IMAGE": server_image},
        what="vm tools",
        log=log,
        labels={TOOLS_LABEL: server_id},
    )
    return tag


class Proof:
    """The steps of ``vm check`` against one running guest."""

    def __init__(
        self, running: machine.RunningGuest, server_image: str, tools_image: str, log: Log
    ) -> None:
        self.running = running
        self.engine = running.engine()
        self.server_image = server_image
        self.tools_image = tools_image
        self.log = log
        self.report = ProofReport(accel=running.accel, accel_reason=running.accel_reason)
        self.password = secrets.token_urlsafe(18)
        self.run_id = "vmcheck"

    # --- recording ---------------------------------------------------------------------------

    def step(self, name: str, ok: bool, detail: str) -> bool:
        self.report.steps.append(Step(name, ok, detail))
        self.log(f"vm check: {'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return ok

    def figure(self, name: str, value: float) -> None:
        self.report.figures[name] = round(value, 2)

    def guest(self, *argv: str, timeout_s: float = 600) -> machine.ExecResult:
        return machine.exec_in(self.running, argv, timeout_s=timeout_s)

    # --- the server through Compose ---------------------------------------------------------

    def write_project(
        self, backend: str | None, extra: dict[str, str] | None = None, override: str = ""
    ) -> None:
        compose = (repository_root() / "compose.yaml").read_bytes()
        settings = {
            "VPN_IMAGE": self.server_image,
            "VPN_HOST": GUEST_ON_WAN,
            "VPN_HOST_DETECT": "off",
            "VPN_USERS": f"{USER}:{self.password}",
            "VPN_DNS": DNS,
            "VPN_POOL_V4": POOL,
        }
        if backend is not None:
            settings["VPN_IPSEC_BACKEND"] = backend
        settings.update(extra or {})
        env = "".join(f"{name}={value}\n" for name, value in settings.items())
        machine.copy_in(self.running, compose, f"{LAB_DIR}/compose.yaml")
        machine.copy_in(self.running, env.encode(), f"{LAB_DIR}/.env", 0o600)
        # Compose merges compose.override.yaml by itself, as it would on a user's host.
        if override:
            machine.copy_in(self.running, override.encode(), f"{LAB_DIR}/compose.override.yaml")
        else:
            self.guest("rm", "-f", f"{LAB_DIR}/compose.override.yaml")

    def compose(self, *args: str) -> machine.ExecResult:
        return self.guest(
            "docker", "compose", "--project-directory", LAB_DIR, "-p", PROJECT, *args,
            timeout_s=HEALTH_TIMEOUT_S,
        )  # fmt: skip

    def server(self) -> Container:
        found = self.engine.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}
        )
        if not found:
            raise HelperError("Compose started no server container")
        return found[0]

    def wait_healthy(self) -> float:
        started = time.monotonic()
        deadline = started + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            server = self.server()
            server.reload()
            health = server.attrs["State"].get("Health", {}).get("Status")
            if health == "healthy":
                return time.monotonic() - started
            if server.status in {"exited", "dead"}:
                break
            time.sleep(1)
        tail = eng.log_tail(self.server(), 15, [self.password])
        raise HelperError(f"the server did not become healthy: {tail.strip()[-400:]}")

    def up(
        self, backend: str | None = None, extra: dict[str, str] | None = None, override: str = ""
    ) -> float:
        self.write_project(backend, extra, override)
        started = time.monotonic()
        result = self.compose("up", "-d", "--no-build")
        if result.rc != 0:
            raise HelperError(f"docker compose up failed: {result.err_line()}")
        self.wait_healthy()
        return time.monotonic() - started

    def server_log(self) -> str:
        return eng.redact(self.server().logs().decode(errors="replace"), [self.password])

    def server_netns(self, *argv: str) -> str:
        pid = str(self.server().attrs["State"]["Pid"])
        return machine.checked(self.running, ["nsenter", "-t", pid, "-n", *argv])

    def ca_fingerprint(self) -> str:
        return hashlib.sha256(eng.read_file(self.server(), "/data/ca.crt")).hexdigest()

    def egress_network(self) -> str:
        return f"{PROJECT}_default"

    # --- steps -------------------------------------------------------------------------------

    def run(self) -> ProofReport:
        self.report.kernel = machine.checked(self.running, ["uname", "-r"]).strip()
        self.figure_boot()
        self.guest("docker", "network", "rm", WAN)
        self.engine.networks.create(
            WAN,
            driver="bridge",
            options={"com.docker.network.driver.mtu": str(WAN_MTU)},
            ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=WAN_SUBNET, gateway=GUEST_ON_WAN)]),
        )
        machine.copy_in(self.running, PMTU_BLACKHOLE.encode(), f"{LAB_DIR}/pmtu.nft")
        machine.checked(self.running, ["nft", "-f", f"{LAB_DIR}/pmtu.nft"])
        self.kernel_backend()
        with self.client_and_target() as (client, target):
            connect_ms = self.connect_and_reach(client, target, "kernel")
            self.download(client, target, "kernel")
            kernel_rates = self.throughput(client, target)
            self.restart_and_reconnect(client, target)
        self.compose("down")
        self.userspace_backend(connect_ms, kernel_rates)
        self.ipv6_and_fragmentation()
        return self.report

    def figure_boot(self) -> None:
        for name, value in machine.timings(self.running).items():
            self.figure(name, value)

    def kernel_backend(self) -> None:
        before = self.guest("test", "-d", "/sys/module/esp4").rc == 0
        self.step("esp4 not loaded at boot", not before, "loaded" if before else "not loaded")
        up_s = self.up()
        self.figure("compose_up_healthy_s", up_s)
        chosen = re.search(r"IPsec backend: (\w+) \(([^)]*)\)", self.server_log())
        backend = chosen.group(1) if chosen else "?"
        self.step(
            "auto chose kernel IPsec",
            backend == "kernel",
            f"{backend} ({chosen.group(2)})" if chosen else "no backend line in the log",
        )
        after = self.guest("test", "-d", "/sys/module/esp4").rc == 0
        self.step("the probe loaded esp4", after, "loaded" if after else "still not loaded")
        links = self.server_netns("ip", "-o", "link", "show")
        self.step(
            "no TUN device in use", "ipsec0" not in links, "no ipsec0" if "ipsec0" not in links
            else "ipsec0 exists in the server",
        )  # fmt: skip

    @contextmanager
    def client_and_target(self, *, kernel_ipsec: bool = True) -> Iterator[tuple[VpnClient, Target]]:
        server = self.server()
        ca = eng.read_file(server, "/data/ca.crt")
        kind = "kernel" if kernel_ipsec else "userspace"
        target = Target.start(
            self.engine, image=self.tools_image, network=self.egress_network(),
            name=f"vmlab-target-{kind}", run_id=self.run_id,
        )  # fmt: skip
        try:
            target.container.exec_run(["iperf3", "--server", "--daemon"])
            client = VpnClient.start(
                self.engine, image=self.tools_image, network=WAN, server_address=GUEST_ON_WAN,
                server_id=GUEST_ON_WAN, ca_pem=ca, name=f"vmlab-client-{kind}",
                run_id=self.run_id, kernel_ipsec=kernel_ipsec,
            )  # fmt: skip
            try:
                yield client, target
            finally:
                client.remove()
        finally:
            target.remove()

    def connect_and_reach(self, client: VpnClient, target: Target, kind: str) -> float:
        result = client.connect(USER, self.password, timeout_s=60)
        if not self.step(
            f"{kind}: client connects through the published ports",
            result.connected,
            f"in {result.connect_ms} ms" if result.connected else str(result.error),
        ):
            raise HelperError("the client could not connect; the rest depends on it")
        vip = result.virtual_ip or ""
        self.step(f"{kind}: address from the pool", vip.startswith("10.10.10."), vip or "none")
        self.step(f"{kind}: DNS pushed", result.dns == [DNS], ", ".join(result.dns) or "none")
        if kind == "kernel":
            states = self.server_netns("ip", "xfrm", "state")
            esp = states.count("proto esp")
            self.step(
                "kernel: ESP SAs in the server's XFRM, in UDP",
                esp >= 2 and "espinudp" in states,
                f"{esp} ESP states" + (", UDP-encapsulated" if "espinudp" in states else ""),
            )
            client_states = eng.run_in(client.container, ["ip", "xfrm", "state"]).stdout
            client_links = eng.run_in(client.container, ["ip", "-o", "link"]).stdout
            self.step(
                "kernel: the client uses kernel IPsec",
                "proto esp" in client_states and "ipsec0" not in client_links,
                f"{client_states.count('proto esp')} ESP states in the client's XFRM, no ipsec0"
                if "ipsec0" not in client_links else "the client has ipsec0",
            )  # fmt: skip
        traffic = client.send_traffic(target)
        egress = eng.network_addresses(self.server()).get(self.egress_network(), "?")
        self.step(
            f"{kind}: target sees the server's address (NAT)",
            traffic.tcp_source == egress and traffic.icmp_received > 0,
            f"TCP from {traffic.tcp_source}, {traffic.icmp_received}/{traffic.icmp_sent} pings"
            f" (server {egress})" + (f"; {traffic.error}" if traffic.error else ""),
        )
        return float(result.connect_ms or 0.0)

    def iperf(self, client: VpnClient, target: Target, *args: str) -> dict[str, Any]:
        result = eng.run_in(
            client.container, ["iperf3", "--client", target.address, "--json", *args]
        )
        try:
            answer: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            return {"error": (result.stderr or result.stdout).strip()[-200:] or "no output"}
        return answer

    def download(self, client: VpnClient, target: Target, kind: str) -> None:
        started = time.monotonic()
        answer = self.iperf(client, target, "--reverse", "--bytes", str(DOWNLOAD_BYTES))
        seconds = time.monotonic() - started
        received = int(answer.get("end", {}).get("sum_received", {}).get("bytes", 0))
        mss = answer.get("start", {}).get("tcp_mss_default")
        self.step(
            f"{kind}: 20 MB TCP download over MTU {WAN_MTU}, ICMP frag-needed dropped",
            received >= DOWNLOAD_BYTES and "error" not in answer,
            f"{received / 1e6:.1f} MB in {seconds:.1f} s (MSS {mss})"
            + (f"; {answer['error']}" if "error" in answer else ""),
        )

    def throughput(self, client: VpnClient, target: Target) -> dict[str, float]:
        rates = {}
        for direction, extra in (("up", ()), ("down", ("--reverse",))):
            answer = self.iperf(client, target, "--time", str(IPERF_SECONDS), *extra)
            bits = answer.get("end", {}).get("sum_received", {}).get("bits_per_second", 0.0)
            rates[direction] = float(bits) / 1e6
        return rates

    def xfrm_leftovers(self) -> tuple[int, int]:
        """ESP states, and policies with a template (a connection's), in the server."""
        states = self.server_netns("ip", "xfrm", "state").count("proto esp")
        policies = self.server_netns("ip", "xfrm", "policy").count("tmpl ")
        return states, policies

    def restart_and_reconnect(self, client: VpnClient, target: Target) -> None:
        ca = self.ca_fingerprint()
        for how, commands in (
            ("compose restart", [("restart",)]),
            ("compose down/up", [("down",), ("up", "-d", "--no-build")]),
        ):
            for command in commands:
                result = self.compose(*command)
                if result.rc != 0:
                    raise HelperError(f"docker compose {command[0]} failed: {result.err_line()}")
            self.wait_healthy()
            self.step(f"{how}: CA unchanged", self.ca_fingerprint() == ca, ca[:16])
            states, policies = self.xfrm_leftovers()
            self.step(
                f"{how}: no stale XFRM state or policy",
                states == 0 and policies == 0,
                f"{states} ESP states, {policies} connection policies",
            )
            again = client.connect(USER, self.password, timeout_s=60)
            traffic = client.send_traffic(target) if again.connected else None
            self.step(
                f"{how}: the client reconnects",
                again.connected and traffic is not None and traffic.icmp_received > 0,
                f"in {again.connect_ms} ms, {traffic.icmp_received} pings answered"
                if traffic else str(again.error),
            )  # fmt: skip

    def userspace_backend(self, kernel_connect_ms: float, kernel: dict[str, float]) -> None:
        self.up("userspace")
        chosen = re.search(r"IPsec backend: (\w+)", self.server_log())
        self.step(
            "userspace: server chose userspace IPsec",
            chosen is not None and chosen.group(1) == "userspace",
            chosen.group(1) if chosen else "no backend line",
        )
        with self.client_and_target(kernel_ipsec=False) as (client, target):
            connect_ms = self.connect_and_reach(client, target, "userspace")
            userspace = self.throughput(client, target)
        self.compose("down")
        for direction in ("up", "down"):
            self.figure(f"kernel_{direction}_mbit_s", kernel[direction])
            self.figure(f"userspace_{direction}_mbit_s", userspace[direction])
            if userspace[direction] > 0:
                self.figure(
                    f"ratio_{direction}_kernel_over_userspace",
                    kernel[direction] / userspace[direction],
                )
        self.figure("kernel_connect_ms", kernel_connect_ms)
        self.figure("userspace_connect_ms", connect_ms)
        if connect_ms > 0:
            self.figure("ratio_connect_kernel_over_userspace", kernel_connect_ms / connect_ms)

    def ipv6_and_fragmentation(self) -> None:
        """Kernel IPsec again, with VPN_POOL_V6 and a certificate chain that IKE_AUTH
        can carry over the MTU 1400 link only in fragments."""
        files = long_chain(GUEST_ON_WAN)
        machine.copy_in(self.running, files.fullchain_pem, f"{LAB_DIR}/certs/fullchain.pem")
        machine.copy_in(self.running, files.key_pem, f"{LAB_DIR}/certs/privkey.pem", 0o600)
        self.up(
            extra={"VPN_POOL_V6": POOL_V6, "VPN_CERT": "files"},
            override=IPV6_AND_CERTS_OVERRIDE,
        )
        target = Target.start(
            self.engine, image=self.tools_image, network=self.egress_network(),
            name="vmlab-target-ipv6", run_id=self.run_id, ipv6_only=True,
        )  # fmt: skip
        try:
            client = VpnClient.start(
                self.engine, image=self.tools_image, network=WAN, server_address=GUEST_ON_WAN,
                server_id=GUEST_ON_WAN, ca_pem=files.root_pem, name="vmlab-client-ipv6",
                run_id=self.run_id, kernel_ipsec=True, ipv6=True,
            )  # fmt: skip
            try:
                self.ipv6_steps(client, target)
            finally:
                client.remove()
        finally:
            target.remove()
        self.compose("down")

    def ipv6_steps(self, client: VpnClient, target: Target) -> None:
        result = client.connect(USER, self.password, timeout_s=90, ipv6=True)
        log = "\n".join(result.log) + "\n" + self.server_log()
        fragments = re.search(r"reassembled fragmented IKE message \((\d+) bytes\)", log)
        self.step(
            "kernel: IKE_AUTH with a long certificate chain, in IKE fragments",
            result.connected and fragments is not None,
            (f"connected; a {fragments.group(1)}-byte IKE message reassembled"
             if fragments else "no fragmented IKE message seen")
            if result.connected else str(result.error),
        )  # fmt: skip
        if not result.connected:
            return
        v6 = result.virtual_ip_v6 or ""
        self.step(
            "kernel: IPv6 address from VPN_POOL_V6", v6.startswith("fd00:10:10::"), v6 or "none"
        )
        traffic = client.send_traffic(target)
        egress = eng.network_addresses_v6(self.server()).get(self.egress_network(), "?")
        self.step(
            "kernel: IPv6 target sees the server's IPv6 address (NAT66)",
            traffic.tcp_source == egress and traffic.icmp_received > 0,
            f"TCP from {traffic.tcp_source}, {traffic.icmp_received}/{traffic.icmp_sent} pings"
            f" (server {egress})" + (f"; {traffic.error}" if traffic.error else ""),
        )


def run_proof(
    guest: GuestDisk,
    host: docker.DockerClient,
    *,
    server_image: str,
    name: str = "check",
    accel: str | None = None,
    keep: bool = False,
    log: Log = print,
) -> ProofReport:
    """Boot a fresh guest, load the images, run every step, stop the guest."""
    started = time.monotonic()
    tools = ensure_tools_image(host, server_image, log)
    running = machine.start(
        guest, name=name, images=[server_image, tools], host_engine=host, accel=accel, log=log
    )
    proof = Proof(running, server_image, tools, log)
    try:
        proof.run()
    except (HelperError, docker.errors.DockerException) as error:
        proof.report.error = str(error)
    finally:
        if not keep:
            machine.stop(running)
    proof.report.figures["check_total_s"] = round(time.monotonic() - started, 1)
    return proof.report
