"""Pure functions from the validated plan to configuration: no I/O, so all unit-testable.

One :class:`Plan` feeds every output: the strongswan.conf and swanctl.conf texts (Jinja2
templates in ``config/``), the nftables ruleset, and the VICI messages that load the same
configuration into charon. swanctl.conf is what an operator reads; loading the rendered file
with ``swanctl --load-all`` gives charon the same configuration (an end-to-end test checks).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from . import defaults
from .apply.backend import BackendChoice
from .settings import Account, Backend, IPAddress, ProposalSet
from .state.credentials import ServerCredentials
from .state.users import nt_hash

# Where apply writes the human-readable copies (standard swanctl locations).
SWANCTL_DIR = Path("/etc/swanctl")
LEAF_FILE = "server.crt"
KEY_FILE = "server.key"


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


@dataclass(frozen=True)
class Proposals:
    ike: tuple[str, ...]
    esp: tuple[str, ...]


@dataclass(frozen=True)
class ViciConfig:
    """The messages that load the configuration into charon, in order."""

    authorities: tuple[bytes, ...]  # load-cert with flag CA
    key: dict[str, Any]  # load-key
    shared: tuple[dict[str, Any], ...]  # load-shared, one per account
    pools: dict[str, Any]  # load-pool
    connection: dict[str, Any]  # load-conn


def proposals(choice: ProposalSet, esp_gcm: bool) -> Proposals:
    esp = ((defaults.ESP_STRONG_AEAD,) if esp_gcm else ()) + (defaults.ESP_STRONG_CBC,)
    if choice is ProposalSet.MODERN:
        return Proposals(defaults.IKE_STRONG, esp)
    return Proposals(defaults.IKE_STRONG + defaults.IKE_LEGACY, esp + defaults.ESP_LEGACY)


def charon_plugins(backend: Backend) -> tuple[str, ...]:
    """Only what this server uses. kernel-libipsec must precede kernel-netlink: the first
    plugin that registers an IPsec backend wins (kernel-netlink still handles routes).

    A trailing "!" marks a plugin charon must not start without (a missing package would
    otherwise only show up as failing logins).
    """
    ipsec = ("kernel-libipsec!",) if backend is Backend.USERSPACE else ()
    return (
        "random", "nonce", "openssl!", "pem", "pkcs1", "pkcs8", "x509!", "constraints", "pubkey",
        *ipsec, "kernel-netlink", "socket-default!", "vici!", "eap-identity!", "eap-mschapv2!",
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


def _render(template: str, **values: Any) -> str:
    return _templates().get_template(template).render(**values)


def _secret_name(account: Account) -> str:
    # swanctl section names allow only [A-Za-z0-9_-]; user names may also contain . @ +
    return "ntlm-" + account.name.encode().hex()


def strongswan_conf(plan: Plan) -> str:
    return _render(
        "strongswan.conf.j2",
        plugins=charon_plugins(plan.backend.backend),
        backend=plan.backend,
        log_level=plan.log_level,
        retransmit_tries=defaults.RETRANSMIT_TRIES,
    )


def swanctl_conf(plan: Plan) -> str:
    """The configuration as swanctl.conf. Secrets appear only as NT hashes in hex."""
    chosen = proposals(plan.proposals, plan.backend.esp_gcm)
    return _render(
        "swanctl.conf.j2",
        connection=defaults.CONNECTION_NAME,
        host=plan.host,
        proposals=chosen,
        pool_name=defaults.POOL_V4_NAME,
        pool_v4=plan.pool_v4,
        dns=plan.dns,
        leaf_file=LEAF_FILE,
        dpd_delay=defaults.DPD_DELAY,
        rekey_time=defaults.SERVER_REKEY_TIME,
        secrets=[
            {"section": _secret_name(a), "id": a.name, "hex": nt_hash(a.password).hex()}
            for a in plan.accounts
        ],
    )


def nftables_conf(plan: Plan) -> str:
    return _render(
        "nftables.conf.j2",
        pool_v4=plan.pool_v4,
        egress=plan.egress_interface,
        mss=defaults.TCP_MSS,
    )


def vici_config(plan: Plan) -> ViciConfig:
    """The same configuration as swanctl_conf(), as VICI messages."""
    chosen = proposals(plan.proposals, plan.backend.esp_gcm)
    child = {
        "local_ts": ["0.0.0.0/0"],
        "esp_proposals": list(chosen.esp),
        "dpd_action": "clear",
        "rekey_time": defaults.SERVER_REKEY_TIME,
    }
    connection = {
        "version": "2",
        "proposals": list(chosen.ike),
        "pools": [defaults.POOL_V4_NAME],
        "send_cert": "always",
        "unique": "never",
        "fragmentation": "yes",
        "mobike": "yes",
        "dpd_delay": defaults.DPD_DELAY,
        "rekey_time": defaults.SERVER_REKEY_TIME,
        "local": {"auth": "pubkey", "id": plan.host, "certs": [plan.credentials.leaf_pem()]},
        "remote": {"auth": "eap-mschapv2", "eap_id": "%any"},
        "children": {defaults.CONNECTION_NAME: child},
    }
    return ViciConfig(
        authorities=tuple(plan.credentials.authority_pems()),
        key={"type": "any", "data": plan.credentials.key_pem},
        shared=tuple(
            {
                "id": _secret_name(a),
                "type": "NTLM",
                "data": nt_hash(a.password),
                "owners": [a.name],
            }
            for a in plan.accounts
        ),
        pools={
            defaults.POOL_V4_NAME: {
                "addrs": str(plan.pool_v4),
                "dns": [str(server) for server in plan.dns],
            }
        },
        connection={defaults.CONNECTION_NAME: connection},
    )
