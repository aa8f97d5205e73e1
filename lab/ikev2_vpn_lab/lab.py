"""A lab: everything one test session creates, labelled with one run id.

Typical end-to-end use::

    with Lab(image="ikev2-vpn:latest") as lab:
        server = lab.start_server({"VPN_HOST": "vpn.example.test", "VPN_USER": "alice"},
                                  secret_files={"VPN_PASSWORD_FILE": b"s3cret"})
        client = lab.start_client(server)
        result = client.connect("alice", "s3cret")
        traffic = client.send_traffic(lab.target(server))
    # leaving the block removes the containers, networks and volumes of this run

A lab is the helper's check :class:`~ikev2_vpn_helper.session.Session` (topology, target,
clients, ``lab.check(server, user, password)``) plus what only tests start: servers with
test defaults, state volumes, Pebble and FreeRADIUS.

For ``VPN_CERT=letsencrypt``, ``lab.start_pebble()`` starts a test ACME server on the egress
network; the server then needs a name there (``aliases={lab.topology.egress: [host]}``) so
the ACME server's HTTP-01 validation finds it. For ``VPN_RADIUS_*``,
``lab.start_radius(secret, users)`` starts FreeRADIUS on the egress network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import docker

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.base import Log
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.image import DEFAULT_IMAGE
from ikev2_vpn_helper.server import HEALTH_TIMEOUT_S, Privileges, Server, ServerSpec, start_server
from ikev2_vpn_helper.session import Session
from ikev2_vpn_helper.vpnclient import Target, VpnClient

from .pebble import DEFAULT_ALIAS as PEBBLE_ALIAS
from .pebble import PEBBLE_IMAGE, Pebble
from .radius import DEFAULT_ALIAS as RADIUS_ALIAS
from .radius import RADIUS_IMAGE, FreeRadius


def _quiet(_line: str) -> None:
    pass


class Lab(Session):
    """A check session that also starts servers, ACME and RADIUS servers for tests."""

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
        super().__init__(engine, run_id=run_id, client_image=client_image, log=log, ipv6=ipv6)
        self.image = image  # for servers
        self._pebbles = 0
        self._radius_servers = 0

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

    def start_clients(self, server: Server, count: int) -> list[VpnClient]:
        return [self.start_client(server) for _ in range(count)]
