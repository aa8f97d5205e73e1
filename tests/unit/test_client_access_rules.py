"""What VPN clients may reach: the nftables rules behind VPN_CLIENT_ISOLATION,
VPN_ALLOW_SERVER_ACCESS and VPN_ALLOW_LINK_LOCAL, for every combination of the three.

nft itself checks the syntax in test_render.py (when installed) and in every end-to-end test,
since the container refuses to start with a ruleset nft rejects.
"""

from __future__ import annotations

import ipaddress
import itertools
import shutil
import subprocess
from dataclasses import replace

import pytest
from planfactory import make_plan

from ikev2_vpn import render
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.settings import Backend, ProposalSet

POOL = "10.10.10.0/24"
COMBINATIONS = list(itertools.product((False, True), repeat=3))
LINK_LOCAL_V4 = f"ip saddr {POOL} ip daddr 169.254.0.0/16 drop"
CLIENT_TO_CLIENT = f"ip saddr {POOL} ip daddr {POOL} drop"
TO_SERVER = f"ip saddr {POOL} drop"
ACCEPT = f'iifname "ipsec0" ip saddr {POOL} accept'  # userspace backend
# The rest of the pool's packets, after the accepts: the chain's policy accepts, so that it
# leaves alone what is not the pool's (a host's own forwarding under host networking).
POOL_DROPS = [f"ip saddr {POOL} drop", f"ip daddr {POOL} drop"]


@pytest.fixture(scope="module")
def base() -> render.Plan:
    return make_plan(
        host="vpn.example.test",
        pool_v4=ipaddress.IPv4Network(POOL),
        dns=(),
        backend=BackendChoice(Backend.USERSPACE, "test", esp_gcm=True),
        proposals=ProposalSet.MODERN,
        egress_interface="eth1",
    )


def chain(plan: render.Plan, name: str) -> list[str]:
    """The rules of one chain, without comments and the chain's own header."""
    lines = [
        line.strip()
        for line in render.nftables_conf(plan).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    start = lines.index(f"chain {name} {{")
    return lines[start + 2 : lines.index("}", start)]


def plan_for(base: render.Plan, isolation: bool, server: bool, link_local: bool) -> render.Plan:
    return replace(
        base,
        client_isolation=isolation,
        allow_server_access=server,
        allow_link_local=link_local,
    )


def test_defaults_are_the_closed_ones(base: render.Plan) -> None:
    """A plan built without the settings (older callers) gets the documented defaults."""
    assert (base.client_isolation, base.allow_server_access, base.allow_link_local) == (
        False,
        False,
        False,
    )
    assert chain(base, "forward") == [
        LINK_LOCAL_V4,
        ACCEPT,
        f"ip daddr {POOL} ct state established,related accept",
        *POOL_DROPS,
    ]
    assert chain(base, "input_from_clients") == [
        f"ip saddr {POOL} ct state established,related accept",
        LINK_LOCAL_V4,
        TO_SERVER,
    ]


@pytest.mark.parametrize(("isolation", "server", "link_local"), COMBINATIONS)
def test_each_setting_adds_or_removes_only_its_own_rules(
    base: render.Plan, isolation: bool, server: bool, link_local: bool
) -> None:
    plan = plan_for(base, isolation, server, link_local)
    forward = chain(plan, "forward")
    to_server = chain(plan, "input_from_clients")

    assert (CLIENT_TO_CLIENT in forward) is isolation
    assert (LINK_LOCAL_V4 in forward) is not link_local
    assert (LINK_LOCAL_V4 in to_server) is not link_local
    assert (TO_SERVER in to_server) is not server

    # The drops come before the accept they restrict; what stays is the same in every case.
    accept = forward.index(ACCEPT)
    assert all(rule.endswith(" drop") for rule in forward[:accept])
    assert forward[accept:] == [
        ACCEPT,
        f"ip daddr {POOL} ct state established,related accept",
        *POOL_DROPS,
    ]
    assert to_server[0] == f"ip saddr {POOL} ct state established,related accept"


@pytest.mark.parametrize(("isolation", "server", "link_local"), COMBINATIONS)
def test_ike_and_esp_from_anywhere_stay_open(
    base: render.Plan, isolation: bool, server: bool, link_local: bool
) -> None:
    """The input chain only ever matches the pool: clients' real addresses (IKE, NAT-T,
    ESP) and everyone else are left to the policy, which accepts."""
    plan = plan_for(base, isolation, server, link_local)
    text = render.nftables_conf(plan)
    header = "type filter hook input priority filter; policy accept;"
    assert header in text
    assert all(rule.startswith(f"ip saddr {POOL} ") for rule in chain(plan, "input_from_clients"))


def test_forwarding_of_others_is_left_alone(base: render.Plan) -> None:
    """Under host networking the forward hook also sees the host's other traffic (other
    containers, a router's own routes): every drop names the pool, and the policy accepts."""
    text = render.nftables_conf(base)
    assert "type filter hook forward priority filter; policy accept;" in text
    drops = [rule for rule in chain(base, "forward") if rule.endswith(" drop")]
    assert drops and all(POOL in rule for rule in drops)


def test_clients_are_not_masqueraded_towards_each_other(base: render.Plan) -> None:
    """With kernel IPsec, traffic between clients leaves by the egress interface too."""
    assert chain(base, "postrouting") == [
        f'ip saddr {POOL} ip daddr != {POOL} oifname "eth1" masquerade'
    ]


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
@pytest.mark.parametrize(("isolation", "server", "link_local"), COMBINATIONS)
def test_nft_accepts_every_combination(
    base: render.Plan, isolation: bool, server: bool, link_local: bool
) -> None:
    result = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=render.nftables_conf(plan_for(base, isolation, server, link_local)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_policy_is_logged_in_one_line(base: render.Plan) -> None:
    default = render.client_access(base)
    assert "\n" not in default
    assert "each other yes" in default
    assert "services of this container no" in default
    assert "cloud metadata no" in default
    flipped = render.client_access(plan_for(base, True, True, True))
    assert "each other no" in flipped
    assert "services of this container yes" in flipped
    assert "cloud metadata yes" in flipped
