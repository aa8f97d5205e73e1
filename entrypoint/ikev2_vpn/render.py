"""Pure functions from the validated plan to configuration: no I/O, so all unit-testable.

:func:`plan` builds the one :class:`Plan` from the settings, the probed machine and the
state under /data; it feeds every output: the strongswan.conf text (Jinja2 templates in
``config/``), the nftables ruleset, the VICI messages that load the configuration into
charon, and swanctl.conf, which writes out those same messages (only the certificate is a
file name there) for an operator to read. A unit test parses the file and compares it with
the messages; an end-to-end test loads it with ``swanctl --load-all``.

The part that ``ikev2-vpn users`` changes while the server runs (secrets, static virtual
IPs) depends only on a :class:`UsersPlan` and goes to its own file, ``conf.d/users.conf``,
which swanctl.conf includes.

Static virtual IPs (VPN_POOL_V4_STATIC). charon requests the EAP identity only when the
connection it picked first says ``eap_id = %any``, and it moves to another connection after
authentication only when the picked one does not accept the authenticated identity. So:

1. ``identify`` ranks first for every client (its ``remote_addrs`` are the most specific),
   asks for the EAP identity, and accepts nobody (it requires a group no EAP user has);
2. charon then walks the other connections in rank order: ``static-<user>`` (only that
   EAP identity, a one-address pool), then the generic connection for everyone else;
3. the generic connection's pools are VPN_POOL_V4 minus the static block, so no dynamic
   lease can ever be a reserved address.

A connection with a fixed ``eap_id`` picked first would skip the EAP-Identity request, and
clients that answer MSCHAPv2 with their IKE identity (strongSwan's own) would then fail.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from pydantic import SecretStr

from . import defaults
from . import fence as client_fence
from .fence import Fenced, Gateway, Network
from .probe.backend import BackendChoice
from .settings import (
    Account,
    Backend,
    IPAddress,
    ProfilePasswords,
    ProposalSet,
    RadiusServer,
    Settings,
    V6Egress,
)
from .state.credentials import ServerCredentials
from .state.users import nt_hash

if TYPE_CHECKING:  # types only: the state module pulls in the ACME client
    from .probe import Machine
    from .state.server import ServerState

# Where apply writes the human-readable copies (standard swanctl locations).
SWANCTL_DIR = Path("/etc/swanctl")
USERS_FILE = "conf.d/users.conf"  # in SWANCTL_DIR, included by swanctl.conf
LEAF_FILE = "server.crt"
KEY_FILE = "server.key"

# Connection ranks (charon prefers the more specific remote_addrs; every client matches
# each of these): identify, then the static users, then the generic connection (%any).
RANK_IDENTIFY = (
    "0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/2", "192.0.0.0/2",
    "::/2", "4000::/2", "8000::/2", "c000::/2",
)  # fmt: skip
RANK_STATIC = ("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1")


@dataclass(frozen=True)
class StaticAddress:
    """A user's fixed virtual IP, handed out from a one-address pool of its own."""

    user: str
    address: ipaddress.IPv4Address

    @property
    def connection(self) -> str:
        return "static-" + section_name(self.user)

    @property
    def pool(self) -> str:
        return "static-" + str(self.address).replace(".", "-")


@dataclass(frozen=True)
class RadiusPlan:
    """VPN_RADIUS_*: charon relays EAP to these servers and reports sessions to them."""

    servers: tuple[RadiusServer, ...]
    secret: SecretStr
    nas_identifier: str  # VPN_RADIUS_NAS_IDENTIFIER, else the server's identity
    accounting_port: int | None = None  # None: each server's authentication port + 1
    interim_interval: int = defaults.RADIUS_INTERIM_INTERVAL_S  # 0: none

    def sections(self) -> list[dict[str, Any]]:
        """One strongswan.conf section per server, in the order given (names radius-1, ...)."""
        return [
            {
                "name": name,
                "address": server.host,
                "auth_port": server.auth_port,
                "acct_port": self.accounting_port or server.auth_port + 1,
            }
            for name, server in zip(self.server_names(), self.servers, strict=True)
        ]

    def server_names(self) -> dict[str, str]:
        """charon's name of each server (what its log says) -> the VPN_RADIUS_SERVERS entry."""
        return {f"radius-{n}": str(server) for n, server in enumerate(self.servers, start=1)}


@dataclass(frozen=True)
class Plan:
    """Everything the server configuration depends on, decided before anything is written."""

    host: str
    accounts: tuple[Account, ...]
    credentials: ServerCredentials
    pool_v4: ipaddress.IPv4Network
    dns: tuple[IPAddress, ...]
    backend: BackendChoice
    proposals: ProposalSet
    log_level: int
    egress_interface: str
    pool_v4_static: ipaddress.IPv4Network | None = None  # reserved for static IPs
    static: tuple[StaticAddress, ...] = ()
    dpd_delay: int = 30  # VPN_DPD_DELAY, seconds
    # What clients may reach besides the networks behind the server (the nftables ruleset).
    client_isolation: bool = False  # VPN_CLIENT_ISOLATION: not each other
    allow_server_access: bool = False  # VPN_ALLOW_SERVER_ACCESS: the container's own services
    allow_link_local: bool = False  # VPN_ALLOW_LINK_LOCAL: 169.254.0.0/16, fe80::/10
    # The client fence (ikev2_vpn/fence.py): the host at these gateways, the platform,
    # VPN_CLIENT_DENY, less VPN_CLIENT_ALLOW (see the property ``fence``).
    gateways: tuple[Gateway, ...] = ()
    dialled: IPAddress | None = None  # VPN_HOST, when an address not the container's own
    client_deny: tuple[Network, ...] = ()
    client_allow: tuple[Network, ...] = ()
    radius: RadiusPlan | None = None  # users live in RADIUS; ``accounts`` is then empty
    pool_v6: ipaddress.IPv6Network | None = None  # VPN_POOL_V6: dual stack when set
    pool_v6_egress: V6Egress = V6Egress.NAT66  # VPN_POOL_V6_EGRESS
    egress_interface_v6: str | None = None  # the IPv6 default route's (with pool_v6)
    # VPN_SPLIT_NETS and the DNS servers outside them (Settings.split_tunnel); (): full tunnel.
    split: tuple[Network, ...] = ()
    # Client profiles (VPN_PROFILE_*).
    profile_passwords: ProfilePasswords = ProfilePasswords.INCLUDE
    profile_always_on: bool = False

    @property
    def fence(self) -> tuple[Fenced, ...]:
        """What clients may not reach, in rule order (the probe checked VPN_DNS against it)."""
        return client_fence.fence(
            gateways=self.gateways,
            dialled=self.dialled,
            deny=self.client_deny,
            allow=self.client_allow,
            link_local=self.allow_link_local,
            pools=(self.pool_v4, *((self.pool_v6,) if self.pool_v6 else ())),
        )

    def users(self) -> UsersPlan:
        return UsersPlan(
            host=self.host,
            accounts=self.accounts,
            static=self.static,
            proposals=proposals(self.proposals, self.backend.esp_gcm),
            dns=self.dns,
            dpd_delay=self.dpd_delay,
            pool_v6=self.pool_v6,
            split=self.split,
        )


def plan(settings: Settings, machine: Machine, state: ServerState) -> Plan:
    """The one place where settings, the machine's facts and the state under /data meet."""
    return Plan(
        host=machine.identity.host,
        accounts=state.accounts,
        credentials=state.certificate.credentials,
        pool_v4=settings.pool_v4,
        dns=settings.dns,
        backend=machine.backend,
        proposals=settings.proposals,
        log_level=settings.log_level,
        egress_interface=machine.egress.interface,
        pool_v4_static=settings.pool_v4_static,
        static=tuple(StaticAddress(name, address) for name, address in state.static.items()),
        dpd_delay=settings.dpd_delay,
        client_isolation=settings.client_isolation,
        allow_server_access=settings.allow_server_access,
        allow_link_local=settings.allow_link_local,
        gateways=machine.gateways,
        dialled=machine.dialled,
        client_deny=settings.client_deny,
        client_allow=settings.client_allow,
        radius=radius_plan(settings, machine.identity.host),
        pool_v6=settings.pool_v6,
        pool_v6_egress=settings.pool_v6_egress,
        egress_interface_v6=machine.egress_v6.interface if machine.egress_v6 else None,
        split=settings.split_tunnel(),
        profile_passwords=settings.profile_passwords,
        profile_always_on=settings.profile_always_on,
    )


def radius_plan(settings: Settings, host: str) -> RadiusPlan | None:
    """VPN_RADIUS_*, with the server's identity as NAS-Identifier unless one is set."""
    if not settings.radius_servers or settings.radius_secret is None:
        return None
    return RadiusPlan(
        servers=settings.radius_servers,
        secret=settings.radius_secret,
        nas_identifier=settings.radius_nas_identifier or host,
        accounting_port=settings.radius_accounting_port,
        interim_interval=settings.radius_interim_interval,
    )


@dataclass(frozen=True)
class Proposals:
    ike: tuple[str, ...]
    esp: tuple[str, ...]


@dataclass(frozen=True)
class UsersPlan:
    """What the per-user configuration depends on; ``ikev2-vpn users`` builds one without
    the rest of the plan (it never touches the certificate or the pools)."""

    host: str
    accounts: tuple[Account, ...]
    static: tuple[StaticAddress, ...]
    proposals: Proposals
    dns: tuple[IPAddress, ...]
    dpd_delay: int = 30
    pool_v6: ipaddress.IPv6Network | None = None  # static users get a v6 address from it
    split: tuple[Network, ...] = ()  # Plan.split: their connections tunnel the same


@dataclass(frozen=True)
class Pool:
    name: str
    addrs: str  # a subnet or a range "first-last"


@dataclass(frozen=True)
class ViciConfig:
    """The messages that load the configuration into charon, in order."""

    authorities: tuple[bytes, ...]  # load-cert with flag CA
    key: dict[str, Any]  # load-key
    shared: tuple[dict[str, Any], ...]  # load-shared, one per account
    pools: dict[str, Any]  # load-pool: the dynamic pools and the static users' pools
    connection: dict[str, Any]  # load-conn: the connections that carry the certificate
    static_connections: dict[str, Any] = dataclass_field(default_factory=dict)  # load-conn


def proposals(choice: ProposalSet, esp_gcm: bool) -> Proposals:
    esp = ((defaults.ESP_STRONG_AEAD,) if esp_gcm else ()) + (defaults.ESP_STRONG_CBC,)
    if choice is ProposalSet.MODERN:
        return Proposals(defaults.IKE_STRONG, esp)
    return Proposals(defaults.IKE_STRONG + defaults.IKE_LEGACY, esp + defaults.ESP_LEGACY)


def charon_plugins(backend: Backend, radius: bool = False) -> tuple[str, ...]:
    """Only what this server uses. kernel-libipsec must precede kernel-netlink: the first
    plugin that registers an IPsec backend wins (kernel-netlink still handles routes).
    With RADIUS, charon asks for the EAP identity itself and relays the rest of EAP to the
    RADIUS server, which checks the password: no EAP method of its own is needed.

    A trailing "!" marks a plugin charon must not start without (a missing package would
    otherwise only show up as failing logins).
    """
    ipsec = ("kernel-libipsec!",) if backend is Backend.USERSPACE else ()
    eap = ("eap-radius!",) if radius else ("eap-mschapv2!",)
    return (
        "random", "nonce", "openssl!", "pem", "pkcs1", "pkcs8", "x509!", "constraints", "pubkey",
        *ipsec, "kernel-netlink", "socket-default!", "vici!", "eap-identity!", *eap,
    )  # fmt: skip


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("ikev2_vpn") / "templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 (renders configuration files, not HTML)
    )


def render_template(template: str, **values: Any) -> str:
    """``config/<template>`` rendered with ``values`` (configuration text, unescaped)."""
    return _templates().get_template(template).render(**values)


def _secret_name(account: Account) -> str:
    # swanctl section names allow only [A-Za-z0-9_-]; user names may also contain . @ +
    return secret_id(account.name)


def section_name(name: str) -> str:
    """A user name as a readable swanctl section name: characters other than letters,
    digits and '-' become _xx (hex), so different names never collide."""
    return "".join(
        c if c.isascii() and (c.isalnum() or c == "-") else f"_{ord(c):02x}" for c in name
    )


def dynamic_pools(
    pool: ipaddress.IPv4Network, reserved: ipaddress.IPv4Network | None
) -> tuple[Pool, ...]:
    """The pools clients get dynamic addresses from: VPN_POOL_V4, or without a static
    block, its usable addresses minus the block (one range before it, one after it)."""
    if reserved is None:
        return (Pool(defaults.POOL_V4_NAME, str(pool)),)
    first, last = pool.network_address + 1, pool.broadcast_address - 1
    ranges = []
    if reserved.network_address > first:
        ranges.append((first, min(last, reserved.network_address - 1)))
    if reserved.broadcast_address < last:
        ranges.append((max(first, reserved.broadcast_address + 1), last))
    names = (defaults.POOL_V4_NAME, f"{defaults.POOL_V4_NAME}-2")
    return tuple(Pool(name, f"{a}-{b}") for name, (a, b) in zip(names, ranges, strict=False))


def v6_pools(pool_v6: ipaddress.IPv6Network | None) -> tuple[Pool, ...]:
    """The IPv6 pool, listed after the IPv4 ones: charon leases one address per family a
    client asks for, each from the first listed pool of that family that has one free."""
    return () if pool_v6 is None else (Pool(defaults.POOL_V6_NAME, str(pool_v6)),)


def full_tunnel(pool_v6: ipaddress.IPv6Network | None) -> tuple[str, ...]:
    """The server's traffic selector. ::/0 next to 0.0.0.0/0 once clients get IPv6
    addresses: Apple devices install no IPv6 routes into the tunnel otherwise, and the
    others would send their IPv6 traffic around it."""
    return ("0.0.0.0/0",) if pool_v6 is None else ("0.0.0.0/0", "::/0")


def traffic_selectors(
    pool_v6: ipaddress.IPv6Network | None, split: tuple[Network, ...]
) -> tuple[str, ...]:
    """What the server's traffic selector offers: the full tunnel, or with VPN_SPLIT_NETS
    only those networks and the DNS servers. Clients propose everything and the server
    narrows it; what is left is what they route into the tunnel (docs/clients.md)."""
    return tuple(map(str, split)) if split else full_tunnel(pool_v6)


def strongswan_conf(plan: Plan) -> str:
    radius = plan.radius
    return render_template(
        "strongswan.conf.j2",
        plugins=charon_plugins(plan.backend.backend, radius=radius is not None),
        backend=plan.backend,
        log_level=plan.log_level,
        retransmit_tries=defaults.RETRANSMIT_TRIES,
        dos=defaults.DOS_CONFIG,
        threads=defaults.CHARON_THREADS,
        priority_threads=defaults.PRIORITY_THREADS,
        radius=None
        if radius is None
        else {
            "nas_identifier": radius.nas_identifier,
            "interim_interval": radius.interim_interval,
            "retransmit_timeout": defaults.RADIUS_RETRANSMIT_TIMEOUT_S,
            "retransmit_base": defaults.RADIUS_RETRANSMIT_BASE,
            "retransmit_tries": defaults.RADIUS_RETRANSMIT_TRIES,
            "servers": radius.sections(),
            "secrets_file": defaults.RADIUS_SECRETS_FILE,
        },
    )


def radius_secrets_conf(radius: RadiusPlan) -> str:
    """The shared secret of each RADIUS server, for a file only root can read; strongswan.conf
    includes it, and charon merges its sections with the servers' other settings."""
    return render_template(
        "strongswan-radius-secrets.conf.j2",
        servers=[
            {"name": section["name"], "secret": conf_string(radius.secret.get_secret_value())}
            for section in radius.sections()
        ],
    )


def conf_string(text: str) -> str:
    """``text`` as a quoted strongswan.conf value: any of # { } = and spaces stay literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def swanctl_conf(plan: Plan) -> str:
    """The configuration as swanctl.conf, except what :func:`users_conf` renders: the same
    connections and pools as :func:`vici_config`, with the certificate's file name."""
    return _swanctl_template(
        "swanctl.conf.j2",
        connections=_connections(plan, LEAF_FILE),
        pools=_pools(plan),
        users_file=USERS_FILE,
    )


def users_conf(users: UsersPlan) -> str:
    """Secrets and static IPs as swanctl.conf text, from the messages of :func:`vici_users`.
    Secrets appear only as NT hashes in hex."""
    vici = vici_users(users)
    return _swanctl_template(
        "swanctl-users.conf.j2",
        connections=vici.connections,
        pools=vici.pools,
        secrets=swanctl_secrets(vici.shared),
    )


def _swanctl_template(template: str, **sections: Any) -> str:
    names = {
        "connection": defaults.CONNECTION_NAME,
        "identify": defaults.IDENTIFY_CONNECTION,
        "pool_v6": defaults.POOL_V6_NAME,
    }
    return render_template(template, names=names, **sections)


def swanctl_secrets(shared: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """load-shared messages as swanctl.conf's ``secrets`` section: the message's id names the
    section (its ``ntlm-`` prefix is how swanctl knows the type), its owners become ``id``
    and the hash is written in hex."""
    sections: dict[str, Any] = {}
    for message in shared:
        if message["type"] != "NTLM" or not message["id"].startswith("ntlm"):
            raise ValueError(f"no swanctl.conf form for the secret {message['id']}")
        sections[message["id"]] = {"id": message["owners"], "secret": "0x" + message["data"].hex()}
    return sections


def nftables_conf(plan: Plan) -> str:
    nat66 = plan.pool_v6 is not None and plan.pool_v6_egress is V6Egress.NAT66
    fenced = plan.fence
    return render_template(
        "nftables.conf.j2",
        pool_v4=plan.pool_v4,
        egress=plan.egress_interface,
        mss=defaults.TCP_MSS,
        pool_v6=plan.pool_v6,
        mss_v6=defaults.TCP_MSS_V6,
        # NAT66 masquerades out of the IPv6 egress; routed and NDP-proxied pools leave as is.
        nat66_egress=plan.egress_interface_v6 if nat66 else None,
        client_isolation=plan.client_isolation,
        allow_server_access=plan.allow_server_access,
        allow_link_local=plan.allow_link_local,
        fence_v4=[entry for entry in fenced if entry.network.version == 4],
        # Without an IPv6 pool no client sends IPv6 through the tunnel.
        fence_v6=[entry for entry in fenced if entry.network.version == 6 and plan.pool_v6],
        from_tunnel=_FROM_TUNNEL[plan.backend.backend],
        split=bool(plan.split),
        split_v4=[str(net) for net in plan.split if net.version == 4],
        split_v6=[str(net) for net in plan.split if net.version == 6],
    )


# How decrypted client traffic is recognised: it leaves kernel-libipsec's TUN device, or it
# carries the kernel's IPsec secpath (the nftables form of iptables' "-m policy --pol ipsec").
_FROM_TUNNEL = {Backend.USERSPACE: 'iifname "ipsec0"', Backend.KERNEL: "meta ipsec exists"}


def client_access(plan: Plan) -> str:
    """What the ruleset lets VPN clients reach, in one line for the start-up log."""

    def say(allowed: bool) -> str:
        return "yes" if allowed else "no"

    nat = "NAT" if plan.pool_v6 is None else f"IPv4: NAT, IPv6: {plan.pool_v6_egress}"
    return (
        f"VPN clients may reach: {_behind(plan, nat)}; "
        f"each other {_each_other(plan)}; "
        f"services of this container {say(plan.allow_server_access)} "
        "(VPN_ALLOW_SERVER_ACCESS); "
        f"link-local addresses and cloud metadata {say(plan.allow_link_local)} "
        "(VPN_ALLOW_LINK_LOCAL); "
        f"fenced off (VPN_CLIENT_DENY): {_fenced(plan)}"
        + (
            f"; allowed back (VPN_CLIENT_ALLOW): {', '.join(map(str, plan.client_allow))}"
            if plan.client_allow
            else ""
        )
    )


def _behind(plan: Plan, nat: str) -> str:
    if not plan.split:
        return f"the networks behind the server yes ({nat})"
    nets = ", ".join(map(str, plan.split))
    return f"only the split networks and DNS servers {nets} (VPN_SPLIT_NETS; {nat})"


def _each_other(plan: Plan) -> str:
    if plan.client_isolation:
        return "no (VPN_CLIENT_ISOLATION)"
    if plan.split and not any(client_fence.within(plan.pool_v4, net) for net in plan.split):
        return "no (VPN_SPLIT_NETS leaves out VPN_POOL_V4)"
    return "yes (VPN_CLIENT_ISOLATION)"


def _fenced(plan: Plan) -> str:
    """The fence's ranges as named (before VPN_CLIENT_ALLOW cut holes into them); IPv6 ones
    only when clients have IPv6."""
    shown = [fenced for fenced in plan.fence if fenced.network.version == 4 or plan.pool_v6]
    named = dict.fromkeys(f"{fenced.entry} ({fenced.why})" for fenced in shown)
    return ", ".join(named) or "nothing"


@dataclass(frozen=True)
class Connection:
    """One connection: its VICI message, which swanctl.conf also writes out."""

    name: str
    host: str
    proposals: Proposals
    pools: tuple[str, ...] = ()
    with_certificate: bool = True
    eap_id: str = "%any"
    groups: tuple[str, ...] = ()
    remote_addrs: tuple[str, ...] = ()
    unique: str = "never"
    remote_auth: str = "eap-mschapv2"  # "eap-radius": RADIUS checks the password
    child: str = defaults.CONNECTION_NAME
    dpd_delay: str = defaults.DPD_DELAY
    rekey_time: str = defaults.SERVER_REKEY_TIME
    local_ts: tuple[str, ...] = ("0.0.0.0/0",)

    def vici(self, certificate: bytes | str) -> dict[str, Any]:
        """The load-conn message, with the leaf's PEM as ``certificate``; swanctl.conf writes
        the same dict with the leaf's file name instead (keys in the file's reading order)."""
        connection: dict[str, Any] = {"version": "2"}
        if self.remote_addrs:
            connection["remote_addrs"] = list(self.remote_addrs)
        connection["proposals"] = list(self.proposals.ike)
        if self.pools:
            connection["pools"] = list(self.pools)
        local: dict[str, Any] = {"auth": "pubkey", "id": self.host}
        if self.with_certificate:
            local["certs"] = [certificate]
        remote: dict[str, Any] = {"auth": self.remote_auth, "eap_id": self.eap_id}
        if self.groups:
            remote["groups"] = list(self.groups)
        connection |= {
            "send_cert": "always",
            "unique": self.unique,
            "fragmentation": "yes",
            "mobike": "yes",
            "dpd_delay": self.dpd_delay,
            "rekey_time": self.rekey_time,
            "local": local,
            "remote": remote,
            "children": {
                self.child: {
                    "local_ts": list(self.local_ts),
                    "esp_proposals": list(self.proposals.esp),
                    "dpd_action": "clear",
                    "rekey_time": self.rekey_time,
                }
            },
        }
        return {self.name: connection}


def _generic(plan: Plan) -> Connection:
    return Connection(
        defaults.CONNECTION_NAME,
        plan.host,
        proposals(plan.proposals, plan.backend.esp_gcm),
        pools=tuple(
            pool.name
            for pool in (*dynamic_pools(plan.pool_v4, plan.pool_v4_static), *v6_pools(plan.pool_v6))
        ),
        remote_auth="eap-mschapv2" if plan.radius is None else "eap-radius",
        dpd_delay=f"{plan.dpd_delay}s",
        local_ts=traffic_selectors(plan.pool_v6, plan.split),
    )


def _identify(plan: Plan) -> Connection | None:
    if plan.pool_v4_static is None:
        return None
    return Connection(
        defaults.IDENTIFY_CONNECTION,
        plan.host,
        proposals(plan.proposals, plan.backend.esp_gcm),
        groups=(defaults.IDENTIFY_GROUP,),
        remote_addrs=RANK_IDENTIFY,
        dpd_delay=f"{plan.dpd_delay}s",
    )


def _static(static: StaticAddress, users: UsersPlan) -> Connection:
    """Only ``static.user`` is accepted, and gets only ``static.address``. A new login of
    the user replaces the old one: there is one address, so one device at a time. No
    certificate: ``identify`` always authenticates the server first."""
    return Connection(
        static.connection,
        users.host,
        users.proposals,
        pools=(static.pool, *(pool.name for pool in v6_pools(users.pool_v6))),
        with_certificate=False,
        eap_id=static.user,
        remote_addrs=RANK_STATIC,
        unique="replace",
        dpd_delay=f"{users.dpd_delay}s",
        local_ts=traffic_selectors(users.pool_v6, users.split),
    )


def vici_config(plan: Plan) -> ViciConfig:
    """The configuration as VICI messages; swanctl_conf() and users_conf() write them out."""
    users = vici_users(plan.users())
    return ViciConfig(
        authorities=tuple(plan.credentials.authority_pems()),
        key={"type": "any", "data": plan.credentials.key_pem},
        shared=users.shared,
        pools={**_pools(plan), **users.pools},
        connection=_connections(plan, plan.credentials.leaf_pem()),
        static_connections=users.connections,
    )


def _connections(plan: Plan, certificate: bytes | str) -> dict[str, Any]:
    """The connections that carry the server certificate (its PEM, or its file name)."""
    connections = _generic(plan).vici(certificate)
    identify = _identify(plan)
    if identify is not None:
        connections |= identify.vici(certificate)
    return connections


def _pools(plan: Plan) -> dict[str, Any]:
    """The dynamic pools: IPv4 (with the DNS servers), then IPv6."""
    dynamic = dynamic_pools(plan.pool_v4, plan.pool_v4_static)
    return {
        **{pool.name: _pool(pool.addrs, plan.dns) for pool in dynamic},
        **{pool.name: _pool(pool.addrs, ()) for pool in v6_pools(plan.pool_v6)},
    }


@dataclass(frozen=True)
class UsersVici:
    shared: tuple[dict[str, Any], ...]  # load-shared, one per account
    pools: dict[str, Any]  # load-pool, one pool per static IP
    connections: dict[str, Any]  # load-conn, one connection per static IP


def vici_users(users: UsersPlan) -> UsersVici:
    connections: dict[str, Any] = {}
    pools: dict[str, Any] = {}
    for static in users.static:
        connections.update(static_connection(static, users))
        pools.update(static_pool(static, users.dns))
    return UsersVici(
        shared=tuple(shared_secret(account) for account in users.accounts),
        pools=pools,
        connections=connections,
    )


def shared_secret(account: Account) -> dict[str, Any]:
    """The load-shared message of one account (its NT hash, under a stable id)."""
    return {
        "id": _secret_name(account),
        "type": "NTLM",
        "data": nt_hash(account.password),
        "owners": [account.name],
    }


def secret_id(name: str) -> str:
    """The id charon knows an account's secret by (for unload-shared)."""
    return "ntlm-" + name.encode().hex()


def static_pool(static: StaticAddress, dns: tuple[IPAddress, ...]) -> dict[str, Any]:
    return {static.pool: _pool(f"{static.address}/32", dns)}


def static_connection(static: StaticAddress, users: UsersPlan) -> dict[str, Any]:
    return _static(static, users).vici(b"")


def _pool(addrs: str, dns: tuple[IPAddress, ...]) -> dict[str, Any]:
    """A pool; its DNS servers (of both families) go to every client of a connection that
    lists it. The IPv6 pool carries none: the IPv4 pools already push them all."""
    pool: dict[str, Any] = {"addrs": addrs}
    if dns:
        pool["dns"] = [str(server) for server in dns]
    return pool
