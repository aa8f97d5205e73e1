"""The server container: start it with least privilege, wait for health, read what it offers."""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import Container

# Facts about the server image come from the container package itself (pure data).
from ikev2_vpn.defaults import (
    CA_CERT_NAME,
    CONNECTION_NAME,
    DATA_DIR,
    POOL_V4,
    SYSCTLS,
    SYSCTLS_V6,
)

from . import engine as eng
from .errors import HelperError
from .image import DEFAULT_IMAGE

DEFAULT_NAME = "ikev2-vpn"
CA_PATH = str(DATA_DIR / CA_CERT_NAME)
SECRETS_DIR = "/run/secrets/ikev2-vpn"
HEALTH_TIMEOUT_S = 90.0
# What the server needs and nothing more (no --privileged): docs/development.md, "Facts
# measured in the lab".
CAPABILITIES = ("NET_ADMIN",)
DEVICES = ("/dev/net/tun:/dev/net/tun:rwm",)


@dataclass(frozen=True)
class Privileges:
    """What the kernel lets the server do. The defaults are what it needs under Docker; a
    Kubernetes pod spec translates to its own (see the test lab's
    :mod:`ikev2_vpn_lab.kubernetes`)."""

    cap_add: Sequence[str] = CAPABILITIES
    cap_drop: Sequence[str] = ()
    sysctls: Mapping[str, str] = field(default_factory=lambda: dict(SYSCTLS))
    devices: Sequence[str] = DEVICES
    security_opt: Sequence[str] = ()


@dataclass(frozen=True)
class ServerSpec:
    """How to start a server container.

    ``secret_files`` maps a ``*_FILE`` setting to the file's content: the file is copied
    into the container before it starts and the setting points at it, so the secret is in
    neither the container's environment nor any command line. ``networks``: the first one
    is attached at creation, the rest before start (the engine, not the order, picks the
    default route; :meth:`Server.egress` tells which it picked). ``aliases``: DNS names the
    server answers to on a network (by network name), for peers that must find it by name,
    such as an ACME server validating HTTP-01.
    """

    image: str = DEFAULT_IMAGE
    name: str = DEFAULT_NAME
    env: Mapping[str, str] = field(default_factory=dict)
    secret_files: Mapping[str, bytes] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)  # path -> content, e.g. certificates
    volume: str | None = None  # named volume on /data; None: "<name>-data"
    networks: Sequence[str] = ()
    aliases: Mapping[str, Sequence[str]] = field(default_factory=dict)
    publish: bool = False  # UDP 500 and 4500 on the host
    restart: str | None = "unless-stopped"
    labels: Mapping[str, str] = field(default_factory=dict)
    # Another program instead of the image's entrypoint (a hand-configured charon for
    # benchmarks); its health check is then off, since the image's one asks the entrypoint.
    entrypoint: Sequence[str] | None = None
    privileges: Privileges = field(default_factory=Privileges)
    sysctls: Mapping[str, str] = field(default_factory=dict)  # beyond the privileges' ones
    # A fixed IPv6 address per network (not the first: it is attached at creation), for a
    # VPN_HOST that is the server's IPv6 address.
    ipv6_addresses: Mapping[str, str] = field(default_factory=dict)

    def volume_name(self) -> str:
        return self.volume or f"{self.name}-data"

    def secret_path(self, setting: str) -> str:
        return f"{SECRETS_DIR}/{setting.removesuffix('_FILE').lower()}"

    def hidden_values(self) -> list[str]:
        """Passwords to mask in anything shown: in the settings, in ``secret_files``, and in
        ``files`` that a ``*_FILE`` setting points at (a pod's Secret volume, as
        the test lab's :mod:`ikev2_vpn_lab.kubernetes` mounts it)."""
        pointed_at = {
            setting: self.files[path]
            for setting, path in self.env.items()
            if setting.endswith("_FILE") and path in self.files
        }
        return secret_values(self.env, {**pointed_at, **self.secret_files})

    def environment(self) -> dict[str, str]:
        env = dict(self.env)
        for setting in self.secret_files:
            if not setting.endswith("_FILE"):
                raise ValueError(f"secret_files keys are *_FILE settings, not {setting}")
            env[setting] = self.secret_path(setting)
        return env


@dataclass(frozen=True)
class Egress:
    """Where the server's default route leaves: interface, its address, the Docker network."""

    interface: str
    address: str
    network: str | None


def start_server(engine: docker.DockerClient, spec: ServerSpec) -> Server:
    """Create, fill and start a server container (it may still be starting up)."""
    networks = list(spec.networks)
    options = _create_options(engine, spec)
    try:
        container = engine.containers.create(spec.image, **options)
    except ImageNotFound:
        raise HelperError(
            f"image {spec.image} does not exist; build it with `ikev2-vpn-helper build`"
        ) from None
    except APIError as error:
        raise HelperError(f"cannot create container {spec.name}: {error.explanation}") from None
    try:
        if spec.secret_files:
            eng.put_files(
                container,
                [
                    eng.FileSpec(spec.secret_path(setting), content, 0o600)
                    for setting, content in spec.secret_files.items()
                ],
                private_dirs=[SECRETS_DIR],
            )
        if spec.files:
            eng.put_files(
                container, [eng.FileSpec(path, data, 0o600) for path, data in spec.files.items()]
            )
        for network in networks[1:]:
            engine.networks.get(network).connect(
                container,
                aliases=list(spec.aliases.get(network, ())) or None,
                ipv6_address=spec.ipv6_addresses.get(network),
            )
        container.start()
    except (APIError, HelperError) as error:
        container.remove(force=True, v=True)
        detail = error.explanation if isinstance(error, APIError) else str(error)
        raise HelperError(f"cannot start container {spec.name}: {detail}") from None
    return Server(container, hide=spec.hidden_values())


def _create_options(engine: docker.DockerClient, spec: ServerSpec) -> dict[str, Any]:
    """The engine's container options for ``spec`` (attached to its first network)."""
    networks = list(spec.networks)
    options: dict[str, Any] = {
        "name": spec.name,
        "environment": spec.environment(),
        "cap_add": list(spec.privileges.cap_add),
        "cap_drop": list(spec.privileges.cap_drop),
        "devices": list(spec.privileges.devices),
        # What the entrypoint would otherwise ask for; the IPv6 ones only with VPN_POOL_V6,
        # as compose.yaml does (a host booted without IPv6 cannot set them).
        "sysctls": {
            **spec.privileges.sysctls,
            **(SYSCTLS_V6 if spec.env.get("VPN_POOL_V6") else {}),
            **spec.sysctls,
        },
        "security_opt": list(spec.privileges.security_opt),
        "volumes": {spec.volume_name(): {"bind": "/data", "mode": "rw"}},
        "labels": {**eng.labels(None, "server"), **spec.labels},
        "detach": True,
    }
    if spec.entrypoint is not None:
        options["entrypoint"] = list(spec.entrypoint)
        options["healthcheck"] = {"test": ["NONE"]}
    if spec.restart:
        options["restart_policy"] = {"Name": spec.restart}
    if spec.publish:
        options["ports"] = {"500/udp": 500, "4500/udp": 4500}
    unknown = set(spec.aliases) - set(networks)
    if unknown:
        raise ValueError(f"aliases for networks the server is not on: {sorted(unknown)}")
    if set(spec.ipv6_addresses) - set(networks[1:]):
        raise ValueError("fixed IPv6 addresses only on networks after the first")
    if networks:
        options["network"] = networks[0]
        if spec.aliases.get(networks[0]):
            options["networking_config"] = {
                networks[0]: engine.api.create_endpoint_config(
                    aliases=list(spec.aliases[networks[0]])
                )
            }
    return options


def secret_values(env: Mapping[str, str], files: Mapping[str, bytes] | None = None) -> list[str]:
    """Passwords in a server's settings and secret files: masked in anything shown."""
    values = [env.get("VPN_PASSWORD", ""), env.get("VPN_RADIUS_SECRET", "")]
    values += [pair.partition(":")[2] for pair in env.get("VPN_USERS", "").split()]
    for setting, content in (files or {}).items():
        text = content.decode(errors="replace")
        if setting == "VPN_USERS_FILE":
            values += [line.partition(":")[2] for line in text.splitlines()]
        else:
            values.append(text.removesuffix("\n").removesuffix("\r"))
    return [value for value in values if value]


class Server:
    """A running (or starting) server container and what a client needs to know about it."""

    def __init__(self, container: Container, hide: Sequence[str] = ()) -> None:
        self.container = container
        self._env = eng.container_env(container)
        self._hide = [*hide, *secret_values(self._env)]

    @classmethod
    def find(cls, engine: docker.DockerClient, name: str) -> Server:
        try:
            return cls(engine.containers.get(name))
        except NotFound:
            raise HelperError(
                f"there is no container named {name}; start one with `ikev2-vpn-helper run`"
            ) from None

    @property
    def name(self) -> str:
        return str(self.container.name)

    @property
    def vpn_host(self) -> str | None:
        """VPN_HOST as the server uses it (its IKE identity): "Vpn.Example.org." is
        vpn.example.org, "2001:DB8:0::7" is 2001:db8::7."""
        host = self._env.get("VPN_HOST")
        if not host:
            return None
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            return host.lower().rstrip(".")

    @property
    def split_nets(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The server's VPN_SPLIT_NETS (): a full tunnel; entries it would refuse are left
        out, since such a server does not run."""
        found = []
        for item in self._env.get("VPN_SPLIT_NETS", "").replace(",", " ").split():
            try:
                found.append(ipaddress.ip_network(item))
            except ValueError:
                continue
        return tuple(found)

    @property
    def pool(self) -> ipaddress.IPv4Network:
        """The pool clients get addresses from (the server's VPN_POOL_V4, else its default)."""
        value = self._env.get("VPN_POOL_V4")
        if not value:
            return POOL_V4
        try:
            return ipaddress.IPv4Network(value, strict=False)
        except ValueError:
            raise HelperError(f"server {self.name} has an invalid VPN_POOL_V4 {value!r}") from None

    def logs(self, lines: int = 30) -> str:
        return eng.log_tail(self.container, lines, self._hide)

    def state(self) -> Mapping[str, Any]:
        self.container.reload()
        state: Mapping[str, Any] = self.container.attrs["State"]
        return state

    # --- lifecycle ---------------------------------------------------------------------------

    def wait_healthy(self, timeout_s: float = HEALTH_TIMEOUT_S) -> float:
        """Seconds until the engine reports the container healthy; HelperError otherwise."""
        started = time.monotonic()
        while True:
            state = self.state()
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy":
                return time.monotonic() - started
            if state.get("Status") in {"exited", "dead", "restarting"} or (
                state.get("Restarting") or self.container.attrs.get("RestartCount", 0) > 0
            ):
                raise HelperError(self._failure(f"stopped with status {state.get('ExitCode')}"))
            if health is None and state.get("Status") == "running":
                raise HelperError(
                    f"image of {self.name} has no HEALTHCHECK; cannot tell when it is ready"
                )
            if time.monotonic() - started > timeout_s:
                raise HelperError(self._failure(f"not healthy after {timeout_s:.0f} s ({health})"))
            time.sleep(0.25)

    def restart(self, timeout_s: float = HEALTH_TIMEOUT_S) -> float:
        """Restart the container (same volume, same settings); seconds until healthy again."""
        self.container.restart(timeout=10)
        return self.wait_healthy(timeout_s)

    def remove(self) -> None:
        """Remove the container (its named state volume stays)."""
        self.container.remove(force=True, v=True)

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        """The exit status once the container stopped (for settings that must be refused)."""
        try:
            result = self.container.wait(timeout=timeout_s)
        except Exception as error:  # the SDK raises requests' timeout types
            raise HelperError(f"{self.name} still runs after {timeout_s:.0f} s") from error
        return int(result.get("StatusCode", -1))

    def _failure(self, what: str) -> str:
        tail = self.logs(20).rstrip()
        indented = "\n".join(f"  | {line}" for line in tail.splitlines())
        return f"server {self.name} {what}; its last log lines:\n{indented}"

    # --- what clients need ------------------------------------------------------------------

    def ca_certificate(self) -> bytes:
        """The CA certificate clients must trust (PEM), from the state volume."""
        return eng.read_file(self.container, CA_PATH)

    def identity(self) -> str:
        """The identity the server authenticates with: VPN_HOST, else what charon has loaded."""
        if self.vpn_host:
            return self.vpn_host
        listed = eng.run_checked(self.container, ["swanctl", "--list-conns", "--raw"])
        found = parse_local_id(listed, CONNECTION_NAME)
        if found is None:
            raise HelperError(
                f"cannot tell the identity of server {self.name}; give it with --server-id"
            )
        return found

    def egress(self) -> Egress:
        """The interface and address of the server's default route, and its network."""
        route = eng.run_checked(self.container, ["ip", "-j", "-4", "route", "show", "default"])
        interface = parse_default_route(route)
        if interface is None:
            raise HelperError(f"server {self.name} has no IPv4 default route")
        addresses = eng.run_checked(
            self.container, ["ip", "-j", "-4", "address", "show", "dev", interface]
        )
        address = parse_interface_address(addresses)
        if address is None:
            raise HelperError(f"interface {interface} of server {self.name} has no IPv4 address")
        self.container.reload()
        network = next(
            (name for name, ip in eng.network_addresses(self.container).items() if ip == address),
            None,
        )
        return Egress(interface=interface, address=address, network=network)

    def networks(self) -> dict[str, str]:
        """The server's address on each of its networks."""
        self.container.reload()
        return eng.network_addresses(self.container)

    def networks_v6(self) -> dict[str, str]:
        """The server's global IPv6 address on each of its IPv6 networks."""
        self.container.reload()
        return eng.network_addresses_v6(self.container)


# --- parsing (pure) ------------------------------------------------------------------------


def parse_default_route(ip_json: str) -> str | None:
    """The device of the first default route in ``ip -j route show default`` output."""
    routes: list[dict[str, Any]] = json.loads(ip_json or "[]")
    for route in routes:
        if route.get("dst") == "default" and route.get("dev"):
            return str(route["dev"])
    return None


def parse_interface_address(ip_json: str) -> str | None:
    """The first IPv4 address in ``ip -j address show dev X`` output."""
    interfaces: list[dict[str, Any]] = json.loads(ip_json or "[]")
    for interface in interfaces:
        for address in interface.get("addr_info", []):
            if address.get("family") == "inet" and address.get("local"):
                return str(address["local"])
    return None


def parse_local_id(list_conns_raw: str, connection: str) -> str | None:
    """The local identity of ``connection`` in ``swanctl --list-conns --raw`` output."""
    start = list_conns_raw.find(f"{connection} {{")
    if start < 0:
        return None
    match = re.search(r"local-\d+ \{[^{}]*?\bid=([^ {}]+)", list_conns_raw[start:])
    return match.group(1) if match else None
