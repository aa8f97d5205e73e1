"""VPN accounts: declared, managed live, or generated at first start; the store in /data."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from ikev2_vpn import defaults
from ikev2_vpn.errors import ConfigError
from ikev2_vpn.settings import Account
from ikev2_vpn.state.users import (
    STORE_NAME,
    Origin,
    StoredUser,
    UserStore,
    load_store,
    locked,
    nt_hash,
    resolve_accounts,
    save_store,
    static_ip_problem,
    usable_static_ips,
)

DECLARED = (
    Account(name="alice", password=SecretStr("one"), source="VPN_USER"),
    Account(name="bob", password=SecretStr("two"), source="VPN_USERS"),
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def store(data_dir: Path) -> Path:
    return data_dir / STORE_NAME


def credentials(accounts: tuple[Account, ...]) -> list[tuple[str, str]]:
    return [(a.name, a.password.get_secret_value()) for a in accounts]


def test_first_start_generates_a_user_and_shows_it(data_dir: Path, store: Path) -> None:
    resolved = resolve_accounts((), data_dir)
    assert resolved.generated is not None
    assert resolved.accounts == (resolved.generated,)
    assert resolved.generated.name == defaults.GENERATED_USER
    assert store.stat().st_mode & 0o777 == 0o600


def test_generated_user_is_reused_and_not_shown_again(data_dir: Path) -> None:
    first = resolve_accounts((), data_dir)
    again = resolve_accounts((), data_dir)
    later = resolve_accounts((), data_dir)
    assert again.generated is None
    assert credentials(again.accounts) == credentials(first.accounts)
    assert credentials(later.accounts) == credentials(first.accounts)


def test_generated_password_is_long_and_easy_to_type(tmp_path: Path) -> None:
    passwords = set()
    for number in range(20):
        data_dir = tmp_path / str(number)
        data_dir.mkdir()
        generated = resolve_accounts((), data_dir).generated
        assert generated is not None
        password = generated.password.get_secret_value()
        assert len(password) == defaults.PASSWORD_LENGTH >= 16
        assert set(password) <= set(defaults.PASSWORD_ALPHABET)
        passwords.add(password)
    assert len(passwords) == 20
    assert not set("0O1lI") & set(defaults.PASSWORD_ALPHABET)  # look-alikes on a phone


def test_declared_users_win_and_the_store_is_left_untouched(data_dir: Path, store: Path) -> None:
    generated = resolve_accounts((), data_dir).generated
    assert generated is not None
    before = (store.read_bytes(), store.stat().st_mtime_ns)
    resolved = resolve_accounts(DECLARED, data_dir)
    assert resolved.accounts == DECLARED
    assert resolved.generated is None
    assert (store.read_bytes(), store.stat().st_mtime_ns) == before
    # Back to no declared user: the generated one comes back unchanged.
    assert credentials(resolve_accounts((), data_dir).accounts) == credentials((generated,))


def test_declared_users_are_not_written_to_data(data_dir: Path) -> None:
    resolve_accounts(DECLARED, data_dir)
    assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[]",
        '{"version": 1}',
        '{"version": 1, "users": ["vpnuser"]}',
        '{"version": 1, "users": {"vpnuser": {}}}',
        '{"version": 1, "users": {"vpnuser": "just-a-string"}}',
        '{"version": 1, "users": {"vpnuser": {"password": 12345}}}',
        '{"version": 1, "users": {"vpnuser": {"password": ""}}}',
        '{"version": 1, "users": {"vpn user\\n}": {"password": "x"}}}',
    ],
)
def test_corrupt_store_stops_the_start_and_is_kept(store: Path, content: str) -> None:
    store.write_text(content)
    with pytest.raises(ConfigError) as caught:
        resolve_accounts((), store.parent)
    assert caught.value.setting == str(store)
    assert "not a valid user store" in caught.value.problem
    assert "delete it" in caught.value.fix
    assert store.read_text() == content  # never overwritten with a new password


def test_store_that_is_not_text_stops_the_start(store: Path) -> None:
    store.write_bytes(b'{"users": {"vpnuser": {"password": "\xff\xfe"}}}')
    with pytest.raises(ConfigError, match="not a valid user store"):
        resolve_accounts((), store.parent)


def test_store_written_by_an_earlier_version_is_read(store: Path) -> None:
    store.write_text(json.dumps({"version": 1, "users": {"vpnuser": {"password": "kept €"}}}))
    resolved = resolve_accounts((), store.parent)
    assert credentials(resolved.accounts) == [("vpnuser", "kept €")]
    assert resolved.generated is None


def test_nt_hash_known_vectors() -> None:
    assert nt_hash(SecretStr("password")).hex() == "8846f7eaee8fb117ad06bdd830b7586c"
    assert nt_hash(SecretStr("clientPass")).hex() == "44ebba8d5312b8d611474411f56989ae"
    # UTF-16LE of what was typed, not byte-widened UTF-8 (what charon does with plain secrets)
    assert nt_hash(SecretStr("pässword")) != nt_hash(SecretStr("p\xc3\xa4ssword"))


# --- managed accounts and static IPs (store version 2) -----------------------------------------


def managed(name: str, password: str = "pw") -> StoredUser:  # noqa: S107
    return StoredUser(name, SecretStr(password), Origin.MANAGED)


def test_managed_users_join_the_declared_ones(data_dir: Path) -> None:
    save_store(data_dir, UserStore().with_user(managed("carol")))
    resolved = resolve_accounts(DECLARED, data_dir)
    assert [a.name for a in resolved.accounts] == ["alice", "bob", "carol"]
    assert resolved.generated is None


def test_no_user_is_generated_when_a_managed_one_exists(data_dir: Path) -> None:
    save_store(data_dir, UserStore().with_user(managed("carol")))
    resolved = resolve_accounts((), data_dir)
    assert [a.name for a in resolved.accounts] == ["carol"]
    assert resolved.generated is None


def test_generated_user_stays_beside_managed_ones_until_the_environment_declares_users(
    data_dir: Path,
) -> None:
    generated = resolve_accounts((), data_dir).generated
    assert generated is not None
    save_store(data_dir, load_store(data_dir).with_user(managed("carol")))
    assert sorted(a.name for a in resolve_accounts((), data_dir).accounts) == ["carol", "vpnuser"]
    assert [a.name for a in resolve_accounts(DECLARED, data_dir).accounts] == [
        "alice",
        "bob",
        "carol",
    ]


def test_the_environment_wins_over_a_stored_user_of_the_same_name(data_dir: Path) -> None:
    save_store(data_dir, UserStore().with_user(managed("alice", "stored")))
    resolved = resolve_accounts(DECLARED, data_dir)
    assert credentials(resolved.accounts) == [("alice", "one"), ("bob", "two")]


def test_store_round_trip_keeps_origins_passwords_and_static_ips(data_dir: Path) -> None:
    store = (
        UserStore()
        .with_user(managed("carol", "pä ss"))
        .with_user(StoredUser("vpnuser", SecretStr("gen"), Origin.GENERATED))
        .with_static_ip("carol", ipaddress.IPv4Address("10.10.10.200"))
    )
    save_store(data_dir, store)
    assert (data_dir / STORE_NAME).stat().st_mode & 0o777 == 0o600
    again = load_store(data_dir)
    assert {n: (u.password.get_secret_value(), u.origin) for n, u in again.users.items()} == {
        "carol": ("pä ss", Origin.MANAGED),
        "vpnuser": ("gen", Origin.GENERATED),
    }
    assert again.static_ips == {"carol": ipaddress.IPv4Address("10.10.10.200")}


def test_an_address_moves_to_its_new_owner_and_leaves_with_the_user() -> None:
    address = ipaddress.IPv4Address("10.10.10.200")
    store = UserStore().with_user(managed("a")).with_user(managed("b"))
    store = store.with_static_ip("a", address).with_static_ip("b", address)
    assert store.static_ips == {"b": address}
    assert store.without_user("b").static_ips == {}


def test_static_ips_are_returned_for_accounts_in_use_only(data_dir: Path) -> None:
    address = ipaddress.IPv4Address("10.10.10.200")
    save_store(
        data_dir, UserStore().with_static_ip("alice", address).with_static_ip("gone", address + 1)
    )
    assert resolve_accounts(DECLARED, data_dir).static_ips == {"alice": address}


@pytest.mark.parametrize(
    "static",
    [
        '{"carol": "10.10.10.300"}',
        '{"carol": "10.10.10.200", "dave": "10.10.10.200"}',
        '{"bad name": "10.10.10.200"}',
        '["carol"]',
    ],
)
def test_store_with_bad_static_ips_stops_the_start(store: Path, static: str) -> None:
    store.write_text(f'{{"version": 2, "users": {{}}, "static_ips": {static}}}')
    with pytest.raises(ConfigError, match="not a valid user store"):
        resolve_accounts((), store.parent)


POOL = ipaddress.IPv4Network("10.10.10.0/24")
BLOCK = ipaddress.IPv4Network("10.10.10.192/26")


@pytest.mark.parametrize(
    ("address", "block", "problem"),
    [
        ("10.10.10.200", BLOCK, ""),
        ("10.10.10.192", BLOCK, ""),
        ("10.10.10.5", BLOCK, "is not in VPN_POOL_V4_STATIC (10.10.10.192/26)"),
        ("10.10.10.255", BLOCK, "is the network or broadcast address of VPN_POOL_V4"),
        ("10.10.10.200", None, "VPN_POOL_V4_STATIC is not set"),
    ],
)
def test_static_ip_problems(
    address: str, block: ipaddress.IPv4Network | None, problem: str
) -> None:
    found = static_ip_problem(ipaddress.IPv4Address(address), block, POOL)
    assert (problem in found) if problem else found == ""


def test_static_ips_outside_a_changed_block_are_dropped_with_a_warning() -> None:
    kept, dropped = ipaddress.IPv4Address("10.10.10.200"), ipaddress.IPv4Address("10.10.10.7")
    usable, warnings = usable_static_ips({"a": kept, "b": dropped}, BLOCK, POOL)
    assert usable == {"a": kept}
    assert len(warnings) == 1 and "'b'" in warnings[0] and "dynamic address" in warnings[0]
    assert usable_static_ips({"a": kept}, None, POOL)[0] == {}


def _add_under_lock(data_dir: Path, name: str) -> None:
    with locked(data_dir):
        store = load_store(data_dir)
        time.sleep(0.01)  # widen the read-modify-write window
        save_store(data_dir, store.with_user(managed(name)))


def test_concurrent_changes_under_the_lock_all_land(data_dir: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_add_under_lock, args=(data_dir, f"user{n}")) for n in range(12)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert sorted(load_store(data_dir).users) == sorted(f"user{n}" for n in range(12))
