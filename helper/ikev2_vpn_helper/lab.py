"""A lab: everything one check or test session creates, labelled with one run id.

Typical end-to-end use::

    with Lab(image="ikev2-vpn:latest") as lab:
        server = lab.start_server({"VPN_HOST": "vpn.example.test", "VPN_USER": "alice"},
                                  secret_files={"VPN_PASSWORD_FILE": b"s3cret"})
        client = lab.start_client(server)
        result = client.connect("alice", "s3cret")
        traffic = client.send_traffic(lab.target(server))
    # leaving the block removes the containers, networks and volumes of this run

``lab.check(server, user, password)`` runs the whole ``ikev2-vpn-helper check`` sequence
and returns a :class:`~ikev2_vpn_helper.check.CheckReport`.

For ``VPN_CERT=letsencrypt``, ``lab.start_pebble()`` starts a test ACME server on the egress
network; the server then needs a name there (``aliases={lab.topology.egress: [host]}``) so
the ACME server's HTTP-01 validation finds it. For ``VPN_RADIUS_*``,
``lab.start_radius(secret, users)`` starts FreeRADIUS on the egress network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import TracebackType

import docker
from docker.errors import APIError

from . import engine as eng
from .base import Log
from .check import CheckOptions, CheckReport, choose_client_network, evaluate
from .errors import HelperError
from .image import DEFAULT_IMAGE
from .pebble import DEFAULT_ALIAS as PEBBLE_ALIAS
from .pebble import PEBBLE_IMAGE, Pebble
from .radius import DEFAULT_ALIAS as RADIUS_ALIAS
from .radius import RADIUS_IMAGE, FreeRadius
from .server import HEALTH_TIMEOUT_S, Privileges, Server, ServerSpec, start_server
from .topology import LABEL_TOPOLOGY, Topology, ensure_topology
from .vpnclient import Retransmit, Target, VpnClient


def _quiet(_line: str) -> None:
    pass


class Lab:
    """Creates servers, clients, targets and networks for one run, and removes them all."""

    def __init__(
        self,
        engine: docker.DockerClient | None = None,
        *,
        run_id: str | None = None,
        image: str = DEFAULT_IMAGE,
        client_image: str | None = None,
        log: Log = _quiet,
        ipv6: bool = False,
    ) -> None:
        """``ipv6``: the topology's networks are dual stack (IPv6 in 2001:db8::/32)."""
        self.engine = engine or eng.connect_engine()
        self.run_id = run_id or eng.new_run_id()
        self.image = image  # for servers
        self.client_image = client_image  # for clients and targets; None: the server's image
        self.log = log
        self.ipv6 = ipv6
        self._topology: Topology | None = None
        self._targets: dict[str, Target] = {}
        self._clients = 0
        self._pebbles = 0
        self._radius_servers = 0

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.teardown()

    def name(self, role: str) -> str:
        return f"ikev2-vpn-{self.run_id}-{role}"

    def teardown(self) -> list[str]:
        """Remove every container, network and volume of this run; return their names."""
        self._targets.clear()
        return eng.remove_run(self.engine, self.run_id)

    # --- networks and volumes ----------------------------------------------------------------

    @property
    def topology(self) -> Topology:
        """This run's wan and egress networks (created on first use)."""
        if self._topology is None:
            self._topology = ensure_topology(
                self.engine, self.name("net"), self.run_id, ipv6=self.ipv6
            )
        return self._topology

    def volume(self, name: str | None = None) -> str:
        """A state volume owned by this run (reuse the name to restart with the same state)."""
        name = name or self.name("data")
        existing = self.engine.volumes.list(filters={"name": name})
        if not any(volume.name == name for volume in existing):
            self.engine.volumes.create(name, labels=eng.labels(self.run_id, "state"))
        return name

    # --- servers -----------------------------------------------------------------------------

    def start_server(
        self,
        env: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        volume: str | None = None,
        secret_files: Mapping[str, bytes] | None = None,
        files: Mapping[str, bytes] | None = None,
        aliases: Mapping[str, Sequence[str]] | None = None,
        image: str | None = None,
        restart: str | None = "unless-stopped",
        privileges: Privileges | None = None,
        wait: bool = True,
        timeout_s: float = HEALTH_TIMEOUT_S,
        sysctls: Mapping[str, str] | None = None,
        wan_ipv6: str | None = None,
    ) -> Server:
        """Start a server on this run's topology (egress first, then wan).

        Tests never let the server look up its public address: without VPN_HOST, the lab
        sets VPN_HOST_DETECT=off. ``aliases``: DNS names of the server per network name.
        With ``wait`` it returns once healthy and after checking that the default route
        leaves through the egress network; without, right after start (for settings that
        must make it exit: see :meth:`Server.wait_exit`). ``privileges``: capabilities,
        sysctls and devices other than the server's defaults. ``sysctls``: more than the
        privileges' ones. ``wan_ipv6``: the server's IPv6 address on the wan network (of
        an ``ipv6`` lab), known before start so that it can be VPN_HOST.
        """
        settings = dict(env or {})
        if "VPN_HOST" not in settings:
            settings.setdefault("VPN_HOST_DETECT", "off")
        topology = self.topology
        spec = ServerSpec(
            image=image or self.image,
            name=name or self.name("server"),
            env=settings,
            secret_files=dict(secret_files or {}),
            files=dict(files or {}),
            volume=self.volume(volume),
            networks=[topology.egress, topology.wan],
            aliases=dict(aliases or {}),
            restart=restart,
            labels=eng.labels(self.run_id, "server"),
            privileges=privileges or Privileges(),
            sysctls=dict(sysctls or {}),
            ipv6_addresses={topology.wan: wan_ipv6} if wan_ipv6 else {},
        )
        for network in spec.networks:
            self._ensure_aliases_free(network, spec.aliases.get(network, ()))
        server = start_server(self.engine, spec)
        if wait:
            seconds = server.wait_healthy(timeout_s)
            self.log(f"server {server.name} healthy after {seconds:.1f} s")
            self.verify_egress(server)
        return server

    def verify_egress(self, server: Server) -> None:
        """Fail clearly unless the server's default route leaves through the egress network."""
        egress = server.egress()
        if egress.network != self.topology.egress:
            raise HelperError(
                f"server {server.name} routes its default traffic via {egress.interface} "
                f"({egress.network or 'no Docker network'}), not the egress network "
                f"{self.topology.egress}; the NAT check would be meaningless"
            )

    def _ensure_aliases_free(self, network: str, names: Sequence[str]) -> None:
        """Refuse a name another running container answers to on ``network``: Docker's DNS
        would return both addresses, and a peer would reach either at random."""
        if not names:
            return
        found = self.engine.networks.get(network)
        found.reload()
        for container in found.containers:
            settings = container.attrs["NetworkSettings"]["Networks"].get(network) or {}
            taken = set(names) & set(settings.get("Aliases") or [])
            if taken:
                raise HelperError(
                    f"container {container.name} already answers to {', '.join(sorted(taken))} "
                    f"on {network}; remove it or choose another name"
                )

    # --- ACME ----------------------------------------------------------------------------------

    def start_pebble(
        self,
        *,
        alias: str = PEBBLE_ALIAS,
        validity_s: int | None = None,
        name: str | None = None,
        image: str = PEBBLE_IMAGE,
    ) -> Pebble:
        """Pebble (a test ACME server) on this run's egress network, known there as ``alias``.

        Servers take their default route through that network, so they reach Pebble, and
        Pebble reaches their port 80 for HTTP-01. A second Pebble in one lab needs another
        alias. ``validity_s``: lifetime of the certificates it issues.
        """
        network = self.topology.egress
        self._ensure_aliases_free(network, [alias])
        self._pebbles += 1
        pebble = Pebble.start(
            self.engine,
            network=network,
            name=name or self.name(f"pebble-{self._pebbles}"),
            run_id=self.run_id,
            alias=alias,
            validity_s=validity_s,
            image=image,
        )
        self.log(f"pebble {pebble.name} serves {pebble.directory_url}")
        return pebble

    # --- RADIUS ------------------------------------------------------------------------------

    def start_radius(
        self,
        secret: str,
        users: Mapping[str, str],
        *,
        alias: str = RADIUS_ALIAS,
        name: str | None = None,
        image: str = RADIUS_IMAGE,
    ) -> FreeRadius:
        """FreeRADIUS on this run's egress network, known there as ``alias``, answering every
        server of the egress subnet that knows ``secret``; ``users``: name -> password."""
        network = self.topology.egress
        self._ensure_aliases_free(network, [alias])
        self._radius_servers += 1
        radius = FreeRadius.start(
            self.engine,
            network=network,
            clients=self.topology.egress_subnet,
            secret=secret,
            users=users,
            name=name or self.name(f"radius-{self._radius_servers}"),
            run_id=self.run_id,
            alias=alias,
            image=image,
        )
        self.log(f"freeradius {radius.name} serves {alias}")
        return radius

    # --- targets and clients -----------------------------------------------------------------

    def target(self, server: Server) -> Target:
        """The target on the server's egress network (started on first use, then reused)."""
        network = server.egress().network
        if network is None:
            raise HelperError(
                f"the default route of server {server.name} does not use a Docker network; "
                "there is nowhere to put the target"
            )
        if network not in self._targets:
            self._targets[network] = Target.start(
                self.engine,
                image=self._image_of(server),
                network=network,
                name=self.name(f"target-{len(self._targets) + 1}"),
                run_id=self.run_id,
            )
        return self._targets[network]

    def target_v6(self, server: Server) -> Target:
        """An IPv6-only target on the server's egress network (started on first use)."""
        network = server.egress().network
        if network is None or not self.ipv6:
            raise HelperError("an IPv6 target needs a lab with ipv6=True and a server on it")
        key = f"{network} v6"
        if key not in self._targets:
            self._targets[key] = Target.start(
                self.engine,
                image=self._image_of(server),
                network=network,
                name=self.name(f"target-{len(self._targets) + 1}"),
                run_id=self.run_id,
                ipv6_only=True,
            )
        return self._targets[key]

    def start_client(
        self,
        server: Server,
        *,
        name: str | None = None,
        network: str | None = None,
        ca_pem: bytes | None = None,
        server_id: str | None = None,
        log_level: int = 1,
        retransmit: Retransmit | None = None,
        ipv6: bool = False,
        dial_ipv6: bool = False,
    ) -> VpnClient:
        """A client that trusts the server's CA and dials its address on a shared network.

        ``retransmit``: the client's charon timers (None: strongSwan's defaults). ``ipv6``:
        the client can use an IPv6 virtual address; ``dial_ipv6``: it dials the server's
        IPv6 address (IKE and ESP over IPv6)."""
        networks = server.networks()
        if network is None:
            network = choose_client_network(networks, server.egress().network, self._wans())
        if network not in networks:
            raise HelperError(f"server {server.name} is not attached to network {network}")
        addresses = server.networks_v6() if dial_ipv6 else networks
        if network not in addresses:
            raise HelperError(f"server {server.name} has no IPv6 address on network {network}")
        self._clients += 1
        return VpnClient.start(
            self.engine,
            image=self._image_of(server),
            network=network,
            server_address=addresses[network],
            server_id=server_id or server.identity(),
            ca_pem=ca_pem or server.ca_certificate(),
            name=name or self.name(f"client-{self._clients}"),
            run_id=self.run_id,
            log_level=log_level,
            retransmit=retransmit,
            ipv6=ipv6,
        )

    def start_clients(self, server: Server, count: int) -> list[VpnClient]:
        return [self.start_client(server) for _ in range(count)]

    def _image_of(self, server: Server) -> str:
        return self.client_image or str(server.container.attrs["Image"])

    def _wans(self) -> set[str]:
        found = self.engine.networks.list(filters={"label": f"{eng.LABEL_ROLE}=wan"})
        return {network.name for network in found if LABEL_TOPOLOGY in network.attrs["Labels"]}

    # --- the check -----------------------------------------------------------------------------

    def check(
        self,
        server: Server,
        user: str,
        password: str,
        options: CheckOptions = CheckOptions(),  # noqa: B008 - frozen dataclass
        log: Log | None = None,
    ) -> CheckReport:
        """Connect a new client as ``user``, send traffic to the target, judge the result."""
        say = log or self.log
        if options.topology:
            self._attach_to_wan(server, options.topology)
        egress = server.egress()
        networks = server.networks()
        network = options.client_network or choose_client_network(
            networks, egress.network, self._wans()
        )
        target = self.target(server)
        say(f"target {target.address} on {egress.network}; server egress {egress.address}")
        client = self.start_client(
            server, network=network, ca_pem=options.ca_pem, server_id=options.server_id
        )
        say(
            f"client {client.address} on {network} dials {client.server_address} "
            f"as {client.server_id}"
        )
        connection = client.connect(
            user,
            password,
            timeout_s=options.timeout_s,
            ike_proposals=options.ike_proposals,
            esp_proposals=options.esp_proposals,
        )
        traffic = client.send_traffic(target) if connection.connected else None
        if traffic is not None and traffic.tcp_source is None:
            # No answer reached the client: ask the target itself what arrived (an echo
            # request from the client's virtual IP means the server does not NAT).
            seen = target.report().get("icmp_sources", [])
            traffic = dataclasses.replace(traffic, icmp_sources=[*traffic.icmp_sources, *seen])
        if connection.connected:
            client.disconnect()
        return CheckReport(
            server=server.name,
            server_address=client.server_address,
            server_id=client.server_id,
            client_network=network,
            client_address=client.address,
            user=user,
            pool=str(server.pool),
            egress_address=egress.address,
            target_address=target.address,
            connection=connection,
            traffic=traffic,
            findings=evaluate(
                connection,
                traffic,
                pool=server.pool,
                egress_address=egress.address,
                client_address=client.address,
            ),
            run_id=self.run_id,
        )

    def _attach_to_wan(self, server: Server, topology_name: str) -> None:
        topology = ensure_topology(self.engine, topology_name, self.run_id)
        if topology.wan not in server.networks():
            try:
                self.engine.networks.get(topology.wan).connect(server.container)
            except APIError as error:
                raise HelperError(
                    f"cannot attach server {server.name} to {topology.wan}: {error.explanation}"
                ) from None


def run_check(
    engine: docker.DockerClient,
    server: Server,
    *,
    user: str,
    password: str,
    options: CheckOptions = CheckOptions(),  # noqa: B008 - frozen dataclass
    log: Log = print,
) -> CheckReport:
    """``ikev2-vpn-helper check``: a lab of its own, removed afterwards unless ``keep``."""
    lab = Lab(engine, run_id=options.run_id, client_image=options.image, log=log)
    try:
        return lab.check(server, user, password, options)
    finally:
        if options.keep:
            log(
                f"kept the check's containers; remove them with "
                f"`ikev2-vpn-helper clean {lab.run_id}`"
            )
        else:
            lab.teardown()
