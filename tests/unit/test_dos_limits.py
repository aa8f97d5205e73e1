"""charon's IKE_SA_INIT flood protection: cookies early, hard limits above honest bursts."""

from __future__ import annotations

import ipaddress
import re

import pytest
from planfactory import make_plan
from pydantic import SecretStr

from ikev2_vpn import defaults, render
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.settings import Account, Backend

# The largest burst of honest logins from one carrier-NAT address the server must take
# without stalling (issue 6 benchmarks: 200 clients behind 4 addresses, bursts of 100).
CARRIER_NAT_BURST = 100


@pytest.fixture(scope="module")
def charon_settings() -> dict[str, str]:
    """The top-level ``charon { key = value }`` settings of a rendered strongswan.conf."""
    plan = make_plan(
        accounts=(Account(name="alice", password=SecretStr("pw"), source="VPN_USERS"),),
        dns=(ipaddress.ip_address("192.0.2.53"),),
        backend=BackendChoice(Backend.USERSPACE, "test", esp_gcm=True),
        egress_interface="eth1",
    )
    text = render.strongswan_conf(plan)
    charon = text[text.index("charon {") : text.index("filelog {")]
    return dict(re.findall(r"^    ([a-z_]+) = (\S+)$", charon, re.MULTILINE))


def test_every_dos_setting_reaches_charon(charon_settings: dict[str, str]) -> None:
    assert charon_settings["dos_protection"] == "yes"
    for name, value in defaults.DOS_CONFIG.items():
        assert charon_settings[name] == str(value)


def test_cookies_come_before_any_hard_limit() -> None:
    dos = defaults.DOS_CONFIG
    # charon raises block_threshold itself when it is not above the per-IP cookie threshold.
    assert dos["cookie_threshold_ip"] < dos["block_threshold"]
    assert dos["cookie_threshold"] < dos["init_limit_half_open"]


def test_one_carrier_nat_address_may_burst_without_being_dropped() -> None:
    dos = defaults.DOS_CONFIG
    assert dos["block_threshold"] >= CARRIER_NAT_BURST
    assert dos["init_limit_half_open"] >= 2 * dos["block_threshold"]


def test_half_open_timeout_covers_two_retransmits() -> None:
    # strongSwan retransmits after 4 s, then 7.2 s (base 4 s, factor 1.8).
    assert defaults.DOS_CONFIG["half_open_timeout"] > 4 + 7.2


def test_ike_sa_table_is_a_hash_table_with_segments() -> None:
    size, segments = (defaults.DOS_CONFIG[k] for k in ("ikesa_table_size", "ikesa_table_segments"))
    assert size & (size - 1) == 0 and segments & (segments - 1) == 0
    assert 1 < segments <= size


def test_failed_passwords_cannot_take_every_worker(charon_settings: dict[str, str]) -> None:
    """Each failed MSCHAPv2 password holds a worker for 2 s: many workers, and some kept for
    IKE_SA_INIT and DPD, which a login flood must not delay."""
    threads = int(charon_settings["threads"])
    assert threads == defaults.CHARON_THREADS >= 64
    assert sum(defaults.PRIORITY_THREADS.values()) <= threads // 8
    assert set(defaults.PRIORITY_THREADS) == {"high", "medium"}


def test_the_reserved_workers_reach_charon() -> None:
    plan = make_plan(
        accounts=(Account(name="alice", password=SecretStr("pw"), source="VPN_USERS"),),
        dns=(ipaddress.ip_address("192.0.2.53"),),
        backend=BackendChoice(Backend.USERSPACE, "test", esp_gcm=True),
        egress_interface="eth1",
    )
    text = render.strongswan_conf(plan)
    block = text[text.index("    processor {") : text.index("filelog {")]
    found = dict(re.findall(r"^            ([a-z]+) = (\d+)$", block, re.MULTILINE))
    assert found == {name: str(count) for name, count in defaults.PRIORITY_THREADS.items()}
