"""A session: the networks, target and clients one check creates, labelled with one run id.

``ikev2-vpn-helper check`` runs in a session of its own (:func:`run_check`)::

    session = Session(engine)
    report = session.check(server, "alice", "s3cret")
    session.teardown()  # removes the containers, networks and volumes of this run

The test lab (``ikev2_vpn_lab.Lab``) extends it with servers, Pebble and FreeRADIUS.
"""

from __future__ import annotations

import dataclasses
from types import TracebackType
from typing import Self

import docker
from docker.errors import APIError

from . import engine as eng
from .base import Log
from .check import CheckOptions, CheckReport, choose_client_network, evaluate
from .errors import HelperError
from .server import Server
from .topology import LABEL_TOPOLOGY, Topology, ensure_topology
from .vpnclient import Retransmit, Target, VpnClient


def _quiet(_line: str) -> None:
    pass


class Session:
    """Creates a topology, targets and clients for one run, and removes them all."""

    def __init__(
        self,
        engine: docker.DockerClient | None = None,
        *,
        run_id: str | None = None,
        client_image: str | None = None,
        log: Log = _quiet,
        ipv6: bool = False,
    ) -> None:
        """``ipv6``: the topology's networks are dual stack (IPv6 in 2001:db8::/32)."""
        self.engine = engine or eng.connect_engine()
        self.run_id = run_id or eng.new_run_id()
        self.client_image = client_image  # for clients and targets; None: the server's image
        self.log = log
        self.ipv6 = ipv6
        self._topology: Topology | None = None
        self._targets: dict[str, Target] = {}
        self._clients = 0

    def __enter__(self) -> Self:
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

    @property
    def topology(self) -> Topology:
        """This run's wan and egress networks (created on first use)."""
        if self._topology is None:
            self._topology = ensure_topology(
                self.engine, self.name("net"), self.run_id, ipv6=self.ipv6
            )
        return self._topology

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
                split=server.split_nets,
                target_address=target.address,
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
    """``ikev2-vpn-helper check``: a session of its own, removed afterwards unless ``keep``."""
    session = Session(engine, run_id=options.run_id, client_image=options.image, log=log)
    try:
        return session.check(server, user, password, options)
    finally:
        if options.keep:
            log(
                f"kept the check's containers; remove them with "
                f"`ikev2-vpn-helper clean {session.run_id}`"
            )
        else:
            session.teardown()
