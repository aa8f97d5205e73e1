"""``ikev2-vpn users``: accounts and static IPs changed while the server runs.

Each command runs inside the container (``docker exec``), next to the running server:

1. under the store's lock (:func:`ikev2_vpn.state.users.locked`), it reads
   ``/data/users.json``, checks the change and writes the new store;
2. it tells charon over VICI, without restarting it and without touching other users'
   sessions: ``load-shared``/``unload-shared`` for passwords, ``load-pool``/``load-conn``
   for static IPs, and ``terminate`` for the sessions of the user whose password, address
   or account went away;
3. it rewrites ``/etc/swanctl/conf.d/users.conf``, so swanctl.conf keeps showing what runs;
4. it writes or removes the user's client profiles.

What the command cannot derive from the environment (the server's identity, the IPsec
backend's abilities, the CA) the start-up leaves in ``/run/ikev2-vpn/server.json``.
Accounts declared in the environment stay the environment's: they are never changed here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from pydantic import SecretStr
from vici.exception import CommandException, SessionException

from .. import defaults, render
from ..apply.files import write_users_configuration
from ..apply.profile_writer import profile_files, profile_for, remove_profiles, write_profiles
from ..httpd import tls_context
from ..profiles import ProfileInput, Signer
from ..settings import PASSWORD_FIX, Account, Settings, check_password, check_username
from ..state.credentials import ServerCredentials
from ..state.files import atomic_write
from ..state.users import (
    Origin,
    StoredUser,
    UserStore,
    active_accounts,
    load_store,
    locked,
    new_password,
    save_store,
    static_ip_problem,
    stored_accounts,
    usable_static_ips,
)

log = logging.getLogger(__name__)

FACTS = Path("/run/ikev2-vpn/server.json")
TERMINATE_TIMEOUT_MS = 3000  # wait this long for a client to confirm the DELETE


class UsersError(Exception):
    """A refused change, as one line for the operator (never with a password in it)."""


class Vici(Protocol):
    """The part of ``vici.Session`` this module uses (a fake stands in for it in tests)."""

    def load_shared(self, secret: dict[str, Any]) -> None: ...
    def unload_shared(self, identifier: dict[str, Any]) -> None: ...
    def load_pool(self, pool: dict[str, Any]) -> Any: ...
    def unload_pool(self, pool_name: dict[str, Any]) -> None: ...
    def load_conn(self, conn: dict[str, Any]) -> None: ...
    def unload_conn(self, name: dict[str, Any]) -> None: ...
    def list_sas(self, filters: dict[str, Any] | None = None) -> Iterable[dict[str, Any]]: ...
    def terminate(self, sa: dict[str, Any]) -> Iterable[dict[str, Any]]: ...


# --- facts the start-up leaves for the command ---------------------------------------------


@dataclass(frozen=True)
class ServerFacts:
    host: str  # the identity clients dial (may have been detected at start)
    esp_gcm: bool  # the IPsec backend's ability: decides the ESP proposals
    ca_pem: str | None  # the CA clients import (self-signed), for profiles
    # What signs Apple profiles: the server certificate and chain (PEM), and where its key
    # is (the key itself stays in its 0600 file; this file is 0644).
    signer_pem: str | None = None
    signer_key_path: str | None = None

    @property
    def ca(self) -> x509.Certificate | None:
        return x509.load_pem_x509_certificate(self.ca_pem.encode()) if self.ca_pem else None

    def signer(self) -> Signer | None:
        if not self.signer_pem or not self.signer_key_path:
            return None
        leaf, *chain = x509.load_pem_x509_certificates(self.signer_pem.encode())
        try:
            key = load_pem_private_key(Path(self.signer_key_path).read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise UsersError(
                f"cannot read the server key {self.signer_key_path} to sign Apple profiles "
                f"({exc.__class__.__name__}); restart the container"
            ) from None
        return Signer(leaf, tuple(chain), key)

    def share_tls(self) -> ssl.SSLContext | None:
        """HTTPS for ``ikev2-vpn share`` when phones trust the server's certificate already
        (no own CA to install first): its chain and key. None: plain HTTP."""
        if self.ca_pem or not self.signer_pem or not self.signer_key_path:
            return None
        try:
            return tls_context(self.signer_pem, Path(self.signer_key_path))
        except (OSError, ssl.SSLError) as exc:
            raise UsersError(
                f"cannot use the server certificate and key {self.signer_key_path} for "
                f"HTTPS ({exc.__class__.__name__}); restart the container"
            ) from None


def server_facts(host: str, esp_gcm: bool, credentials: ServerCredentials) -> ServerFacts:
    """What ``ikev2-vpn users`` and ``share`` need of a server serving ``credentials``."""
    ca = credentials.ca
    chain = [credentials.leaf, *credentials.intermediates, *([ca] if ca else [])]
    return ServerFacts(
        host,
        esp_gcm,
        ca.public_bytes(Encoding.PEM).decode() if ca else None,
        "".join(cert.public_bytes(Encoding.PEM).decode() for cert in chain),
        str(credentials.key_path),
    )


def write_facts(plan: render.Plan, path: Path = FACTS) -> None:
    save_facts(server_facts(plan.host, plan.backend.esp_gcm, plan.credentials), path)


def save_facts(facts: ServerFacts, path: Path = FACTS) -> None:
    """Also after `ikev2-vpn ca rotate`: profiles written later carry the new CA and are
    signed with the new server certificate."""
    content = dataclasses.asdict(facts)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(content).encode(), mode=0o644)


def forget_facts(path: Path = FACTS) -> None:
    path.unlink(missing_ok=True)


def read_facts(path: Path = FACTS) -> ServerFacts:
    facts = running_facts(path)
    if facts is None:
        raise UsersError(
            "the server is not running yet (it has not finished starting); "
            "wait until the container is healthy"
        )
    return facts


def running_facts(path: Path = FACTS) -> ServerFacts | None:
    """The facts of the server running in this container; None when none runs."""
    try:
        facts = json.loads(path.read_text())
        return ServerFacts(
            str(facts["host"]),
            bool(facts["esp_gcm"]),
            facts["ca_pem"],
            facts.get("signer_pem"),
            facts.get("signer_key_path"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- the commands ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UserView:
    """One line of ``ikev2-vpn users list``: never a password."""

    name: str
    origin: Origin
    static_ip: ipaddress.IPv4Address | None
    disabled: bool = False


class LiveUsers:
    """Changes to accounts and static IPs, applied to the store, charon, swanctl's files and
    the client profiles, in that order (the store first: a change survives any failure
    after it, and a restart applies it)."""

    def __init__(
        self,
        settings: Settings,
        facts: ServerFacts,
        connect: Callable[[], Vici],
        *,
        data_dir: Path = defaults.DATA_DIR,
        write_conf: Callable[[str], None] = write_users_configuration,
    ) -> None:
        self.settings = settings
        self.facts = facts
        self.connect = connect
        self.data_dir = data_dir
        self.write_conf = write_conf
        self.declared = settings.accounts()

    # --- reading --------------------------------------------------------------------------

    def list(self) -> list[UserView]:
        """The accounts that can log in, then the disabled ones (they keep their static IP)."""
        store = load_store(self.data_dir)
        static = self._static(store)
        views = [
            UserView(account.name, self._origin(account.name, store), static.get(account.name))
            for account in active_accounts(self.declared, store)
        ]
        for user in stored_accounts(self.declared, store):
            if user.disabled:
                views.append(
                    UserView(user.name, user.origin, store.static_ips.get(user.name), True)
                )
        return views

    # --- changing -------------------------------------------------------------------------

    def add(self, name: str, password: SecretStr | None) -> SecretStr | None:
        """Add a managed account; returns the password when it was generated here."""
        if problem := check_username(name):
            raise UsersError(f"{problem}; choose another name")
        chosen = new_password() if password is None else password
        _check_password(chosen)
        self._check_profiles(name, chosen)
        with locked(self.data_dir):
            store = load_store(self.data_dir)
            if name in self._env_names():
                raise UsersError(f"user {name!r} already exists (declared in {self._env(name)})")
            if name in store.users:
                raise UsersError(
                    f"user {name!r} already exists; change its password with "
                    f"`ikev2-vpn users passwd {name}`"
                )
            store = store.with_user(StoredUser(name, chosen, Origin.MANAGED))
            save_store(self.data_dir, store)
            account = store.account(name)
            self._apply(store, lambda vici: _load_secret(vici, account))
            self._write_profiles(account)
        log.info("added user %r", name)
        return chosen if password is None else None

    def remove(self, name: str) -> int:
        """Returns how many sessions of the user were ended."""
        with locked(self.data_dir):
            store = load_store(self.data_dir)
            self._check_changeable(name, store, "remove")
            if len(active_accounts(self.declared, store)) == 1:
                raise UsersError(
                    f"user {name!r} is the only account; add another one before removing it"
                )
            old = self._static(store).get(name)
            loaded = not store.users[name].problem  # an unusable one never reached charon
            store = store.without_user(name)
            save_store(self.data_dir, store)

            ended = self._apply(store, lambda vici: shut_out(vici, name, loaded, old))
            remove_profiles(name, self.data_dir)
        log.info("removed user %r", name)
        return ended

    def passwd(self, name: str, password: SecretStr | None) -> SecretStr | None:
        """A new password, then the user's sessions end: only the new one logs in again.
        Returns the password when it was generated here."""
        chosen = new_password() if password is None else password
        _check_password(chosen)
        self._check_profiles(name, chosen)
        with locked(self.data_dir):
            store = load_store(self.data_dir)
            user = self._check_changeable(name, store, "change the password of")
            store = store.with_user(dataclasses.replace(user, password=chosen))
            save_store(self.data_dir, store)
            account = store.account(name)

            def replace(vici: Vici) -> int:
                if not user.disabled:  # a disabled one stays out of charon
                    vici.load_shared(render.shared_secret(account))  # same id: replaces it
                return end_sessions(vici, name)

            self._apply(store, replace)
            self._write_profiles(account)
        log.info("changed the password of user %r", name)
        return chosen if password is None else None

    def disable(self, name: str) -> int:
        """Keep the account (password, static IP, profiles) but refuse its logins; its
        sessions end. Returns how many."""
        with locked(self.data_dir):
            store = load_store(self.data_dir)
            user = self._check_changeable(name, store, "disable")
            if user.disabled:
                return 0
            if len(active_accounts(self.declared, store)) == 1:
                raise UsersError(
                    f"user {name!r} is the only account that can log in; add another one "
                    "before disabling it"
                )
            old = self._static(store).get(name)
            store = store.with_user(dataclasses.replace(user, disabled=True))
            save_store(self.data_dir, store)

            loaded = not user.problem  # an unusable one never reached charon
            ended = self._apply(store, lambda vici: shut_out(vici, name, loaded, old))
        log.info("disabled user %r", name)
        return ended

    def enable(self, name: str) -> None:
        """Let a disabled account log in again, with its password and static IP."""
        with locked(self.data_dir):
            store = load_store(self.data_dir)
            user = self._check_changeable(name, store, "enable")
            if not user.disabled:
                return
            if user.problem:
                raise UsersError(
                    f"user {name!r} has an unusable password ({user.problem}); give it a new "
                    f"one with `ikev2-vpn users passwd {name}` first"
                )
            store = store.with_user(dataclasses.replace(user, disabled=False))
            save_store(self.data_dir, store)
            account = store.account(name)
            users = self._users_plan(store)
            static = self._static(store).get(name)

            def let_in(vici: Vici) -> int:
                if static is not None:
                    address = render.StaticAddress(name, static)
                    vici.load_pool(render.static_pool(address, users.dns))
                    vici.load_conn(render.static_connection(address, users))
                return _load_secret(vici, account)

            self._apply(store, let_in)
        log.info("enabled user %r", name)

    def static_ip(self, name: str, address: ipaddress.IPv4Address | None) -> int:
        """Give ``name`` a fixed virtual IP (None: a dynamic one again). The user's sessions
        end when the address changes, so the next login gets the new one; returns how many."""
        block, pool = self.settings.pool_v4_static, self.settings.pool_v4
        if address is not None and (problem := static_ip_problem(address, block, pool)):
            fix = (
                "set it to a part of VPN_POOL_V4 and restart the container"
                if block is None
                else "choose an address in it"
            )
            raise UsersError(f"{problem}; {fix}")
        with locked(self.data_dir):
            store = load_store(self.data_dir)
            if name in store.users and store.users[name].disabled:
                raise UsersError(f"user {name!r} is disabled; enable it first")
            if name not in {account.name for account in active_accounts(self.declared, store)}:
                raise UsersError(f"there is no user {name!r}; see `ikev2-vpn users list`")
            current = self._static(store)
            owner = next((n for n, ip in current.items() if ip == address), None)
            if address is not None and owner not in (None, name):
                raise UsersError(f"{address} is already the static IP of {owner!r}")
            old = current.get(name)
            if old == address:
                return 0
            store = store.with_static_ip(name, address)
            save_store(self.data_dir, store)
            users = self._users_plan(store)

            def move(vici: Vici) -> int:
                if address is not None:
                    new = render.StaticAddress(name, address)
                    vici.load_pool(render.static_pool(new, users.dns))
                    vici.load_conn(render.static_connection(new, users))
                elif old is not None:
                    vici.unload_conn({"name": render.StaticAddress(name, old).connection})
                ended = end_sessions(vici, name)
                if old is not None:
                    _unload_pool(vici, render.StaticAddress(name, old))
                return ended

            ended = self._apply(store, move)
        log.info("static IP of user %r: %s", name, address or "none (dynamic)")
        return ended

    # --- helpers --------------------------------------------------------------------------

    def _env_names(self) -> set[str]:
        return {account.name for account in self.declared}

    def _env(self, name: str) -> str:
        source = next(a.source for a in self.declared if a.name == name)
        return source.split(" ", 1)[0]  # "VPN_USERS_FILE line 3" -> the setting

    def _origin(self, name: str, store: UserStore) -> Origin:
        return Origin.ENV if name in self._env_names() else store.users[name].origin

    def _check_changeable(self, name: str, store: UserStore, action: str) -> StoredUser:
        if name in self._env_names():
            setting = self._env(name)
            raise UsersError(
                f"user {name!r} is declared in {setting}, which stays authoritative; to "
                f"{action} it, change {setting} and restart the container"
            )
        if name not in store.users:
            raise UsersError(f"there is no user {name!r}; see `ikev2-vpn users list`")
        return store.users[name]

    def _static(self, store: UserStore) -> dict[str, ipaddress.IPv4Address]:
        names = {account.name for account in active_accounts(self.declared, store)}
        usable, _ = usable_static_ips(
            {n: ip for n, ip in store.static_ips.items() if n in names},
            self.settings.pool_v4_static,
            self.settings.pool_v4,
        )
        return usable

    def _users_plan(self, store: UserStore) -> render.UsersPlan:
        return render.UsersPlan(
            host=self.facts.host,
            accounts=active_accounts(self.declared, store),
            static=tuple(render.StaticAddress(n, ip) for n, ip in self._static(store).items()),
            proposals=render.proposals(self.settings.proposals, self.facts.esp_gcm),
            dns=self.settings.dns,
            dpd_delay=self.settings.dpd_delay,
            pool_v6=self.settings.pool_v6,
            split=self.settings.split_tunnel(),
        )

    def _apply(self, store: UserStore, change: Callable[[Vici], int]) -> int:
        """users.conf first (what swanctl would load), then charon."""
        self.write_conf(render.users_conf(self._users_plan(store)))
        try:
            return change(self.connect())
        except OSError as exc:
            raise UsersError(
                f"saved in {self.data_dir}, but charon does not answer ({exc}); "
                "restart the container to apply the change"
            ) from None
        except (CommandException, SessionException) as exc:
            raise UsersError(
                f"saved in {self.data_dir}, but charon refused the change ({exc}); "
                "restart the container to apply it"
            ) from None

    def _check_profiles(self, name: str, password: SecretStr) -> None:
        """Render the profiles before anything is saved: a password or name they cannot
        carry is refused here, never after the store and charon have the account."""
        account = Account(name=name, password=password, source="ikev2-vpn users")
        try:
            profile_files(self._profile(account))
        except ValueError:
            raise UsersError(
                f"the client profiles of user {name!r} cannot be written with this password; "
                f"{PASSWORD_FIX}"
            ) from None

    def _profile(self, account: Account) -> ProfileInput:
        return profile_for(
            self.settings,
            account,
            host=self.facts.host,
            ca=self.facts.ca,
            esp_gcm=self.facts.esp_gcm,
            signer=self.facts.signer(),
        )

    def _write_profiles(self, account: Account) -> None:
        write_profiles(self._profile(account), self.data_dir)

    def refresh_profiles(self) -> None:
        """Rewrite every account's profiles (after the server's CA went away or changed)."""
        with locked(self.data_dir):
            accounts = active_accounts(self.declared, load_store(self.data_dir))
        for account in accounts:
            self._write_profiles(account)


def _load_secret(vici: Vici, account: Account) -> int:
    vici.load_shared(render.shared_secret(account))
    return 0  # a new account has no session to end


def _check_password(password: SecretStr) -> None:
    if problem := check_password(password.get_secret_value()):
        fix = "give a non-empty password" if not password.get_secret_value() else PASSWORD_FIX
        raise UsersError(f"{problem}; {fix}")


def _unload_pool(vici: Vici, static: render.StaticAddress) -> None:
    try:
        vici.unload_pool({"name": static.pool})
    except CommandException as exc:  # a session is still online: harmless, nothing uses it
        log.warning("could not unload pool %s from charon: %s", static.pool, exc)


# --- sessions --------------------------------------------------------------------------------


def sessions_of(vici: Vici, name: str) -> list[str]:
    """The unique ids of the IKE_SAs authenticated as ``name``.

    charon lists the EAP identity as ``remote-eap-id`` only when it differs from the IKE
    identity; otherwise ``remote-id`` is the EAP identity.
    """
    found = []
    for entry in vici.list_sas():
        for sa in entry.values():
            identity = sa.get("remote-eap-id") or sa.get("remote-id") or b""
            if _text(identity) == name:
                found.append(_text(sa.get("uniqueid", b"")))
    return [ike_id for ike_id in found if ike_id]


def shut_out(vici: Vici, name: str, loaded: bool, old: ipaddress.IPv4Address | None) -> int:
    """Removed or disabled: charon forgets ``name``'s secret (when it was ``loaded``), its
    static address ``old`` (if any) and ends its tunnels; how many ended. The secret goes
    first: from then on the user cannot log in again."""
    if loaded:
        vici.unload_shared({"id": render.secret_id(name)})
    if old is not None:
        vici.unload_conn({"name": render.StaticAddress(name, old).connection})
    ended = end_sessions(vici, name)
    if old is not None:
        _unload_pool(vici, render.StaticAddress(name, old))
    return ended


def end_sessions(vici: Vici, name: str) -> int:
    """Terminate every IKE_SA of ``name`` (the client gets a DELETE; a silent one is dropped
    after TERMINATE_TIMEOUT_MS). Returns how many there were."""
    ended = 0
    for ike_id in sessions_of(vici, name):
        try:
            for _ in vici.terminate(
                {"ike-id": ike_id, "force": "yes", "timeout": str(TERMINATE_TIMEOUT_MS)}
            ):
                pass
            ended += 1
        except CommandException as exc:  # already gone: what we wanted
            log.info("IKE_SA %s of %r: %s", ike_id, name, exc)
    if ended:
        log.info("ended %d session(s) of user %r", ended, name)
    return ended


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
