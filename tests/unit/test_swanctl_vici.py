"""swanctl.conf (with conf.d/users.conf) says exactly what the VICI messages load into charon.

The file is read back with a small parser of swanctl's syntax and compared, section by section,
with the messages, the way swanctl itself turns a file into messages: values are written
comma-separated, the certificate by file name, a ``secrets`` subsection named ``ntlm*`` is an
NTLM secret whose ``id`` lists its owners. Anything only one of them has fails the test.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from planfactory import KERNEL, account, make_plan
from pydantic import SecretStr
from swanctl_syntax import Section, swanctl

from ikev2_vpn import defaults, render
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.settings import Backend, ProposalSet, RadiusServer, V6Egress

USERS = (account("alice", "correct horse"), account("dave@example.com", "Dave pw ü"))
STATIC = (render.StaticAddress("dave@example.com", ipaddress.IPv4Address("10.10.10.200")),)
STATIC_BLOCK = ipaddress.IPv4Network("10.10.10.192/26")
RADIUS = render.RadiusPlan(
    servers=(RadiusServer(host="radius1.example.com"),),
    secret=SecretStr("radius secret"),
    nas_identifier="vpn.example.com",
)
PLANS: dict[str, dict[str, Any]] = {
    "local users": {"accounts": USERS},
    "static IPs": {"accounts": USERS, "pool_v4_static": STATIC_BLOCK, "static": STATIC},
    "RADIUS": {"radius": RADIUS},
    "IPv6 with static IPs": {
        "accounts": USERS,
        "pool_v4_static": STATIC_BLOCK,
        "static": STATIC,
        "pool_v6": ipaddress.IPv6Network("fd00:1::/112"),
        "pool_v6_egress": V6Egress.ROUTED,
        "egress_interface_v6": "eth0",
        "dns": (ipaddress.ip_address("1.1.1.1"), ipaddress.ip_address("2606:4700:4700::1111")),
    },
    "legacy proposals, kernel without GCM": {
        "accounts": USERS,
        "proposals": ProposalSet.COMPATIBLE,
        "backend": BackendChoice(Backend.KERNEL, "test", esp_gcm=False),
    },
    "modern proposals, kernel": {
        "accounts": USERS,
        "proposals": ProposalSet.MODERN,
        "backend": KERNEL,
    },
    "no DNS, tuned DPD": {"accounts": USERS[:1], "dns": (), "dpd_delay": 7, "backend": KERNEL},
}


def as_written(value: Any, leaf_pem: bytes) -> Any:
    """A VICI value as swanctl.conf writes it: lists comma-separated, the leaf by file name."""
    if isinstance(value, dict):
        return {key: as_written(item, leaf_pem) for key, item in value.items()}
    if isinstance(value, list):
        return ", ".join(as_written(item, leaf_pem) for item in value)
    if isinstance(value, bytes):
        assert value == leaf_pem, "only the certificate may go over VICI as bytes"
        return render.LEAF_FILE
    assert isinstance(value, str)
    return value


def secrets_section(shared: tuple[dict[str, Any], ...]) -> Section:
    sections: Section = {}
    for message in shared:
        assert message["type"] == "NTLM"
        assert message["id"].startswith("ntlm"), "swanctl takes a secret's type from its name"
        sections[message["id"]] = {
            "id": ", ".join(message["owners"]),
            "secret": "0x" + message["data"].hex(),
        }
    return sections


@pytest.mark.parametrize("fields", PLANS.values(), ids=PLANS.keys())
def test_swanctl_conf_is_the_vici_messages(fields: dict[str, Any]) -> None:
    plan = make_plan(**fields)
    vici = render.vici_config(plan)
    leaf = plan.credentials.leaf_pem()

    assert swanctl(plan) == {
        "connections": as_written({**vici.connection, **vici.static_connections}, leaf),
        "pools": as_written(vici.pools, leaf),
        "secrets": secrets_section(vici.shared),
    }


def test_the_comparison_sees_a_setting_only_the_file_has() -> None:
    """The oracle itself: a connection setting written but not sent is a difference."""
    plan = make_plan(accounts=USERS)
    vici = render.vici_config(plan)
    written = swanctl(plan)
    written["connections"][defaults.CONNECTION_NAME]["mobike"] = "no"
    assert written["connections"] != as_written(vici.connection, plan.credentials.leaf_pem())


def test_the_readers_comments_are_in_the_file() -> None:
    """The comments keyed by path land on their lines (they are no part of the comparison)."""
    text = render.swanctl_conf(make_plan(pool_v4_static=STATIC_BLOCK, radius=RADIUS))
    lines = [line.strip() for line in text.splitlines()]
    assert lines[lines.index("send_cert = always") - 1] == (
        "# Apple clients send no certificate request: always send the certificate."
    )
    assert lines[lines.index("auth = eap-radius") - 1] == (
        "# Users live in RADIUS (VPN_RADIUS_SERVERS, see strongswan.conf)."
    )
    assert lines[lines.index(f"{defaults.IDENTIFY_CONNECTION} {{") - 1] == (
        f"# in users.conf, else to {defaults.CONNECTION_NAME}."
    )
    remote_addrs = next(n for n, line in enumerate(lines) if line.startswith("remote_addrs = "))
    assert lines[remote_addrs - 1].startswith("# Ranks this connection before")
