"""VPN accounts: declared in the environment, managed live, or one generated at first start.

``/data/users.json`` (0600) holds what is not in the environment: the accounts added with
``ikev2-vpn users add`` and the generated one, with their passwords (client profiles
include them), and the static virtual IPs of users. Accounts from the environment are never
copied there: the environment stays their single source of truth.

At start the accounts are the environment's plus the managed ones. The generated account
is created only when there are none at all; once it exists it counts like a managed
account, except that accounts declared in the environment hide it (as they always did).

Every change happens under an exclusive ``flock`` on ``/data/users.lock``, so concurrent
``ikev2-vpn users`` invocations queue up instead of overwriting each other; the store itself
is replaced atomically, so readers never need the lock.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from Cryptodome.Hash import MD4
from pydantic import SecretStr

from .. import defaults
from ..errors import ConfigError
from ..settings import Account, check_password, check_username
from .files import atomic_write

log = logging.getLogger(__name__)

STORE_NAME = "users.json"
LOCK_NAME = "users.lock"
STORE_VERSION = 2  # 1: only the generated account, without "origin" or static addresses


class Origin(StrEnum):
    """Where an account comes from: what ``ikev2-vpn users list`` shows."""

    ENV = "env"  # VPN_USER, VPN_USERS or VPN_USERS_FILE: changed only there
    MANAGED = "managed"  # ikev2-vpn users add
    GENERATED = "generated"  # made at first start because no account existed


@dataclass(frozen=True)
class StoredUser:
    name: str
    password: SecretStr
    origin: Origin  # MANAGED or GENERATED
    disabled: bool = False  # kept, with its profiles and static IP, but cannot log in

    @property
    def problem(self) -> str:
        """Why this account cannot be used ('' when it can): a password that an older
        version or a hand edit put into the store, and that no profile or charon can carry.
        Such a user is kept in the store (a new password repairs it) but never loaded."""
        return check_password(self.password.get_secret_value())


@dataclass(frozen=True)
class UserStore:
    """The content of users.json. Changes return a new store; :func:`save_store` writes it."""

    users: Mapping[str, StoredUser] = field(default_factory=dict)
    static_ips: Mapping[str, ipaddress.IPv4Address] = field(default_factory=dict)

    def with_user(self, user: StoredUser) -> UserStore:
        return replace(self, users={**self.users, user.name: user})

    def without_user(self, name: str) -> UserStore:
        users = {key: value for key, value in self.users.items() if key != name}
        static = {key: value for key, value in self.static_ips.items() if key != name}
        return UserStore(users, static)

    def with_static_ip(self, name: str, address: ipaddress.IPv4Address | None) -> UserStore:
        """``name`` gets ``address`` (None: none), taking it from whoever had it."""
        static = {k: v for k, v in self.static_ips.items() if k != name and v != address}
        if address is not None:
            static[name] = address
        return replace(self, static_ips=static)

    def account(self, name: str) -> Account:
        user = self.users[name]
        return Account(
            name=user.name, password=user.password, source=f"{STORE_NAME} ({user.origin})"
        )


@dataclass(frozen=True)
class ResolvedAccounts:
    accounts: tuple[Account, ...]
    generated: Account | None = None  # set when created right now (its password is shown once)
    static_ips: Mapping[str, ipaddress.IPv4Address] = field(default_factory=dict)


def nt_hash(password: SecretStr) -> bytes:
    """MD4 over the UTF-16LE password: what MSCHAPv2 clients derive from what the user typed.

    charon would derive it from a plain EAP secret by widening each byte, which is only
    right for ASCII; handing it the NT hash makes every Unicode password work as typed.
    """
    return MD4.new(password.get_secret_value().encode("utf-16-le")).digest()  # noqa: S303 (MSCHAPv2 is defined on MD4)


def new_password() -> SecretStr:
    return SecretStr(
        "".join(secrets.choice(defaults.PASSWORD_ALPHABET) for _ in range(defaults.PASSWORD_LENGTH))
    )


def resolve_accounts(declared: tuple[Account, ...], data_dir: Path) -> ResolvedAccounts:
    """The accounts charon gets at start (:func:`active_accounts`); a new generated one
    when there is none at all. Static IPs are returned for the accounts in use only."""
    store = load_store(data_dir)
    names = {account.name for account in declared}
    for name in sorted(names & set(store.users)):
        log.warning(
            "user %r is declared in the environment and in %s; the environment's password is used",
            name,
            data_dir / STORE_NAME,
        )
    if declared and any(u.origin is Origin.GENERATED for u in store.users.values()):
        log.info(
            "users come from the environment; the generated user in %s is unused",
            data_dir / STORE_NAME,
        )
    for user in unusable_users(store):
        log.warning(
            "user %r in %s is skipped: %s; give it a new password with "
            "`ikev2-vpn users passwd %s` or remove it with `ikev2-vpn users remove %s`",
            user.name,
            data_dir / STORE_NAME,
            user.problem,
            user.name,
            user.name,
        )
    accounts = active_accounts(declared, store)
    created = None
    if not accounts:
        created = _generate(data_dir)
        accounts = (created,)
        store = load_store(data_dir)
    in_use = {account.name for account in accounts}
    static = {name: ip for name, ip in store.static_ips.items() if name in in_use}
    return ResolvedAccounts(accounts, created, static)


def active_accounts(declared: tuple[Account, ...], store: UserStore) -> tuple[Account, ...]:
    """The declared accounts plus the managed ones, or without declared accounts, the
    managed ones plus the generated one. A stored account with the name of a declared one
    is hidden by it: the environment wins. Unusable and disabled stored accounts are left
    out."""
    stored = tuple(
        store.account(user.name)
        for user in stored_accounts(declared, store)
        if not user.problem and not user.disabled
    )
    return (*declared, *stored)


def stored_accounts(declared: tuple[Account, ...], store: UserStore) -> list[StoredUser]:
    """The stored accounts that count next to ``declared`` (disabled ones included)."""
    names = {account.name for account in declared}
    kinds = (Origin.MANAGED,) if declared else (Origin.MANAGED, Origin.GENERATED)
    return [u for u in store.users.values() if u.origin in kinds and u.name not in names]


def unusable_users(store: UserStore) -> list[StoredUser]:
    """The stored accounts whose password cannot be used (:attr:`StoredUser.problem`)."""
    return [user for user in store.users.values() if user.problem]


def _generate(data_dir: Path) -> Account:
    with locked(data_dir):
        store = load_store(data_dir)
        user = StoredUser(defaults.GENERATED_USER, new_password(), Origin.GENERATED)
        save_store(data_dir, store.with_user(user))
    return store.with_user(user).account(user.name)


# --- the store -------------------------------------------------------------------------------


@contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock on the store while reading, changing and writing it."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def load_store(data_dir: Path) -> UserStore:
    """The store's content; empty when there is none. A damaged store stops with one line
    rather than being overwritten (it holds passwords nobody else knows)."""
    path = data_dir / STORE_NAME
    if not path.exists():
        return UserStore()
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        return _parse(content)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(
            str(path),
            "is not a valid user store",
            "restore it from a backup, or delete it to have a new user generated",
        ) from None


def _parse(content: dict[str, Any]) -> UserStore:
    version = content.get("version", 1)
    users = {}
    for name, entry in content["users"].items():
        password = entry["password"]
        # A hand-edited store must not crash rendering or reach swanctl.conf unchecked.
        if not isinstance(password, str) or not password or check_username(name):
            raise ValueError(name)
        origin = Origin(entry["origin"]) if version >= 2 else Origin.GENERATED
        if origin is Origin.ENV:
            raise ValueError(name)
        disabled = entry.get("disabled", False)
        if not isinstance(disabled, bool):
            raise ValueError(name)
        users[name] = StoredUser(name, SecretStr(password), origin, disabled)
    static: dict[str, ipaddress.IPv4Address] = {}
    for name, text in content.get("static_ips", {}).items():
        if check_username(name) or not isinstance(text, str):
            raise ValueError(name)
        address = ipaddress.IPv4Address(text)
        if address in static.values():
            raise ValueError(text)  # one address, one user
        static[name] = address
    return UserStore(users, static)


def save_store(data_dir: Path, store: UserStore) -> None:
    content = {
        "version": STORE_VERSION,
        "users": {
            user.name: {
                "password": user.password.get_secret_value(),
                "origin": user.origin.value,
                **({"disabled": True} if user.disabled else {}),
            }
            for user in store.users.values()
        },
        "static_ips": {name: str(address) for name, address in sorted(store.static_ips.items())},
    }
    atomic_write(data_dir / STORE_NAME, (json.dumps(content, indent=2) + "\n").encode(), mode=0o600)


# --- static addresses ------------------------------------------------------------------------


def static_ip_problem(
    address: ipaddress.IPv4Address,
    block: ipaddress.IPv4Network | None,
    pool: ipaddress.IPv4Network,
) -> str:
    """Why ``address`` cannot be a static virtual IP, or ''."""
    if block is None:
        return "VPN_POOL_V4_STATIC is not set, so no address is reserved for static IPs"
    if address not in block:
        return f"{address} is not in VPN_POOL_V4_STATIC ({block})"
    if address in (pool.network_address, pool.broadcast_address):
        return f"{address} is the network or broadcast address of VPN_POOL_V4 ({pool})"
    return ""


def usable_static_ips(
    static_ips: Mapping[str, ipaddress.IPv4Address],
    block: ipaddress.IPv4Network | None,
    pool: ipaddress.IPv4Network,
) -> tuple[dict[str, ipaddress.IPv4Address], list[str]]:
    """The static IPs that fit the current settings, and a warning for each one that does
    not (VPN_POOL_V4_STATIC unset or changed since): that user gets a dynamic address."""
    usable, warnings = {}, []
    for name, address in sorted(static_ips.items()):
        if problem := static_ip_problem(address, block, pool):
            warnings.append(
                f"static IP {address} of user {name!r} is not used ({problem}); the user gets "
                f"a dynamic address until it is changed with `ikev2-vpn users static-ip`"
            )
        else:
            usable[name] = address
    return usable, warnings
