"""VPN accounts: the declared ones, or one generated at first start and kept in /data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from ikev2_vpn import defaults
from ikev2_vpn.errors import ConfigError
from ikev2_vpn.settings import Account
from ikev2_vpn.state.users import STORE_NAME, nt_hash, resolve_accounts

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
