"""Failed logins, and bans of the addresses that keep guessing passwords.

charon reports each IKE_SA's progress in its log, which a background thread follows over
VICI ("log" events, each naming the IKE_SA's unique id). charon 6.0.1 logs, per IKE_SA:

    203.0.113.7 is initiating an IKE_SA          <- the source address
    received EAP identity 'bob'                  <- the user
    EAP-MS-CHAPv2 verification failed, retry (1) <- one wrong password (or unknown user)
    RADIUS authentication of 'bob' failed        <- the same, when users live in RADIUS
                                                    (VPN_RADIUS_SERVERS: an Access-Reject)
    IKE_SA ikev2-vpn[7] established between ...  <- logged in: no more failures to come

With RADIUS, a server that does not answer is no fault of the user and is not counted; its
silence is logged instead, naming the server (charon says only "radius-1"):

    sending RADIUS Access-Request to server 'radius-1'
    RADIUS Access-Request timed out after 2 attempts

Each IKE_SA's address is kept until it logs in or for REMEMBER_S, never evicted by newer
ones: charon deletes an IKE_SA that has not logged in within its half-open timeout, so an
older one cannot fail a login any more, and a flood of IKE_SA_INITs between two guesses
only costs memory for that long. Should an address still be missing (beyond
MAX_REMEMBERED, or the thread reconnected mid-login), charon is asked for it by the IKE_SA's
unique id (VICI ``list-sas``).

Each failure is logged with user and address (MSCHAPv2 never sends the password itself, and
nothing of the exchange is logged). After ``ban_after`` failures from one source within
WINDOW_MIN_S or ``ban_seconds``, whichever is longer, the source is added to an nftables set
with a timeout: its new logins (IKE_SA_INIT and IKE_AUTH) are dropped until the ban ends by
itself, and its logins under way (IKE_SAs not yet established, which could keep guessing
through EAP retries) are ended over VICI. A source is one IPv4 address, or the /64 of an IPv6
address (one client usually holds a whole /64 and can pick any address in it). Other sources
are unaffected, and tunnels that are up from a banned address (other users behind one NAT)
keep working.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import defaults
from . import children, vici_session
from .vici_session import text

log = logging.getLogger(__name__)

TABLE = ("inet", "ikev2_vpn")  # config/nftables.conf.j2
BAN_SETS = {4: "banned_v4", 6: "banned_v6"}
IPV6_BAN_PREFIX = 64  # config/nftables.conf.j2 masks source addresses to this
WINDOW_MIN_S = 600  # failures count this long at least, so slow guessing is caught too
RECONNECT_S = (1.0, 30.0)  # first and longest wait before following charon's log again
# How long an IKE_SA's address is kept: charon's half-open timeout, plus slack for events
# that reach this thread late.
REMEMBER_S = float(defaults.DOS_CONFIG["half_open_timeout"]) + 30.0
MAX_REMEMBERED = 200_000  # a memory bound (about 40 MiB); beyond it charon is asked
LOGGING_IN = frozenset({"CREATED", "CONNECTING"})  # IKE_SA states that can still fail a login

_ADDRESS = re.compile(r"^(\S+) is initiating an IKE_SA$")
_IDENTITY = re.compile(r"^received EAP identity '(.*)'$")
_ESTABLISHED = re.compile(r"^IKE_SA \S+ established between ")
_FAILED = re.compile(r"^EAP-MS-CHAPv2 verification failed\b|^RADIUS authentication of '.*' failed$")
_RADIUS_SENDING = re.compile(r"^sending RADIUS \S+ to server '(.*)'$")
_RADIUS_SILENT = re.compile(r"^RADIUS (\S+) timed out after \d+ attempts$")


class Vici(Protocol):
    """The part of ``vici.Session`` this module uses (a fake stands in for it in tests)."""

    def list_sas(self, filters: dict[str, Any] | None = None) -> Iterable[dict[str, Any]]: ...
    def terminate(self, sa: dict[str, Any]) -> Iterable[dict[str, Any]]: ...


@dataclass(frozen=True)
class FailedLogin:
    user: str | None  # None: the client never sent an EAP identity
    address: str | None  # None: charon had already forgotten the IKE_SA (never seen so far)


@dataclass(frozen=True)
class RadiusSilence:
    """A RADIUS server that did not answer a request about one IKE_SA."""

    request: str  # Access-Request (the login is refused) or Accounting-Request
    server: str | None  # charon's name for it (radius-1, ...), if it was logged
    user: str | None
    address: str | None


@dataclass(slots=True)
class _Login:
    address: str
    since: float  # when it was first seen (entries are kept in this order)
    user: str | None = None
    radius: str | None = None


def _no_lookup(_sa_id: str) -> str | None:
    return None


@dataclass
class LoginWatch:
    """Turns charon's log events into failed logins, correlating by IKE_SA unique id.

    ``lookup`` asks charon for the address of an IKE_SA this watch does not know."""

    lookup: Callable[[str], str | None] = _no_lookup
    _sas: OrderedDict[str, _Login] = field(default_factory=OrderedDict)

    def feed(self, event: Mapping[str, Any], now: float) -> FailedLogin | RadiusSilence | None:
        message = text(event.get("msg"))
        sa_id = text(event.get("ikesa-uniqueid"))
        if not sa_id:
            return None
        self._forget_before(now - REMEMBER_S)
        if found := _ADDRESS.match(message):  # a new IKE_SA: nothing known about it yet
            self._sas.pop(sa_id, None)
            self._add(sa_id, _Login(found.group(1), now))
        elif found := _IDENTITY.match(message):
            if login := self._known(sa_id, now):
                login.user = found.group(1)
        elif _ESTABLISHED.match(message):
            self._sas.pop(sa_id, None)
        elif _FAILED.match(message):
            login = self._known(sa_id, now)
            return FailedLogin(login.user, login.address) if login else FailedLogin(None, None)
        elif found := _RADIUS_SENDING.match(message):
            if login := self._known(sa_id, now):
                login.radius = found.group(1)
        elif found := _RADIUS_SILENT.match(message):
            known = self._sas.get(sa_id)
            return RadiusSilence(
                found.group(1),
                known.radius if known else None,
                known.user if known else None,
                known.address if known else None,
            )
        return None

    def __len__(self) -> int:
        return len(self._sas)

    def _known(self, sa_id: str, now: float) -> _Login | None:
        login = self._sas.get(sa_id)
        if login is None and (address := self.lookup(sa_id)):
            login = self._add(sa_id, _Login(address, now))
        return login

    def _add(self, sa_id: str, login: _Login) -> _Login:
        self._sas[sa_id] = login
        while len(self._sas) > MAX_REMEMBERED:
            self._sas.popitem(last=False)
        return login

    def _forget_before(self, cutoff: float) -> None:
        while self._sas:
            oldest = next(iter(self._sas.values()))
            if oldest.since > cutoff:
                return
            self._sas.popitem(last=False)


def source_of(address: str) -> str:
    """What a ban covers for ``address``: itself (IPv4), or its /64 (IPv6)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.IPv6Network((ip, IPV6_BAN_PREFIX), strict=False))


def _network(source: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(source)


@dataclass(frozen=True)
class Verdict:
    failures: int  # from this source within the window, this one included
    ban: bool  # ban the source now


@dataclass
class BanBook:
    """Counts failures per source (see :func:`source_of`) within a sliding window
    (see :attr:`window`)."""

    ban_after: int  # 0: never ban
    ban_seconds: int
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _banned: dict[str, float] = field(default_factory=dict)  # source -> when the ban ends

    @property
    def window(self) -> int:
        return max(self.ban_seconds, WINDOW_MIN_S)

    def failed(self, source: str, now: float) -> Verdict:
        recent = self._failures.setdefault(source, deque())
        recent.append(now)
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        count = len(recent)
        if self.ban_after == 0 or count < self.ban_after or source in self._banned:
            return Verdict(count, ban=False)
        del self._failures[source]
        self._banned[source] = now + self.ban_seconds
        return Verdict(count, ban=True)

    def ended(self, now: float) -> list[str]:
        """Bans over by ``now`` (nftables has dropped them by itself); each reported once."""
        over = [source for source, until in self._banned.items() if until <= now]
        for source in over:
            del self._banned[source]
        for source in [s for s, times in self._failures.items() if times[-1] <= now - self.window]:
            del self._failures[source]  # forget quiet sources
        return over


def describe_silence(silence: RadiusSilence, servers: Mapping[str, str]) -> str:
    """One line for the operator; ``servers``: charon's names -> VPN_RADIUS_SERVERS entries."""
    server = servers.get(silence.server or "", silence.server or "?")
    who = "an unnamed user" if silence.user is None else f"user {silence.user!r}"
    where = f" from {silence.address}" if silence.address else ""
    if silence.request == "Access-Request":
        return (
            f"login refused: RADIUS server {server} did not answer for {who}{where} "
            "(check that it runs, is reachable and knows this server's address and "
            "VPN_RADIUS_SECRET)"
        )
    return f"RADIUS server {server} did not answer an {silence.request} for {who}{where}"


def describe_failure(failure: FailedLogin, verdict: Verdict | None, ban_after: int) -> str:
    who = "an unnamed user" if failure.user is None else f"user {failure.user!r}"
    if failure.address is None:
        return f"login failed: {who} from an address charon no longer knows"
    line = f"login failed: {who} from {failure.address}"
    if ban_after and verdict is not None:
        source = source_of(failure.address)
        counted = "" if source == failure.address else f" from {source}"
        line += f" ({verdict.failures} of {ban_after}{counted} before a ban)"
    return line


def ban_command(source: str, seconds: int) -> list[str]:
    """The nft command that bans ``source`` (an IP address or an IPv6 /64, checked) for
    ``seconds``. The IPv6 set holds /64 prefixes: the rules mask the sender's address."""
    network = _network(source_of(source) if "/" not in source else source)
    if network.version == 6 and network.prefixlen != IPV6_BAN_PREFIX:
        raise ValueError(f"{source} is not an IPv6 /{IPV6_BAN_PREFIX}")
    if network.version == 4 and network.prefixlen != 32:
        raise ValueError(f"{source} is not one IPv4 address")
    return [
        "nft",
        "add",
        "element",
        *TABLE,
        BAN_SETS[network.version],
        f"{{ {network.network_address} timeout {seconds}s }}",
    ]


def logins_under_way(sas: Iterable[Mapping[str, Any]], source: str) -> list[str]:
    """Unique ids of the IKE_SAs from ``source`` that have not logged in (``list-sas``)."""
    network = _network(source)
    found = []
    for entry in sas:
        for sa in entry.values():
            try:
                address = ipaddress.ip_address(text(sa.get("remote-host")))
            except ValueError:
                continue
            if text(sa.get("state")) in LOGGING_IN and address in network:
                found.append(text(sa.get("uniqueid")))
    return [sa_id for sa_id in found if sa_id]


def end_logins(session: Vici, source: str) -> int:
    """End the logins under way from ``source``; returns how many there were."""
    ended = 0
    for sa_id in logins_under_way(session.list_sas(), source):
        try:
            for _ in session.terminate({"ike-id": sa_id, "force": "yes", "timeout": "-1"}):
                pass
            ended += 1
        except Exception as exc:  # gone by itself meanwhile: what we wanted
            log.debug("ending IKE_SA %s: %s", sa_id, _reason(exc))
    return ended


def address_from_charon(connect: Callable[[], Any], sa_id: str) -> str | None:
    """The remote address of IKE_SA ``sa_id``, from charon (None if it is gone)."""
    try:
        sas = list(connect().list_sas({"ike-id": sa_id}))
    except Exception as exc:
        log.debug("asking charon for IKE_SA %s failed: %s", sa_id, _reason(exc))
        return None
    for entry in sas:
        for sa in entry.values():
            if address := text(sa.get("remote-host")):
                return address
    return None


class BanGuard:
    """Follows charon's log in a daemon thread; logs failed logins and bans sources."""

    def __init__(
        self,
        ban_after: int,
        ban_seconds: int,
        *,
        connect: Callable[[], Any] = lambda: vici_session.connect(timeout=10.0),
        run: Callable[[list[str]], object] = children.run,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[FailedLogin], object] = lambda _failure: None,
        radius_servers: Mapping[str, str] | None = None,
        in_background: Callable[[Callable[[], object]], object] | None = None,
    ) -> None:
        self.book = BanBook(ban_after, ban_seconds)
        self.radius_servers = dict(radius_servers or {})  # charon's names -> host:port
        self._connect, self._run, self._clock = connect, run, clock
        self.watch = self._new_watch()
        self._on_failure = on_failure  # the metrics' failed-login counter
        # Ending logins waits for IKE_SAs that are busy (a failed MSCHAPv2 login holds its
        # IKE_SA for 2 s): not in the thread that follows the log.
        self._in_background = in_background or _daemon
        self._thread = threading.Thread(target=self._loop, name="login-bans", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def handle(self, event: Mapping[str, Any]) -> None:
        now = self._clock()
        failure = self.watch.feed(event, now)
        if isinstance(failure, RadiusSilence):
            log.warning(describe_silence(failure, self.radius_servers))
            return
        if failure is None:
            return
        self._on_failure(failure)
        if failure.address is None:
            log.warning(describe_failure(failure, None, self.book.ban_after))
            return
        source = source_of(failure.address)
        verdict = self.book.failed(source, now)
        log.info(describe_failure(failure, verdict, self.book.ban_after))
        if verdict.ban:
            self._ban(source)

    def tick(self) -> None:
        for source in self.book.ended(self._clock()):
            log.info("ban of %s ended", source)

    def _ban(self, source: str) -> None:
        seconds = self.book.ban_seconds
        try:
            self._run(ban_command(source, seconds))
        except Exception as exc:  # the server keeps serving; say why the ban is missing
            log.error("could not ban %s: %s", source, _reason(exc))
            return
        log.warning(
            "banned %s for %d s after %d failed logins (VPN_BAN_AFTER, VPN_BAN_SECONDS)",
            source,
            seconds,
            self.book.ban_after,
        )
        self._in_background(lambda: self._end_logins(source))

    def _end_logins(self, source: str) -> None:
        try:
            ended = end_logins(self._connect(), source)
        except Exception as exc:
            log.error("could not end the logins under way from %s: %s", source, _reason(exc))
            return
        if ended:
            log.info("ended %d login(s) under way from banned %s", ended, source)

    def _new_watch(self) -> LoginWatch:
        return LoginWatch(lookup=lambda sa_id: address_from_charon(self._connect, sa_id))

    def _loop(self) -> None:
        wait = RECONNECT_S[0]
        while True:
            try:
                session = self._connect()
                self.watch = self._new_watch()  # a restarted charon numbers IKE_SAs afresh
                for label, event in session.listen(["log"], timeout=1.0):
                    wait = RECONNECT_S[0]
                    if label is not None:
                        self.handle(event)
                    self.tick()
            except Exception as exc:  # never let the thread die: charon may come back
                log.debug("following charon's log failed (%s); retrying", _reason(exc))
            time.sleep(wait)
            wait = min(wait * 2, RECONNECT_S[1])


def _daemon(work: Callable[[], object]) -> None:
    threading.Thread(target=work, name="login-bans-end", daemon=True).start()


def _reason(exc: Exception) -> str:
    stderr = getattr(exc, "stderr", None)
    if isinstance(stderr, str) and stderr.strip():
        return stderr.strip().splitlines()[0]
    return f"{type(exc).__name__}: {exc}"
