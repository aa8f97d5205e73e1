"""VPN accounts: the ones the operator declared, or one generated at first start.

The generated account lives in ``/data/users.json`` (0600) so it survives restarts and
image upgrades. Accounts from the environment are not copied there: the environment stays
their single source of truth.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from Cryptodome.Hash import MD4
from pydantic import SecretStr

from .. import defaults
from ..errors import ConfigError
from ..settings import Account, check_username
from .files import atomic_write

log = logging.getLogger(__name__)

STORE_NAME = "users.json"
STORE_VERSION = 1


@dataclass(frozen=True)
class ResolvedAccounts:
    accounts: tuple[Account, ...]
    generated: Account | None = None  # set when created right now (its password is shown once)


def nt_hash(password: SecretStr) -> bytes:
    """MD4 over the UTF-16LE password: what MSCHAPv2 clients derive from what the user typed.

    charon would derive it from a plain EAP secret by widening each byte, which is only
    right for ASCII; handing it the NT hash makes every Unicode password work as typed.
    """
    return MD4.new(password.get_secret_value().encode("utf-16-le")).digest()  # noqa: S303 (MSCHAPv2 is defined on MD4)


def resolve_accounts(declared: tuple[Account, ...], data_dir: Path) -> ResolvedAccounts:
    """The declared accounts, else the stored generated one, else a new generated one."""
    store = data_dir / STORE_NAME
    if declared:
        if store.exists():
            log.info("users come from the environment; the generated user in %s is unused", store)
        return ResolvedAccounts(declared)
    stored = _load(store)
    if stored:
        return ResolvedAccounts(stored)
    account = Account(
        name=defaults.GENERATED_USER,
        password=SecretStr(
            "".join(
                secrets.choice(defaults.PASSWORD_ALPHABET) for _ in range(defaults.PASSWORD_LENGTH)
            )
        ),
        source=str(store),
    )
    _save(store, (account,))
    return ResolvedAccounts((account,), generated=account)


def _load(store: Path) -> tuple[Account, ...]:
    if not store.exists():
        return ()
    try:
        content = json.loads(store.read_text(encoding="utf-8"))
        accounts = []
        for name, entry in content["users"].items():
            password = entry["password"]
            # A hand-edited store must not crash rendering or reach swanctl.conf unchecked.
            if not isinstance(password, str) or not password or check_username(name):
                raise ValueError(name)
            accounts.append(Account(name=name, password=SecretStr(password), source=str(store)))
        return tuple(accounts)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(
            str(store),
            "is not a valid user store",
            "restore it from a backup, or delete it to have a new user generated",
        ) from None


def _save(store: Path, accounts: tuple[Account, ...]) -> None:
    content = {
        "version": STORE_VERSION,
        "users": {a.name: {"password": a.password.get_secret_value()} for a in accounts},
    }
    atomic_write(store, (json.dumps(content, indent=2) + "\n").encode(), mode=0o600)
