"""What charon is given when users live in RADIUS: the eap-radius plugin and its servers in
strongswan.conf, the shared secret only in a root-only file it includes, connections that
relay EAP to RADIUS; and a server without RADIUS exactly as before."""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from planfactory import make_plan
from pydantic import SecretStr
from swanctl_syntax import Section, parse_conf, swanctl

from ikev2_vpn import defaults, render
from ikev2_vpn.apply.files import write_radius_secrets
from ikev2_vpn.settings import RadiusServer, Settings, load_settings
from ikev2_vpn.state import server
from ikev2_vpn.state.users import STORE_NAME

CONN = defaults.CONNECTION_NAME
SECRET = 'Zq7 "radius" #secret {x} \\y'
SECRETS_FILE = str(defaults.RADIUS_SECRETS_FILE)


@pytest.fixture(scope="module")
def plan() -> render.Plan:
    return make_plan(
        host="vpn1.example.com",
        radius=render.RadiusPlan(
            servers=(
                RadiusServer(host="radius1.example.com"),
                RadiusServer(host="2001:db8::1812", auth_port=11812),
            ),
            secret=SecretStr(SECRET),
            nas_identifier="vpn1.example.com",
        ),
    )


# --- reading the quoted secret back as strongSwan does ----------------------------------------

_QUOTED = re.compile(r'secret = "((?:[^"\\\n]|\\.)*)"')


def unquote(value: str) -> str:
    """strongswan.conf's reading of a double-quoted value's escapes (\\" and \\\\)."""
    return re.sub(r"\\(.)", r"\1", value)


def secrets_of(text: str) -> list[str]:
    return [unquote(found) for found in _QUOTED.findall(text)]


def strongswan(plan: render.Plan) -> Section:
    """strongswan.conf with the secrets file merged in (its quoted values replaced)."""
    assert plan.radius is not None
    secrets = _QUOTED.sub("secret = hidden", render.radius_secrets_conf(plan.radius))
    return parse_conf(render.strongswan_conf(plan), {SECRETS_FILE: secrets})


def eap_radius(plan: render.Plan) -> Section:
    section: Section = strongswan(plan)["charon"]["plugins"]["eap-radius"]
    return section


# --- strongswan.conf -----------------------------------------------------------------------


def test_the_plugin_is_loaded_only_with_radius_and_then_required(plan: render.Plan) -> None:
    with_radius = parse_conf(render.strongswan_conf(replace(plan, radius=None)))
    assert "eap-radius" not in with_radius["charon"]["load"]
    assert "plugins" not in with_radius["charon"]
    assert "include" not in render.strongswan_conf(replace(plan, radius=None))
    loaded = strongswan(plan)["charon"]["load"].split()
    assert "eap-radius!" in loaded and "eap-identity!" in loaded
    assert not any(name.startswith("eap-mschapv2") for name in loaded)  # RADIUS checks


def test_every_server_with_its_ports_in_order(plan: render.Plan) -> None:
    assert eap_radius(plan)["servers"] == {
        "radius-1": {
            "address": "radius1.example.com",
            "auth_port": "1812",
            "acct_port": "1813",
            "secret": "hidden",
        },
        "radius-2": {
            "address": "2001:db8::1812",
            "auth_port": "11812",
            "acct_port": "11813",
            "secret": "hidden",
        },
    }


def test_one_accounting_port_for_all(plan: render.Plan) -> None:
    assert plan.radius is not None
    servers = eap_radius(replace(plan, radius=replace(plan.radius, accounting_port=1646)))[
        "servers"
    ]
    assert {server["acct_port"] for server in servers.values()} == {"1646"}


def test_accounting_on_with_interim_updates_and_a_bounded_wait(plan: render.Plan) -> None:
    section = eap_radius(plan)
    assert section["accounting"] == "yes"
    assert section["accounting_interval"] == "300s"
    assert section["accounting_close_on_timeout"] == "no"
    assert section["nas_identifier"] == "vpn1.example.com"
    # What a user waits when no server answers: the first send and every retransmit.
    tries, timeout = int(section["retransmit_tries"]), float(section["retransmit_timeout"])
    base = float(section["retransmit_base"])
    assert sum(timeout * base**attempt for attempt in range(tries)) < 10
    assert plan.radius is not None
    off = eap_radius(replace(plan, radius=replace(plan.radius, interim_interval=0)))
    assert off["accounting_interval"] == "0s"


def test_the_secret_is_only_in_its_file_and_read_back_exactly(plan: render.Plan) -> None:
    assert plan.radius is not None
    assert SECRET not in render.strongswan_conf(plan)
    assert f"include {SECRETS_FILE}" in render.strongswan_conf(plan)
    assert secrets_of(render.radius_secrets_conf(plan.radius)) == [SECRET, SECRET]


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=128))
def test_any_accepted_secret_is_one_quoted_value(secret: str) -> None:
    quoted = render.conf_string(secret)
    assert _QUOTED.fullmatch(f"secret = {quoted}"), quoted
    assert secrets_of(f"secret = {quoted}") == [secret]


def test_the_secrets_file_is_for_root_only(plan: render.Plan, tmp_path: Path) -> None:
    assert plan.radius is not None
    write_radius_secrets(render.radius_secrets_conf(plan.radius), root=tmp_path)
    path = tmp_path / SECRETS_FILE.lstrip("/")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert secrets_of(path.read_text()) == [SECRET, SECRET]


# --- connections ---------------------------------------------------------------------------


def test_the_connection_relays_eap_to_radius(plan: render.Plan) -> None:
    connection = swanctl(plan)["connections"][CONN]
    assert connection["remote"] == {"auth": "eap-radius", "eap_id": "%any"}
    assert not swanctl(plan).get("secrets")  # no local account
    message = render.vici_config(plan).connection[CONN]
    assert message["remote"] == {"auth": "eap-radius", "eap_id": "%any"}
    assert render.vici_config(plan).shared == ()


def test_without_radius_local_mschapv2_as_before(plan: render.Plan) -> None:
    local = replace(plan, radius=None)
    assert swanctl(local)["connections"][CONN]["remote"]["auth"] == "eap-mschapv2"
    assert render.vici_config(local).connection[CONN]["remote"]["auth"] == "eap-mschapv2"


def test_charon_names_map_back_to_the_settings(plan: render.Plan) -> None:
    assert plan.radius is not None
    assert plan.radius.server_names() == {
        "radius-1": "radius1.example.com:1812",
        "radius-2": "[2001:db8::1812]:11812",
    }


# --- start-up ----------------------------------------------------------------------------


def radius_settings(monkeypatch: pytest.MonkeyPatch, **extra: str) -> Settings:
    for name in list(os.environ):
        if name.upper().startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)
    for name, value in {
        "VPN_RADIUS_SERVERS": "radius1.example.com",
        "VPN_RADIUS_SECRET": SECRET,
        **extra,
    }.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_no_local_account_is_generated_and_stored_ones_are_set_aside(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(defaults, "DATA_DIR", tmp_path)
    settings = radius_settings(monkeypatch)
    with caplog.at_level(logging.INFO):
        assert server.accounts(settings).accounts == ()
    assert list(tmp_path.iterdir()) == []  # nothing generated
    assert caplog.messages == []
    (tmp_path / STORE_NAME).write_text("{}")
    with caplog.at_level(logging.INFO):
        assert server.accounts(settings).accounts == ()
    assert caplog.messages == [
        f"the users in {tmp_path / STORE_NAME} are not used: with VPN_RADIUS_SERVERS users "
        "live in RADIUS"
    ]


def test_the_nas_identifier_is_the_server_identity_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    radius = render.radius_plan(radius_settings(monkeypatch), "vpn-eu.example.com")
    assert radius is not None
    assert radius.nas_identifier == "vpn-eu.example.com"
    assert radius.secret.get_secret_value() == SECRET
    chosen = render.radius_plan(
        radius_settings(monkeypatch, VPN_RADIUS_NAS_IDENTIFIER="eu-1"), "vpn-eu.example.com"
    )
    assert chosen is not None and chosen.nas_identifier == "eu-1"
    monkeypatch.delenv("VPN_RADIUS_SERVERS")
    monkeypatch.delenv("VPN_RADIUS_SECRET")
    monkeypatch.delenv("VPN_RADIUS_NAS_IDENTIFIER")
    assert render.radius_plan(load_settings(), "vpn-eu.example.com") is None
