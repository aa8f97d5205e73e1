"""Failed logins, and bans of the addresses that keep guessing passwords.

charon reports each IKE_SA's progress in its log, which a background thread follows over
VICI ("log" events, each naming the IKE_SA's unique id). charon 6.0.1 logs, per IKE_SA:

    203.0.113.7 is initiating an IKE_SA          <- the source address
    received EAP identity 'bob'                  <- the user
    EAP-MS-CHAPv2 verification failed, retry (1) <- one wrong password (or unknown user)
    RADIUS authentication of 'bob' failed        <- the same, when users live in RADIUS
                                                    (VPN_RADIUS_SERVERS: an Access-Reject)

With RADIUS, a server that does not answer is no fault of the user and is not counted; its
silence is logged instead, naming the server (charon says only "radius-1"):

    sending RADIUS Access-Request to server 'radius-1'
    RADIUS Access-Request timed out after 2 attempts

Each failure is logged with user and address (MSCHAPv2 never sends the password itself, and
nothing of the exchange is logged). After ``ban_after`` failures from one address within
WINDOW_MIN_S or ``ban_seconds``, whichever is longer, the address is added to an nftables
set with a timeout: its IKE traffic (UDP 500/4500) is dropped until the ban ends by itself.
Other addresses are unaffected.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import children, vici_session
from .vici_session import text

log = logging.getLogger(__name__)

TABLE = ("inet", "ikev2_vpn")  # config/nftables.conf.j2
BAN_SETS = {4: "banned_v4", 6: "banned_v6"}
WINDOW_MIN_S = 600  # failures count this long at least, so slow guessing is caught too
RECONNECT_S = (1.0, 30.0)  # first and longest wait before following charon's log again

_ADDRESS = re.compile(r"^(\S+) is initiating an IKE_SA$")
_IDENTITY = re.compile(r"^received EAP identity '(.*)'$")
_FAILED = re.compile(r"^EAP-MS-CHAPv2 verification failed\b|^RADIUS authentication of '.*' failed$")
_RADIUS_SENDING = re.compile(r"^sending RADIUS \S+ to server '(.*)'$")
_RADIUS_SILENT = re.compile(r"^RADIUS (\S+) timed out after \d+ attempts$")
_REMEMBERED_SAS = 4096  # half-open IKE_SAs whose address and user are kept


@dataclass(frozen=True)
class FailedLogin:
    user: str | None  # None: the client never sent an EAP identity
    address: str


@dataclass(frozen=True)
class RadiusSilence:
    """A RADIUS server that did not answer a request about one IKE_SA."""

    request: str  # Access-Request (the login is refused) or Accounting-Request
    server: str | None  # charon's name for it (radius-1, ...), if it was logged
    user: str | None
    address: str | None


@dataclass
class LoginWatch:
    """Turns charon's log events into failed logins, correlating by IKE_SA unique id."""

    _sas: OrderedDict[str, dict[str, str]] = field(default_factory=OrderedDict)

    def feed(self, event: Mapping[str, Any]) -> FailedLogin | RadiusSilence | None:
        message = text(event.get("msg"))
        sa_id = text(event.get("ikesa-uniqueid"))
        if not sa_id:
            return None
        if found := _ADDRESS.match(message):  # a new IKE_SA: nothing known about it yet
            self._sas.pop(sa_id, None)
            self._remember(sa_id)["address"] = found.group(1)
        elif found := _IDENTITY.match(message):
            self._remember(sa_id)["user"] = found.group(1)
        elif _FAILED.match(message):
            known = self._sas.get(sa_id, {})
            if "address" in known:
                return FailedLogin(known.get("user"), known["address"])
        elif found := _RADIUS_SENDING.match(message):
            self._remember(sa_id)["radius"] = found.group(1)
        elif found := _RADIUS_SILENT.match(message):
            known = self._sas.get(sa_id, {})
            return RadiusSilence(
                found.group(1), known.get("radius"), known.get("user"), known.get("address")
            )
        return None

    def _remember(self, sa_id: str) -> dict[str, str]:
        entry = self._sas.setdefault(sa_id, {})
        self._sas.move_to_end(sa_id)
        while len(self._sas) > _REMEMBERED_SAS:
            self._sas.popitem(last=False)
        return entry


@dataclass(frozen=True)
class Verdict:
    failures: int  # from this address within the window, this one included
    ban: bool  # ban the address now


@dataclass
class BanBook:
    """Counts failures per address within a sliding window (see :attr:`window`)."""

    ban_after: int  # 0: never ban
    ban_seconds: int
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _banned: dict[str, float] = field(default_factory=dict)  # address -> when the ban ends

    @property
    def window(self) -> int:
        return max(self.ban_seconds, WINDOW_MIN_S)

    def failed(self, address: str, now: float) -> Verdict:
        recent = self._failures.setdefault(address, deque())
        recent.append(now)
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        count = len(recent)
        if self.ban_after == 0 or count < self.ban_after or address in self._banned:
            return Verdict(count, ban=False)
        del self._failures[address]
        self._banned[address] = now + self.ban_seconds
        return Verdict(count, ban=True)

    def ended(self, now: float) -> list[str]:
        """Bans over by ``now`` (nftables has dropped them by itself); each reported once."""
        over = [address for address, until in self._banned.items() if until <= now]
        for address in over:
            del self._banned[address]
        for address in [a for a, times in self._failures.items() if times[-1] <= now - self.window]:
            del self._failures[address]  # forget quiet addresses
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


def describe_failure(failure: FailedLogin, verdict: Verdict, ban_after: int) -> str:
    who = "an unnamed user" if failure.user is None else f"user {failure.user!r}"
    line = f"login failed: {who} from {failure.address}"
    if ban_after:
        line += f" ({verdict.failures} of {ban_after} before a ban)"
    return line


def ban_command(address: str, seconds: int) -> list[str]:
    """The nft command that bans ``address`` (checked to be an IP address) for ``seconds``."""
    ip = ipaddress.ip_address(address)
    return [
        "nft",
        "add",
        "element",
        *TABLE,
        BAN_SETS[ip.version],
        f"{{ {ip} timeout {seconds}s }}",
    ]


class BanGuard:
    """Follows charon's log in a daemon thread; logs failed logins and bans addresses."""

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
    ) -> None:
        self.book = BanBook(ban_after, ban_seconds)
        self.radius_servers = dict(radius_servers or {})  # charon's names -> host:port
        self.watch = LoginWatch()
        self._connect, self._run, self._clock = connect, run, clock
        self._on_failure = on_failure  # the metrics' failed-login counter
        self._thread = threading.Thread(target=self._loop, name="login-bans", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def handle(self, event: Mapping[str, Any]) -> None:
        failure = self.watch.feed(event)
        if isinstance(failure, RadiusSilence):
            log.warning(describe_silence(failure, self.radius_servers))
            return
        if failure is None:
            return
        now = self._clock()
        verdict = self.book.failed(failure.address, now)
        log.info(describe_failure(failure, verdict, self.book.ban_after))
        self._on_failure(failure)
        if verdict.ban:
            self._ban(failure.address)

    def tick(self) -> None:
        for address in self.book.ended(self._clock()):
            log.info("ban of %s ended", address)

    def _ban(self, address: str) -> None:
        seconds = self.book.ban_seconds
        try:
            self._run(ban_command(address, seconds))
        except Exception as exc:  # the server keeps serving; say why the ban is missing
            log.error("could not ban %s: %s", address, _reason(exc))
            return
        log.warning(
            "banned %s for %d s after %d failed logins (VPN_BAN_AFTER, VPN_BAN_SECONDS)",
            address,
            seconds,
            self.book.ban_after,
        )

    def _loop(self) -> None:
        wait = RECONNECT_S[0]
        while True:
            try:
                session = self._connect()
                self.watch = LoginWatch()  # a restarted charon numbers its IKE_SAs afresh
                for label, event in session.listen(["log"], timeout=1.0):
                    wait = RECONNECT_S[0]
                    if label is not None:
                        self.handle(event)
                    self.tick()
            except Exception as exc:  # never let the thread die: charon may come back
                log.debug("following charon's log failed (%s); retrying", _reason(exc))
            time.sleep(wait)
            wait = min(wait * 2, RECONNECT_S[1])


def _reason(exc: Exception) -> str:
    stderr = getattr(exc, "stderr", None)
    if isinstance(stderr, str) and stderr.strip():
        return stderr.strip().splitlines()[0]
    return f"{type(exc).__name__}: {exc}"
