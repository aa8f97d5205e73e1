"""A strongSwan road-warrior client in a container, and the target it sends traffic to.

Both run the server's image with its entrypoint replaced: the client runs charon with the
configuration rendered from the templates in ``client/``; the target runs a tiny service
that reports the source address of whatever reaches it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import docker
import jinja2
from docker.errors import APIError, ImageNotFound
from docker.models.containers import Container
from pydantic import SecretStr

from ikev2_vpn.defaults import CHARON
from ikev2_vpn.state.users import nt_hash

from . import engine as eng
from .errors import HelperError

CONNECTION = "vpn"
TOOLS_DIR = "/usr/local/lib/ikev2-vpn-check"
PROBE = f"{TOOLS_DIR}/probe.py"
TARGET_SERVICE = f"{TOOLS_DIR}/target_service.py"
CA_FILE = "/etc/swanctl/x509ca/server-ca.pem"
SWANCTL_CONF = "/etc/swanctl/swanctl.conf"
SECRET_CONF = "/etc/swanctl/conf.d/secret.conf"  # noqa: S105 - a path
TARGET_PORT = 8080
CONNECT_TIMEOUT_S = 20
READY_TIMEOUT_S = 15.0

# Only what a Linux EAP-MSCHAPv2 road warrior needs. No revocation/curl: the client must not
# fetch anything, and nothing here resolves names.
CHARON_PLUGINS = (
    *("random", "nonce", "openssl", "pem", "pkcs1", "pkcs8", "x509", "constraints", "pubkey"),
    *("kernel-libipsec", "kernel-netlink", "socket-default", "vici"),
    *("eap-identity", "eap-mschapv2", "resolve"),
)
SWANCTL_PLUGINS = ("random", "openssl", "pem", "pkcs1", "pkcs8", "x509", "pubkey")
DISABLED_HEALTHCHECK = {"test": ["NONE"]}  # the image's check is about the server

_BARE_VALUE = re.compile(r"[A-Za-z0-9._@+:/=%-]+")


def swanctl_value(text: str) -> str:
    """``text`` as one swanctl.conf value: bare when safe, else quoted with escapes."""
    if not text or any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise HelperError("a user name must be non-empty and free of control characters")
    if _BARE_VALUE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PROPOSALS = re.compile(r"[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*")


def proposal_list(text: str | None) -> str | None:
    """A strongSwan proposal list (``aes256-sha256-modp2048,aes128-sha1-modp1024``)."""
    if text is None:
        return None
    compact = ",".join(part.strip() for part in text.split(","))
    if not _PROPOSALS.fullmatch(compact):
        raise HelperError(
            f"{text!r} is not a proposal list; write algorithms joined by '-', "
            "proposals separated by ','"
        )
    return compact


def traffic_selectors(networks: Sequence[str]) -> tuple[str, ...]:
    """CIDR networks for the client's ``remote_ts`` (what it tunnels), as strongSwan
    writes them."""
    selectors = []
    for text in networks:
        try:
            selectors.append(str(ipaddress.ip_network(text.strip())))
        except ValueError:
            raise HelperError(f"{text!r} is not a network in CIDR notation") from None
    return tuple(selectors)


def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: resources.files(__package__).joinpath("client", name).read_text("utf-8")
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - configuration text, not HTML
    )
    environment.filters["swanctl_value"] = swanctl_value
    return environment


def client_script(name: str) -> bytes:
    return resources.files(__package__).joinpath("client", name).read_bytes()


@dataclass(frozen=True)
class ClientProfile:
    """What a user types into a VPN client, plus optional proposals to replay a platform.

    ``persistent``: an always-on connection that charon dials itself as soon as it is
    loaded, retries forever and redials when the server stops answering for
    ``dpd_delay_s`` seconds plus the retransmits (see :class:`Retransmit`).
    """

    server_address: str
    server_id: str
    user: str
    ike_proposals: str | None = None
    esp_proposals: str | None = None
    persistent: bool = False
    dpd_delay_s: int = 2
    ipv6: bool = False  # also ask for an IPv6 address and tunnel ::/0
    # What the client proposes to tunnel (and routes, once the server narrowed it); ():
    # everything, as a full-tunnel client does.
    remote_ts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Retransmit:
    """charon's retransmit timers: a request is sent ``tries + 1`` times, the n-th wait
    being ``timeout_s * base ** n``; after the last wait the peer counts as gone."""

    tries: int
    timeout_s: float
    base: float

    def give_up_after_s(self) -> float:
        return sum(self.timeout_s * self.base**n for n in range(self.tries + 1))


STRONGSWAN_RETRANSMIT = Retransmit(tries=5, timeout_s=4.0, base=1.8)  # charon's defaults


def client_plugins(*, kernel_ipsec: bool = False) -> tuple[str, ...]:
    """charon's plugins; ``kernel_ipsec``: ESP in the kernel's XFRM instead of libipsec."""
    if kernel_ipsec:
        return tuple(plugin for plugin in CHARON_PLUGINS if plugin != "kernel-libipsec")
    return CHARON_PLUGINS


def render_strongswan_conf(
    log_level: int = 1,
    threads: int = 16,
    retransmit: Retransmit | None = None,
    *,
    kernel_ipsec: bool = False,
) -> str:
    return (
        _templates()
        .get_template("strongswan.conf.j2")
        .render(
            plugins=client_plugins(kernel_ipsec=kernel_ipsec),
            kernel_ipsec=kernel_ipsec,
            swanctl_plugins=SWANCTL_PLUGINS,
            log_level=log_level,
            threads=threads,
            retransmit=retransmit,
        )
    )


def render_swanctl_conf(profile: ClientProfile) -> str:
    return (
        _templates()
        .get_template("swanctl.conf.j2")
        .render(
            connection=CONNECTION,
            server_address=swanctl_value(profile.server_address),
            server_id=swanctl_value(profile.server_id),
            user=swanctl_value(profile.user),
            ike_proposals=profile.ike_proposals,
            esp_proposals=profile.esp_proposals,
            persistent=profile.persistent,
            dpd_delay=profile.dpd_delay_s,
            ipv6=profile.ipv6,
            remote_ts=profile.remote_ts,
        )
    )


def render_secret_conf(user: str, password: str, *, plain: bool = False) -> str:
    """The client's secret: the NT hash by default (what Windows and Apple derive from any
    Unicode password), or with ``plain`` the password itself, from which strongSwan derives
    the hash on its own (the same thing for ASCII passwords)."""
    if not password:
        raise HelperError("the password is empty")
    return (
        _templates()
        .get_template("secret.conf.j2")
        .render(
            connection=CONNECTION,
            user=swanctl_value(user),
            kind="eap" if plain else "ntlm",
            secret=(password.encode() if plain else nt_hash(SecretStr(password))).hex(),
        )
    )


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectResult:
    """One connection attempt, as a user would see it."""

    connected: bool
    virtual_ip: str | None = None  # the IPv4 one, when there is one
    dns: list[str] = field(default_factory=list)
    connect_ms: float | None = None
    error: str | None = None
    log: list[str] = field(default_factory=list)
    virtual_ip_v6: str | None = None

    @classmethod
    def from_probe(cls, answer: dict[str, Any]) -> ConnectResult:
        vips = [str(ip) for ip in answer.get("virtual_ips", [])]
        v4 = [ip for ip in vips if ipaddress.ip_address(ip).version == 4]
        v6 = [ip for ip in vips if ipaddress.ip_address(ip).version == 6]
        return cls(
            connected=bool(answer.get("connected")),
            virtual_ip=next(iter(v4 or vips), None),
            virtual_ip_v6=next(iter(v6), None),
            dns=[str(server) for server in answer.get("dns", [])],
            connect_ms=answer.get("connect_ms"),
            error=answer.get("error"),
            log=[str(line) for line in answer.get("log", [])],
        )


@dataclass(frozen=True)
class TrafficResult:
    """What the target saw of the client's traffic through the tunnel."""

    target: str
    tcp_source: str | None
    icmp_sent: int
    icmp_received: int
    icmp_sources: list[str]
    error: str | None = None

    @classmethod
    def from_probe(cls, answer: dict[str, Any]) -> TrafficResult:
        ping = answer.get("ping", {})
        errors = [text for text in (ping.get("error"), answer.get("tcp_error")) if text]
        return cls(
            target=str(answer.get("target")),
            tcp_source=answer.get("tcp_source"),
            icmp_sent=int(ping.get("sent", 0)),
            icmp_received=int(ping.get("received", 0)),
            icmp_sources=[str(source) for source in answer.get("icmp_sources", [])],
            error="; ".join(errors) or None,
        )


@dataclass(frozen=True)
class CycleResult:
    """A run of connect/disconnect cycles inside one client container."""

    done: int
    failed: int
    seconds: float
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_probe(cls, answer: dict[str, Any]) -> CycleResult:
        return cls(
            done=int(answer.get("done", 0)),
            failed=int(answer.get("failed", 0)),
            seconds=float(answer.get("seconds", 0.0)),
            errors=[str(error) for error in answer.get("errors", [])],
        )


_ESTABLISHED = re.compile(r"\bstate=ESTABLISHED\b")
_INSTALLED = re.compile(r"\bstate=INSTALLED\b")
_LOCAL_VIPS = re.compile(r"local-vips=\[([^\]]*)\]")


def parse_tunnel(list_sas_raw: str) -> str | None:
    """The virtual IP of an established IKE_SA with an installed CHILD_SA in
    ``swanctl --list-sas --raw`` output; None when there is no such tunnel."""
    for line in list_sas_raw.splitlines():
        vips = _LOCAL_VIPS.search(line)
        if _ESTABLISHED.search(line) and _INSTALLED.search(line) and vips and vips.group(1):
            return vips.group(1).split()[0]
    return None


# --- containers ------------------------------------------------------------------------------


def create_tool_container(
    engine: docker.DockerClient, image: str, name: str, network: str, **options: Any
) -> Container:
    """A created (not started) container of ``image`` for a client-side tool: no health
    check, no volume; ``options`` go to the engine (entrypoint, labels, capabilities)."""
    try:
        return engine.containers.create(
            image,
            name=name,
            network=network,
            healthcheck=DISABLED_HEALTHCHECK,
            # The image declares VOLUME /data: a tmpfs there leaves no anonymous volume behind.
            tmpfs={"/data": "size=1m"},
            detach=True,
            **options,
        )
    except ImageNotFound:
        raise HelperError(f"image {image} does not exist") from None
    except APIError as error:
        raise HelperError(f"cannot create container {name}: {error.explanation}") from None


def address_on(container: Container, network: str, *, ipv6: bool = False) -> str:
    """The container's address on ``network``; fails clearly when it has none."""
    container.reload()
    found = eng.network_addresses_v6 if ipv6 else eng.network_addresses
    address = found(container).get(network)
    if not address:
        family = "IPv6" if ipv6 else "IPv4"
        raise HelperError(f"container {container.name} got no {family} address on {network}")
    return address


class Target:
    """A container on the server's egress network that reports who reached it."""

    def __init__(self, container: Container, address: str, port: int) -> None:
        self.container = container
        self.address = address
        self.port = port

    @classmethod
    def start(
        cls,
        engine: docker.DockerClient,
        *,
        image: str,
        network: str,
        name: str,
        run_id: str | None,
        port: int = TARGET_PORT,
        cap_add: Sequence[str] = (),  # NET_ADMIN: for tests that add addresses to it
        ipv6_only: bool = False,
    ) -> Target:
        """With ``ipv6_only`` the target loses its IPv4 address and answers at its IPv6
        address on ``network`` only (Docker networks always have IPv4)."""
        if ipv6_only:
            cap_add = [*cap_add, "NET_ADMIN"]
        container = create_tool_container(
            engine,
            image,
            name,
            network,
            entrypoint=["python3", "-u", TARGET_SERVICE, "--port", str(port)],
            labels=eng.labels(run_id, "target"),
            cap_add=list(cap_add),
        )
        eng.put_files(container, [eng.FileSpec(TARGET_SERVICE, client_script("target_service.py"))])
        container.start()
        _wait_for(lambda: b"listening" in container.logs(), container, "target service")
        if ipv6_only:
            eng.run_checked(container, ["ip", "-4", "address", "flush", "scope", "global"])
            return cls(container, address_on(container, network, ipv6=True), port)
        return cls(container, address_on(container, network), port)

    @classmethod
    def serve_in(cls, container: Container, address: str, port: int = TARGET_PORT) -> Target:
        """The target service started inside a running container that has other work (a
        server, a client), answering at ``address``: for checking what else VPN clients
        can reach. It runs until the container stops."""
        eng.put_files(container, [eng.FileSpec(TARGET_SERVICE, client_script("target_service.py"))])
        container.exec_run(["python3", "-u", TARGET_SERVICE, "--port", str(port)], detach=True)
        target = cls(container, address, port)
        report = ["python3", TARGET_SERVICE, "--port", str(port), "--report"]
        _wait_for(lambda: eng.run_in(container, report).exit_code == 0, container, "target service")
        return target

    def report(self) -> dict[str, Any]:
        """What the target saw since its last report, asked from inside its container."""
        result = eng.run_in(
            self.container, ["python3", TARGET_SERVICE, "--port", str(self.port), "--report"]
        )
        try:
            answer: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            return {}
        return answer

    def remove(self) -> None:
        self.container.remove(force=True, v=True)


class VpnClient:
    """A strongSwan client container that trusts the server's CA and can dial it."""

    def __init__(
        self, container: Container, server_address: str, server_id: str, address: str
    ) -> None:
        self.container = container
        self.server_address = server_address
        self.server_id = server_id
        self.address = address  # its own address on the network it shares with the server
        self._hide: list[str] = []

    @property
    def name(self) -> str:
        return str(self.container.name)

    @classmethod
    def start(
        cls,
        engine: docker.DockerClient,
        *,
        image: str,
        network: str,
        server_address: str,
        server_id: str,
        ca_pem: bytes,
        name: str,
        run_id: str | None,
        log_level: int = 1,
        retransmit: Retransmit | None = None,
        ipv6: bool = False,
        kernel_ipsec: bool = False,
    ) -> VpnClient:
        """``ipv6``: IPv6 on for the client's ipsec0 too (Docker turns it off for
        interfaces made later), so it can use an IPv6 virtual address. ``kernel_ipsec``: ESP
        in the kernel's XFRM, as on a laptop (needs a kernel with ESP; no TUN device)."""
        container = create_tool_container(
            engine,
            image,
            name,
            network,
            entrypoint=[str(CHARON)],
            cap_add=["NET_ADMIN"],
            devices=[] if kernel_ipsec else ["/dev/net/tun:/dev/net/tun:rwm"],
            labels=eng.labels(run_id, "client"),
            **({"sysctls": {"net.ipv6.conf.all.disable_ipv6": "0"}} if ipv6 else {}),
        )
        eng.put_files(
            container,
            [
                eng.FileSpec(
                    "/etc/strongswan.conf",
                    render_strongswan_conf(
                        log_level, retransmit=retransmit, kernel_ipsec=kernel_ipsec
                    ).encode(),
                ),
                eng.FileSpec(CA_FILE, ca_pem),
                eng.FileSpec(PROBE, client_script("probe.py")),
            ],
        )
        container.start()
        _wait_for(
            lambda: eng.run_in(container, ["swanctl", "--stats"]).exit_code == 0,
            container,
            "charon",
        )
        return cls(container, server_address, server_id, address_on(container, network))

    def connect(
        self,
        user: str,
        password: str,
        *,
        timeout_s: int = CONNECT_TIMEOUT_S,
        ike_proposals: str | None = None,
        esp_proposals: str | None = None,
        plain_secret: bool = False,
        server_id: str | None = None,
        ipv6: bool = False,
        remote_ts: Sequence[str] = (),
    ) -> ConnectResult:
        """Dial the server as ``user``; the result says what a user would have seen.

        ``ike_proposals``/``esp_proposals``: proposals to offer, in order, separated by
        commas (None: strongSwan's defaults). ``server_id``: the identity to expect from the
        server this time, e.g. the one a profile names (None: the client's ``server_id``).
        ``ipv6``: ask for an IPv6 address as well and send IPv6 through the tunnel.
        ``remote_ts``: the networks to propose tunnelling, as a device configured with
        routes does (empty: everything, narrowed by the server to what it tunnels).
        """
        profile = ClientProfile(
            self.server_address,
            server_id or self.server_id,
            user,
            proposal_list(ike_proposals),
            proposal_list(esp_proposals),
            ipv6=ipv6,
            remote_ts=traffic_selectors(remote_ts),
        )
        self._hide.append(password)
        eng.put_files(
            self.container,
            [
                eng.FileSpec(SWANCTL_CONF, render_swanctl_conf(profile).encode()),
                eng.FileSpec(
                    SECRET_CONF,
                    render_secret_conf(user, password, plain=plain_secret).encode(),
                    0o600,
                ),
            ],
        )
        answer = self._probe(["connect", "--timeout", str(timeout_s)])
        return ConnectResult.from_probe(answer)

    def disconnect(self) -> bool:
        return bool(self._probe(["disconnect"]).get("disconnected"))

    def keep_connected(self, user: str, password: str, *, dpd_delay_s: int = 2) -> None:
        """Load an always-on connection (``ClientProfile.persistent``): charon dials it
        now and keeps redialling on its own. :meth:`tunnel` tells when it is up."""
        profile = ClientProfile(
            self.server_address, self.server_id, user, persistent=True, dpd_delay_s=dpd_delay_s
        )
        self._put_configuration(profile, password)
        loaded = eng.run_in(self.container, ["swanctl", "--load-all", "--noprompt"])
        eng.run_in(self.container, ["rm", "-f", SECRET_CONF])  # charon has it in memory
        if loaded.exit_code != 0:
            detail = eng.redact((loaded.stderr or loaded.stdout).strip(), self._hide)
            raise HelperError(f"cannot load the connection in {self.name}: {detail}")

    def tunnel(self) -> str | None:
        """The virtual IP while a tunnel is up (IKE_SA established, CHILD_SA installed)."""
        listed = eng.run_in(self.container, ["swanctl", "--list-sas", "--raw"])
        return parse_tunnel(listed.stdout) if listed.exit_code == 0 else None

    def run_cycles(
        self, user: str, password: str, count: int, *, timeout_s: int = CONNECT_TIMEOUT_S
    ) -> CycleResult:
        """Connect and disconnect ``count`` times as ``user`` in one exec (a soak)."""
        self._put_configuration(ClientProfile(self.server_address, self.server_id, user), password)
        answer = self._probe(["cycles", "--count", str(count), "--timeout", str(timeout_s)])
        return CycleResult.from_probe(answer)

    def _put_configuration(self, profile: ClientProfile, password: str) -> None:
        self._hide.append(password)
        eng.put_files(
            self.container,
            [
                eng.FileSpec(SWANCTL_CONF, render_swanctl_conf(profile).encode()),
                eng.FileSpec(
                    SECRET_CONF, render_secret_conf(profile.user, password).encode(), 0o600
                ),
            ],
        )

    def rekey(self, *, ike: bool = False) -> bool:
        """Rekey the tunnel's CHILD_SA (with ``ike``: its IKE_SA) now, with the proposals it
        connected with (as a device does when the SA's lifetime runs out); True when the
        server agreed."""
        kind = "--ike" if ike else "--child"
        result = eng.run_in(self.container, ["swanctl", "--rekey", kind, CONNECTION])
        return result.exit_code == 0 and "completed successfully" in result.stdout

    def send_traffic(
        self, target: Target, count: int = 3, timeout_s: float = 3.0, size: int = 15
    ) -> TrafficResult:
        """Ping the target ``count`` times with ``size`` bytes of payload each, then ask it
        over TCP which source addresses it saw."""
        answer = self._probe(
            [
                "traffic",
                "--target",
                target.address,
                "--port",
                str(target.port),
                "--count",
                str(count),
                "--timeout",
                str(timeout_s),
                "--size",
                str(size),
            ]
        )
        return TrafficResult.from_probe(answer)

    def logs(self, lines: int = 60) -> str:
        return eng.log_tail(self.container, lines, self._hide)

    def remove(self) -> None:
        self.container.remove(force=True, v=True)

    def _probe(self, args: list[str]) -> dict[str, Any]:
        result = eng.run_in(self.container, ["python3", PROBE, *args])
        try:
            answer: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            detail = eng.redact((result.stderr or result.stdout).strip(), self._hide)
            raise HelperError(
                f"the probe in {self.name} failed ({args[0]}): "
                f"{detail.splitlines()[-1] if detail else result.exit_code}"
            ) from None
        return answer


def _wait_for(ready: Callable[[], bool], container: Container, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        container.reload()
        if container.status not in {"created", "running"}:
            break
        if ready():
            return
        time.sleep(0.2)
    tail = eng.log_tail(container, 10).strip().splitlines()
    raise HelperError(
        f"{what} in container {container.name} did not start" + (f": {tail[-1]}" if tail else "")
    )
