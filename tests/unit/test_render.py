"""Rendered configuration: what charon, swanctl and nft are given, and what clients then see."""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import certfactory
import pytest
from Cryptodome.Hash import MD4
from hypothesis import example, given, settings
from hypothesis import strategies as st
from planfactory import make_plan
from pydantic import SecretStr
from swanctl_syntax import Section, as_conf_value, flatten, parse_conf, swanctl

from ikev2_vpn import defaults, render
from ikev2_vpn.errors import ConfigErrors
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.settings import Account, Backend, ProposalSet, load_settings
from ikev2_vpn.state.credentials import ServerCredentials
from ikev2_vpn.state.users import nt_hash

HOST = "vpn.example.com"
CONN = defaults.CONNECTION_NAME
POOL = defaults.POOL_V4_NAME
KERNEL = BackendChoice(Backend.KERNEL, "the kernel accepted a test ESP state", esp_gcm=True)
KERNEL_NO_GCM = BackendChoice(Backend.KERNEL, "the kernel accepted a test ESP state", False)
USERSPACE = BackendChoice(Backend.USERSPACE, "the kernel cannot carry ESP", esp_gcm=True)


def account(name: str, password: str) -> Account:
    return Account(name=name, password=SecretStr(password), source="VPN_USERS")


@pytest.fixture(scope="module")
def credentials() -> ServerCredentials:
    return certfactory.own_ca_credentials()


@pytest.fixture(scope="module")
def plan(credentials: ServerCredentials) -> render.Plan:
    """A typical server; each test replaces what it is about."""
    return make_plan(
        host=HOST,
        accounts=(account("alice", "password"), account("bob@example.com", "clientPass")),
        credentials=credentials,
        dns=(ipaddress.ip_address("1.1.1.1"), ipaddress.ip_address("2606:4700:4700::1111")),
        egress_interface="eth1",
    )


def connection(plan: render.Plan) -> Section:
    section: Section = swanctl(plan)["connections"][CONN]
    return section


def listed(value: str) -> list[str]:
    return [item.strip() for item in value.split(",")]


# --- strongswan.conf -----------------------------------------------------------------------


def plugins(plan: render.Plan) -> list[str]:
    loaded: str = parse_conf(render.strongswan_conf(plan))["charon"]["load"]
    return loaded.split()


def test_userspace_backend_loads_libipsec_before_netlink(plan: render.Plan) -> None:
    loaded = plugins(replace(plan, backend=USERSPACE))
    assert loaded.index("kernel-libipsec!") < loaded.index("kernel-netlink")


def test_kernel_backend_leaves_libipsec_out(plan: render.Plan) -> None:
    loaded = plugins(replace(plan, backend=KERNEL))
    assert "kernel-netlink" in loaded
    assert not any(name.startswith("kernel-libipsec") for name in loaded)


@pytest.mark.parametrize("backend", [KERNEL, USERSPACE])
def test_charon_refuses_to_start_without_eap_mschapv2_or_vici(
    plan: render.Plan, backend: BackendChoice
) -> None:
    loaded = plugins(replace(plan, backend=backend))
    assert {"eap-mschapv2!", "eap-identity!", "vici!", "openssl!"} <= set(loaded)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_log_level_is_honoured(plan: render.Plan, level: int) -> None:
    conf = parse_conf(render.strongswan_conf(replace(plan, log_level=level)))
    stdout = conf["charon"]["filelog"]["stdout"]
    assert stdout["default"] == str(level)
    assert stdout["path"] == "/dev/stdout"


def test_strongswan_conf_says_which_backend_and_why(plan: render.Plan) -> None:
    text = render.strongswan_conf(replace(plan, backend=USERSPACE))
    assert "userspace (the kernel cannot carry ESP)" in text


# --- swanctl.conf --------------------------------------------------------------------------


def test_server_identity_and_certificate_always_sent(plan: render.Plan) -> None:
    conn = connection(plan)
    assert conn["local"] == {"auth": "pubkey", "id": HOST, "certs": render.LEAF_FILE}
    assert conn["send_cert"] == "always"
    assert conn["remote"] == {"auth": "eap-mschapv2", "eap_id": "%any"}


def test_ip_address_host_is_the_identity(plan: render.Plan) -> None:
    assert connection(replace(plan, host="203.0.113.7"))["local"]["id"] == "203.0.113.7"


def test_several_logins_per_account_mobike_fragmentation_dpd(plan: render.Plan) -> None:
    conn = connection(plan)
    assert conn["unique"] == "never"
    assert conn["mobike"] == "yes"
    assert conn["fragmentation"] == "yes"
    assert conn["dpd_delay"] == defaults.DPD_DELAY
    assert conn["children"][CONN]["dpd_action"] == "clear"


def test_full_tunnel_with_addresses_and_dns_from_the_pool(plan: render.Plan) -> None:
    conf = swanctl(replace(plan, pool_v4=ipaddress.IPv4Network("10.8.0.0/16")))
    assert conf["connections"][CONN]["children"][CONN]["local_ts"] == "0.0.0.0/0"
    assert conf["connections"][CONN]["pools"] == POOL
    assert conf["pools"][POOL] == {
        "addrs": "10.8.0.0/16",
        "dns": "1.1.1.1, 2606:4700:4700::1111",
    }


def test_server_never_starts_a_rekey(plan: render.Plan) -> None:
    """macOS and Windows drop the tunnel on a server-initiated rekey with a DH group."""
    conn = connection(plan)
    assert conn["rekey_time"] == "0"
    assert conn["children"][CONN]["rekey_time"] == "0"


def secrets(plan: render.Plan) -> dict[str, Section]:
    section: dict[str, Section] = swanctl(plan)["secrets"]
    return section


@pytest.mark.parametrize(
    ("password", "hash_hex"),
    [
        ("password", "8846f7eaee8fb117ad06bdd830b7586c"),
        ("clientPass", "44ebba8d5312b8d611474411f56989ae"),  # RFC 2759, section 9.2
    ],
)
def test_secret_is_the_nt_hash_of_the_password(
    plan: render.Plan, password: str, hash_hex: str
) -> None:
    [secret] = secrets(replace(plan, accounts=(account("alice", password),))).values()
    assert secret == {"id": "alice", "secret": "0x" + hash_hex}


def test_unicode_password_is_hashed_as_windows_does() -> None:
    """MSCHAPv2 clients hash the UTF-16LE password; widening UTF-8 bytes (charon's way with a
    plain EAP secret) would lock out anyone with a non-ASCII password."""
    password = "pässwörd€😀"
    expected = MD4.new(password.encode("utf-16-le")).digest()  # noqa: S303
    widened = MD4.new(bytes(b for c in password.encode() for b in (c, 0))).digest()  # noqa: S303
    assert nt_hash(SecretStr(password)) == expected
    assert expected != widened


def test_one_secret_per_user_with_valid_section_names(plan: render.Plan) -> None:
    names = ["alice", "alice.b", "alice_b", "a@example.com", "a+tag", "A-1", "x" * 64]
    users = tuple(account(name, f"pw-{name}") for name in names)
    found = secrets(replace(plan, accounts=users))  # parse_conf checks the section syntax
    assert [secret["id"] for secret in found.values()] == names
    assert all(section.startswith("ntlm") for section in found)
    assert [secret["secret"] for secret in found.values()] == [
        "0x" + nt_hash(SecretStr(f"pw-{name}")).hex() for name in names
    ]


@pytest.mark.parametrize(
    "password", ['"}\n}\nsecrets {', "# not a comment", "a = b", "\\x00\\n", "{ }", "\n\r\t"]
)
def test_password_never_reaches_the_file_as_text(plan: render.Plan, password: str) -> None:
    changed = replace(plan, accounts=(account("alice", password),))
    assert password not in render.swanctl_conf(changed)
    assert password not in render.users_conf(changed.users())
    assert secrets(replace(plan, accounts=(account("alice", password),))) == {
        "ntlm-" + b"alice".hex(): {
            "id": "alice",
            "secret": "0x" + nt_hash(SecretStr(password)).hex(),
        }
    }


# --- proposals -----------------------------------------------------------------------------


@pytest.mark.parametrize("esp_gcm", [True, False])
def test_compatible_adds_exactly_the_windows_legacy_suites(esp_gcm: bool) -> None:
    modern = render.proposals(ProposalSet.MODERN, esp_gcm)
    compatible = render.proposals(ProposalSet.COMPATIBLE, esp_gcm)
    assert compatible.ike == (*modern.ike, "aes256-sha256-modp1024")
    assert compatible.esp == (*modern.esp, "aes256-sha1")


WEAK = {"modp768", "modp1024", "modp1536", "3des", "des", "md5", "sha1", "null"}


@pytest.mark.parametrize("esp_gcm", [True, False])
def test_modern_offers_nothing_weak(esp_gcm: bool) -> None:
    chosen = render.proposals(ProposalSet.MODERN, esp_gcm)
    tokens = {token for proposal in chosen.ike + chosen.esp for token in proposal.split("-")}
    assert not tokens & WEAK


@pytest.mark.parametrize("esp_gcm", [True, False])
def test_esp_gcm_only_when_the_backend_carries_it(esp_gcm: bool) -> None:
    for choice in ProposalSet:
        chosen = render.proposals(choice, esp_gcm)
        assert any("gcm" in proposal for proposal in chosen.esp) is esp_gcm
        assert any("gcm" in proposal for proposal in chosen.ike)  # IKE is charon's own


@pytest.mark.parametrize("choice", list(ProposalSet))
def test_every_esp_proposal_makes_pfs_optional(choice: ProposalSet) -> None:
    """macOS rekeys without a DH group and Windows never sends one."""
    for proposal in render.proposals(choice, esp_gcm=True).esp:
        groups = parse_proposal(proposal)["ke"]
        assert not groups or "none" in groups, proposal


@pytest.mark.parametrize(
    ("choice", "esp_gcm", "expected_esp"),
    [
        (ProposalSet.COMPATIBLE, True, "aes256gcm16"),
        (ProposalSet.COMPATIBLE, False, "aes256-aes128"),
        (ProposalSet.MODERN, False, "aes256-aes128"),
    ],
)
def test_rendered_proposals_are_the_chosen_ones(
    plan: render.Plan, choice: ProposalSet, esp_gcm: bool, expected_esp: str
) -> None:
    backend = KERNEL if esp_gcm else KERNEL_NO_GCM
    conn = connection(replace(plan, proposals=choice, backend=backend))
    chosen = render.proposals(choice, esp_gcm)
    assert listed(conn["proposals"]) == list(chosen.ike)
    esp = listed(conn["children"][CONN]["esp_proposals"])
    assert esp == list(chosen.esp)
    assert esp[0].startswith(expected_esp)


# What each native client offers when set up by hand (docs/clients.md), as (encryption,
# integrity or None for AEAD, PRF or None for ESP, DH group or None).
Suite = tuple[str, str | None, str | None, str | None]


def _cbc(encs: list[str], integs: list[str], groups: list[str | None]) -> list[Suite]:
    return [(e, i, f"prf{i}", g) for e in encs for i in integs for g in groups]


def _esp(encs: list[str], integs: list[str | None], groups: list[str | None]) -> list[Suite]:
    return [(e, i, None, g) for e in encs for i in integs for g in groups]


@dataclass(frozen=True)
class Client:
    name: str
    ike: list[Suite]
    esp: list[Suite]


WINDOWS = Client(
    "Windows 7-11 defaults",
    _cbc(["3des", "aes128", "aes192", "aes256"], ["sha1", "sha256", "sha384"], ["modp1024"]),
    _esp(["aes256", "aes128", "3des", "des", "null"], ["sha1"], [None]),
)
WINDOWS_DH2048 = Client(
    "Windows NegotiateDH2048_AES256=2",
    _cbc(["aes256"], ["sha1", "sha256", "sha384"], ["modp2048"]),
    _esp(["aes256"], ["sha1"], [None]),
)
WINDOWS_POWERSHELL_GCM = Client(
    "Windows Set-VpnConnectionIPsecConfiguration GCMAES256/ECP384",
    [("aes256gcm16", None, "prfsha256", "ecp384")],
    _esp(["aes256gcm16"], [None], ["ecp384"]),
)
IOS = Client(
    "iOS 16.5",
    [
        *_cbc(["aes256"], ["sha256"], ["modp2048", "ecp256", "modp1536"]),
        *_cbc(["aes128"], ["sha1"], ["modp1024"]),
        *_cbc(["3des"], ["sha1"], ["modp1024"]),
    ],
    [
        *_esp(["aes256"], ["sha256"], [None, "modp2048"]),
        *_esp(["aes128", "3des"], ["sha1"], [None]),
    ],
)
MACOS = Client(
    "macOS 13.4",
    [suite for suite in IOS.ike if suite[3] != "ecp256"],
    [suite for suite in IOS.esp if suite[3] is None],  # rekeys without a DH group
)
ANDROID = Client(
    "Android 11+ built-in",
    [
        *[(e, None, "prfsha256", g) for e in ["aes256gcm16"] for g in ["modp2048", "ecp256"]],
        *_cbc(["aes256", "aes128"], ["sha256", "sha384"], ["modp2048", "ecp384"]),
    ],
    _esp(["aes256", "aes128"], ["sha256"], [None]),
)
ANDROID_GCM = replace(ANDROID, esp=_esp(["aes256gcm16"], [None], [None]))


def parse_proposal(proposal: str) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {"enc": set(), "integ": set(), "prf": set(), "ke": set()}
    for token in proposal.split("-"):
        if token.startswith("prf"):
            kinds["prf"].add(token)
        elif token.startswith(("modp", "ecp", "curve")) or token == "none":
            kinds["ke"].add(token)
        elif token.startswith(("sha", "md5", "aesxcbc")):
            kinds["integ"].add(token)
        else:
            kinds["enc"].add(token)
    return kinds


def accepts(proposal: str, suite: Suite, ike: bool) -> bool:
    kinds = parse_proposal(proposal)
    enc, integ, prf, group = suite
    prfs = kinds["prf"] or {f"prf{i}" for i in kinds["integ"]}
    return (
        enc in kinds["enc"]
        and (integ is None if "gcm" in enc else integ in kinds["integ"])
        and (not ike or prf in prfs)
        and (group in kinds["ke"] if group else not kinds["ke"] or "none" in kinds["ke"])
    )


def negotiated(server: tuple[str, ...], offers: list[Suite], ike: bool) -> str | None:
    """The proposal charon picks as responder: the client's first offer that one of the
    server's proposals accepts (prefer_configured_proposals = no)."""
    for suite in offers:
        for proposal in server:
            if accepts(proposal, suite, ike):
                return proposal
    return None


ALL_CLIENTS = [WINDOWS, WINDOWS_DH2048, WINDOWS_POWERSHELL_GCM, IOS, MACOS, ANDROID, ANDROID_GCM]


@pytest.mark.parametrize("client", ALL_CLIENTS, ids=lambda c: c.name)
def test_compatible_accepts_every_native_client_set_up_by_hand(client: Client) -> None:
    chosen = render.proposals(ProposalSet.COMPATIBLE, esp_gcm=True)
    assert negotiated(chosen.ike, client.ike, ike=True)
    assert negotiated(chosen.esp, client.esp, ike=False)


@pytest.mark.parametrize("client", [IOS, MACOS, ANDROID], ids=lambda c: c.name)
def test_clients_offering_strong_suites_never_get_the_legacy_ones(client: Client) -> None:
    chosen = render.proposals(ProposalSet.COMPATIBLE, esp_gcm=False)
    assert negotiated(chosen.ike, client.ike, ike=True) not in defaults.IKE_LEGACY
    assert negotiated(chosen.esp, client.esp, ike=False) not in defaults.ESP_LEGACY


def test_windows_defaults_get_the_legacy_suites_in_compatible_mode_only() -> None:
    compatible = render.proposals(ProposalSet.COMPATIBLE, esp_gcm=False)
    assert negotiated(compatible.ike, WINDOWS.ike, ike=True) == "aes256-sha256-modp1024"
    assert negotiated(compatible.esp, WINDOWS.esp, ike=False) == "aes256-sha1"
    modern = render.proposals(ProposalSet.MODERN, esp_gcm=False)
    assert negotiated(modern.ike, WINDOWS.ike, ike=True) is None  # "policy match error"


@pytest.mark.parametrize("client", [WINDOWS_DH2048, IOS, MACOS, ANDROID], ids=lambda c: c.name)
def test_modern_still_accepts_clients_with_strong_suites(client: Client) -> None:
    chosen = render.proposals(ProposalSet.MODERN, esp_gcm=False)
    assert negotiated(chosen.ike, client.ike, ike=True)
    if client is not WINDOWS_DH2048:  # its ESP stays SHA-1
        assert negotiated(chosen.esp, client.esp, ike=False)


# --- VICI and swanctl.conf carry the same configuration -------------------------------------


@pytest.mark.parametrize(
    ("choice", "backend"),
    [
        (ProposalSet.COMPATIBLE, USERSPACE),
        (ProposalSet.MODERN, KERNEL_NO_GCM),
        (ProposalSet.COMPATIBLE, KERNEL),
    ],
)
def test_vici_messages_match_swanctl_conf_field_by_field(
    plan: render.Plan, choice: ProposalSet, backend: BackendChoice
) -> None:
    plan = replace(plan, proposals=choice, backend=backend)
    conf = swanctl(plan)
    vici = render.vici_config(plan)

    from_file = flatten(conf["connections"])
    from_vici = flatten(vici.connection)
    assert from_file.pop(f"{CONN}.local.certs") == render.LEAF_FILE
    assert from_vici.pop(f"{CONN}.local.certs") == [plan.credentials.leaf_pem()]
    assert {key: as_conf_value(value) for key, value in from_vici.items()} == from_file

    assert {
        name: {key: as_conf_value(value) for key, value in pool.items()}
        for name, pool in vici.pools.items()
    } == conf["pools"]

    assert [
        {"id": shared["id"], "type": shared["type"], "owners": shared["owners"],
         "data": shared["data"]}
        for shared in vici.shared
    ] == [
        {"id": section, "type": "NTLM", "owners": [secret["id"]],
         "data": bytes.fromhex(secret["secret"].removeprefix("0x"))}
        for section, secret in conf["secrets"].items()
    ]  # fmt: skip


def test_vici_loads_the_key_and_the_ca(plan: render.Plan, credentials: ServerCredentials) -> None:
    vici = render.vici_config(plan)
    assert vici.key == {"type": "any", "data": credentials.key_pem}
    assert vici.authorities == tuple(credentials.authority_pems())
    assert len(vici.authorities) == 1


# --- static IPs (VPN_POOL_V4_STATIC) ------------------------------------------------------------

BLOCK = ipaddress.IPv4Network("10.10.10.192/26")
DAVE = render.StaticAddress("dave.x@example.com", ipaddress.IPv4Address("10.10.10.200"))


def span(pool: render.Pool) -> tuple[int, int]:
    first, _, last = pool.addrs.partition("-")
    return int(ipaddress.IPv4Address(first)), int(ipaddress.IPv4Address(last))


@pytest.mark.parametrize(
    ("pool", "block"),
    [
        ("10.10.10.0/24", "10.10.10.192/26"),
        ("10.10.10.0/24", "10.10.10.0/26"),
        ("10.10.10.0/24", "10.10.10.64/27"),
        ("10.0.0.0/8", "10.200.0.0/16"),
        ("10.10.10.0/29", "10.10.10.4/30"),
        ("10.10.10.0/30", "10.10.10.2/31"),
    ],
)
def test_dynamic_pools_are_the_pool_minus_the_static_block(pool: str, block: str) -> None:
    network, reserved = ipaddress.IPv4Network(pool), ipaddress.IPv4Network(block)
    pools = render.dynamic_pools(network, reserved)
    assert 1 <= len(pools) <= 2
    assert pools[0].name == POOL  # the health check looks for it
    spans = [span(p) for p in pools]
    hosts = (int(network.network_address) + 1, int(network.broadcast_address) - 1)
    kept = (int(reserved.network_address), int(reserved.broadcast_address))
    for first, last in spans:
        assert hosts[0] <= first <= last <= hosts[1]
        assert last < kept[0] or first > kept[1]  # never a reserved address
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))  # no overlap
    reserved_hosts = min(hosts[1], kept[1]) - max(hosts[0], kept[0]) + 1
    total = sum(last - first + 1 for first, last in spans)
    assert total == hosts[1] - hosts[0] + 1 - reserved_hosts  # every other address


def test_without_a_static_block_the_pool_is_the_whole_network() -> None:
    pool = ipaddress.IPv4Network("10.10.10.0/24")
    assert render.dynamic_pools(pool, None) == (render.Pool(POOL, "10.10.10.0/24"),)


@pytest.fixture(scope="module")
def static_plan(plan: render.Plan) -> render.Plan:
    dave = account(DAVE.user, "Dave-pw")
    return replace(plan, accounts=(*plan.accounts, dave), pool_v4_static=BLOCK, static=(DAVE,))


def rank(connection: Section) -> int:
    """How specific charon finds a connection's remote_addrs (larger: picked earlier)."""
    addrs = connection.get("remote_addrs")
    if addrs is None:
        return 0
    return min(ipaddress.ip_network(net).prefixlen for net in listed(addrs)) + 1


def test_static_ips_identify_first_then_the_user_then_everyone(static_plan: render.Plan) -> None:
    conns = swanctl(static_plan)["connections"]
    generic, identify = conns[CONN], conns[defaults.IDENTIFY_CONNECTION]
    static = conns[DAVE.connection]
    assert rank(identify) > rank(static) > rank(generic) == 0
    # identify asks every client for its EAP identity and accepts none of them
    assert identify["remote"] == {
        "auth": "eap-mschapv2",
        "eap_id": "%any",
        "groups": defaults.IDENTIFY_GROUP,
    }
    assert "pools" not in identify
    assert identify["local"]["certs"] == render.LEAF_FILE
    # the user's own connection: only that identity, only its address, one device at a time
    assert static["remote"] == {"auth": "eap-mschapv2", "eap_id": DAVE.user}
    assert static["pools"] == DAVE.pool
    assert static["unique"] == "replace"
    assert "certs" not in static["local"]
    assert static["children"] == generic["children"]
    assert static["proposals"] == generic["proposals"] == identify["proposals"]
    # everyone else: the dynamic ranges only
    assert listed(generic["pools"]) == [POOL, f"{POOL}-2"] or listed(generic["pools"]) == [POOL]
    pools = swanctl(static_plan)["pools"]
    assert pools[DAVE.pool]["addrs"] == "10.10.10.200/32"
    assert pools[POOL]["addrs"] == "10.10.10.1-10.10.10.191"


def test_without_a_static_block_there_is_no_identify_connection(plan: render.Plan) -> None:
    assert list(swanctl(plan)["connections"]) == [CONN]
    assert list(render.vici_config(plan).connection) == [CONN]
    assert render.vici_config(plan).static_connections == {}


def test_static_connection_names_are_valid_and_distinct() -> None:
    names = ["a.b", "a_b", "a_2eb", "A-1", "x@y.z", "a+b"]
    sections = [render.section_name(name) for name in names]
    assert len(set(sections)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", section) for section in sections)
    assert render.section_name("dave") == "dave"


def test_vici_messages_match_swanctl_conf_with_static_ips(static_plan: render.Plan) -> None:
    conf = swanctl(static_plan)
    vici = render.vici_config(static_plan)
    from_file = flatten(conf["connections"])
    from_vici = flatten({**vici.connection, **vici.static_connections})
    for name in (CONN, defaults.IDENTIFY_CONNECTION):
        assert from_file.pop(f"{name}.local.certs") == render.LEAF_FILE
        assert from_vici.pop(f"{name}.local.certs") == [static_plan.credentials.leaf_pem()]
    assert {key: as_conf_value(value) for key, value in from_vici.items()} == from_file
    assert {
        name: {key: as_conf_value(value) for key, value in pool.items()}
        for name, pool in vici.pools.items()
    } == conf["pools"]
    # The certificate renewal replaces vici.connection: every connection that carries it.
    assert set(vici.connection) == {CONN, defaults.IDENTIFY_CONNECTION}


def test_the_users_part_alone_matches_what_the_live_command_loads(
    static_plan: render.Plan,
) -> None:
    users = static_plan.users()
    live = render.vici_users(users)
    assert live.connections == render.static_connection(DAVE, users)
    assert live.pools == render.static_pool(DAVE, users.dns)
    assert [s["id"] for s in live.shared] == [render.secret_id(a.name) for a in users.accounts]
    assert "Dave-pw" not in render.users_conf(users)


# --- nftables ------------------------------------------------------------------------------


def ruleset_lines(plan: render.Plan) -> list[str]:
    text = render.nftables_conf(plan)
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def chain(plan: render.Plan, name: str) -> list[str]:
    lines = ruleset_lines(plan)
    start = lines.index(f"chain {name} {{")
    return lines[start + 1 : lines.index("}", start)]


def test_ruleset_replaces_its_own_table_idempotently(plan: render.Plan) -> None:
    """`table` then `delete table`: works whether or not the table exists already."""
    assert ruleset_lines(plan)[:3] == [
        "table inet ikev2_vpn",
        "delete table inet ikev2_vpn",
        "table inet ikev2_vpn {",
    ]


def test_only_the_pool_is_masqueraded_out_of_the_egress_interface(plan: render.Plan) -> None:
    plan = replace(plan, pool_v4=ipaddress.IPv4Network("10.99.0.0/16"), egress_interface="ens5")
    nat = chain(plan, "postrouting")
    assert nat[0] == "type nat hook postrouting priority srcnat; policy accept;"
    assert nat[1:] == ['ip saddr 10.99.0.0/16 ip daddr != 10.99.0.0/16 oifname "ens5" masquerade']
    assert "eth0" not in render.nftables_conf(plan)


@pytest.mark.parametrize(
    ("backend", "from_tunnel"),
    [(Backend.USERSPACE, 'iifname "ipsec0"'), (Backend.KERNEL, "meta ipsec exists")],
)
def test_forwarding_is_limited_to_the_pool_out_of_a_tunnel(
    plan: render.Plan, backend: Backend, from_tunnel: str
) -> None:
    """A pool source alone is not enough: a spoofed one arriving in the clear is dropped."""
    plan = replace(plan, backend=BackendChoice(backend, "test", esp_gcm=True))
    assert chain(plan, "forward")[0] == "type filter hook forward priority filter; policy accept;"
    assert chain(plan, "forward")[-4:] == [
        f"{from_tunnel} ip saddr 10.10.10.0/24 accept",
        "ip daddr 10.10.10.0/24 ct state established,related accept",
        "ip saddr 10.10.10.0/24 drop",
        "ip daddr 10.10.10.0/24 drop",
    ]


def test_tcp_mss_is_clamped_both_ways(plan: render.Plan) -> None:
    rules = chain(plan, "clamp_mss")[1:]
    assert len(rules) == 2
    assert {rule.split()[1] for rule in rules} == {"saddr", "daddr"}
    for rule in rules:
        assert "10.10.10.0/24" in rule
        assert rule.endswith("tcp option maxseg size > 1360 tcp option maxseg size set 1360")


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_nft_accepts_the_ruleset(plan: render.Plan) -> None:
    result = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=render.nftables_conf(plan),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- from the environment to swanctl.conf: nothing can be injected -------------------------

_CHARS = st.one_of(
    st.sampled_from([*" \t\n\r:.@+-_{}#;\"'\\%,/=[]", "0", "1", "a", "é", "€", "\u2028", "\x85"]),
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
)
_TEXT = st.text(_CHARS, max_size=30)
_VALID_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,8}", fullmatch=True)
_NAMES = st.one_of(_VALID_NAMES, _VALID_NAMES, _VALID_NAMES, _TEXT)
_PASSWORDS = st.text(_CHARS, min_size=1, max_size=20)
_PAIRS = st.lists(st.tuples(_NAMES, _PASSWORDS), max_size=3)


def _sometimes(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly valid (or empty, which means unset) values, so that many examples get rendered."""
    return st.one_of(st.just(""), valid, valid, _TEXT)


_ENV = st.fixed_dictionaries(
    {
        "VPN_HOST": _sometimes(
            st.ip_addresses(network="203.0.113.0/24").map(str)
            | st.ip_addresses(network="2001:db8::/32").map(str)
            | st.sampled_from(["vpn.example.com", "Vpn.Example.org."])
        )
        | st.builds("fe80::1%{}".format, _TEXT),
        "VPN_USERS": _sometimes(
            _PAIRS.map(lambda pairs: " ".join(f"{name}:{password}" for name, password in pairs))
        ),
        "VPN_DNS": _sometimes(st.lists(st.ip_addresses().map(str), max_size=3).map(",".join)),
        "VPN_POOL_V4": _sometimes(st.sampled_from(["10.1.0.0/16", "192.168.5.0/24", "8.8.8.0/24"])),
    }
)
_USERS_FILE = (
    st.none()
    | _TEXT
    | _PAIRS.map(lambda pairs: "".join(f"{name}:{password}\n" for name, password in pairs))
)


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("users") / "users"


@settings(max_examples=300, deadline=None)
@given(env=_ENV, users_text=_USERS_FILE)
@example(
    env={
        "VPN_HOST": "fe80::1%x\n}\nfoo {",
        "VPN_USERS": "",
        "VPN_DNS": "fe80::1%}",
        "VPN_POOL_V4": "",
    },
    users_text=None,
)
@example(
    env={"VPN_HOST": "", "VPN_USERS": "a:}\n{ b:#x", "VPN_DNS": "", "VPN_POOL_V4": ""},
    users_text="c:x\u2028d:y\n",
)
def test_any_input_is_refused_cleanly_or_rendered_without_injection(
    plan: render.Plan, users_file: Path, env: dict[str, str], users_text: str | None
) -> None:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("VPN_")}
    environment.update(env)
    if users_text is not None:
        users_file.write_text(users_text, encoding="utf-8", newline="")
        environment["VPN_USERS_FILE"] = str(users_file)
    with mock.patch.dict(os.environ, environment, clear=True):
        try:
            loaded = load_settings()
        except ConfigErrors as exc:
            assert all("\n" not in error.line() for error in exc.errors)
            return

    rendered = replace(
        plan,
        host=loaded.host or HOST,
        accounts=loaded.accounts(),
        dns=loaded.dns,
        pool_v4=loaded.pool_v4,
    )
    conf = swanctl(rendered)  # fails on any line outside the grammar
    assert conf["connections"][CONN]["local"]["id"] == rendered.host
    assert conf["pools"][POOL] == {
        "addrs": str(loaded.pool_v4),
        "dns": ", ".join(str(server) for server in loaded.dns),
    }
    assert [(s["id"], s["secret"]) for s in conf.get("secrets", {}).values()] == [
        (a.name, "0x" + nt_hash(a.password).hex()) for a in rendered.accounts
    ]


def test_dpd_delay_reaches_every_connection(plan: render.Plan) -> None:
    """VPN_DPD_DELAY: the generic, identify and static connections, in VICI and in text."""
    static = render.StaticAddress("dave", ipaddress.IPv4Address("10.10.10.200"))
    tuned = replace(
        plan,
        dpd_delay=7,
        pool_v4_static=ipaddress.IPv4Network("10.10.10.192/26"),
        static=(static,),
    )
    config = render.vici_config(tuned)
    connections = {**config.connection, **config.static_connections}
    assert len(connections) == 3  # generic, identify, static
    assert {conn["dpd_delay"] for conn in connections.values()} == {"7s"}
    text = render.swanctl_conf(tuned) + render.users_conf(tuned.users())
    assert re.findall(r"dpd_delay = (\S+)", text) and set(
        re.findall(r"dpd_delay = (\S+)", text)
    ) == {"7s"}
    assert len(re.findall(r"dpd_delay = ", text)) == 3  # generic, identify, static-dave
