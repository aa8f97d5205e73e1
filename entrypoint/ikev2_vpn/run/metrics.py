"""The opt-in Prometheus endpoint (VPN_METRICS_PORT): ``GET /metrics`` on its own TCP port.

Everything about charon is read at scrape time over a VICI session of the scrape's own,
opened with a timeout and closed afterwards, so the entrypoint's other sessions (start-up,
user changes, the login watch) never wait for a scrape and a charon that does not answer
only turns ``ikev2_vpn_charon_up`` to 0.

Traffic comes from the CHILD_SAs' counters. A CHILD_SA's counters start at 0 and vanish
with it (at a rekey, a disconnect, a removed user), so the exported counters add up what
ended SAs had counted at the last scrape that saw them: they never go backwards while the
container runs, and what an SA carried between that scrape and its end is not counted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ..httpd import HttpServer, WsgiApp, plain, small_app
from . import health, vici_session
from .vici_session import text

if TYPE_CHECKING:
    from flask import Response

log = logging.getLogger(__name__)

PATH = "/metrics"
VICI_TIMEOUT_S = 2.0  # a scrape gives up on a charon that does not answer
# vici times out waiting for an answer, not within one: a charon stuck halfway through an
# answer holds a scrape. The next ones wait this long for it, then report charon down.
QUEUE_WAIT_S = 5.0
PREFIX = "ikev2_vpn_"


@dataclass(frozen=True)
class Traffic:
    """What a CHILD_SA (or a sum of them) carried. In: from the client; out: to it."""

    bytes_in: int = 0
    packets_in: int = 0
    bytes_out: int = 0
    packets_out: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def below(self, other: Traffic) -> bool:
        """Some counter is lower than in ``other``: not the same SA counting on."""
        return any(getattr(self, f.name) < getattr(other, f.name) for f in fields(self))


# A CHILD_SA: its unique id and SPIs. Not its IKE_SA's: a rekeyed IKE_SA hands its
# CHILD_SAs, counters and all, to its successor.
ChildKey = tuple[str, str, str]
# An IKE_SA being rekeyed stays up until its successor is established, then turns REKEYED:
# a device counts once, through the rekey.
_UP = frozenset({"ESTABLISHED", "REKEYING"})


@dataclass(frozen=True)
class Snapshot:
    """charon's SAs at one moment, as the metrics need them."""

    sas_per_user: dict[str, int]  # established IKE_SAs by EAP identity
    children: dict[ChildKey, tuple[str, Traffic]]  # user and counters of each CHILD_SA

    @property
    def connected(self) -> int:
        return sum(self.sas_per_user.values())


def read_snapshot(answer: Iterable[Mapping[str, Any]]) -> Snapshot:
    """Pick the metrics out of ``list_sas`` answers (one ``{name: IKE_SA}`` per SA).

    Only established IKE_SAs count as clients: logins in progress (the ``identify``
    connection, a wrong password under way) have no CHILD_SA and no user yet. CHILD_SAs
    count whatever their IKE_SA's state: one being deleted still holds its last counts.
    """
    sas_per_user: dict[str, int] = {}
    children: dict[ChildKey, tuple[str, Traffic]] = {}
    for entry in answer:
        for ike in entry.values():
            user = text(ike.get("remote-eap-id")) or text(ike.get("remote-id"))
            if text(ike.get("state")) in _UP:
                sas_per_user[user] = sas_per_user.get(user, 0) + 1
            for child in (ike.get("child-sas") or {}).values():
                key = (
                    text(child.get("uniqueid")),
                    text(child.get("spi-in")),
                    text(child.get("spi-out")),
                )
                children[key] = (user, _traffic(child))
    return Snapshot(sas_per_user, children)


_COUNTERS = ("bytes-in", "packets-in", "bytes-out", "packets-out")  # Traffic's order


def _traffic(child: Mapping[str, Any]) -> Traffic:
    return Traffic(*(_number(child.get(name)) for name in _COUNTERS))


class TrafficBook:
    """Per-user traffic that never goes backwards: the ended CHILD_SAs' last counts plus the
    live ones'."""

    def __init__(self) -> None:
        self._ended: dict[str, Traffic] = {}
        self._live: dict[ChildKey, tuple[str, Traffic]] = {}

    def update(self, children: Mapping[ChildKey, tuple[str, Traffic]]) -> None:
        for key, (user, last) in self._live.items():
            current = children.get(key)
            if current is None or current[1].below(last):  # gone, or a new SA with its key
                self._ended[user] = self._ended.get(user, Traffic()) + last
        self._live = dict(children)

    def per_user(self) -> dict[str, Traffic]:
        totals = dict(self._ended)
        for user, traffic in self._live.values():
            totals[user] = totals.get(user, Traffic()) + traffic
        return totals


class VpnCollector(Collector):
    """Reads charon over VICI at each scrape; counts failed logins as they are reported."""

    def __init__(
        self,
        backend: str,
        *,
        connect: Callable[[], Any] = lambda: vici_session.connect(timeout=VICI_TIMEOUT_S),
        certificate_dates: Callable[[], tuple[float, float] | None] = (
            health.served_certificate_dates
        ),
    ) -> None:
        self.backend = backend
        self._connect = connect
        self._certificate_dates = certificate_dates
        self._book = TrafficBook()
        self._failed_logins = 0
        self._scrape = threading.Lock()  # one scrape at a time: the book sees SAs in order
        self._lock = threading.Lock()  # the book and the failed logins

    def login_failed(self, *_args: object) -> None:
        """A failed login (called from the login watch's thread)."""
        with self._lock:
            self._failed_logins += 1

    def collect(self) -> Iterator[Metric]:
        snapshot = None
        if self._scrape.acquire(timeout=QUEUE_WAIT_S):
            try:
                snapshot = self._read()
                if snapshot is not None:
                    with self._lock:
                        self._book.update(snapshot.children)
            finally:
                self._scrape.release()
        with self._lock:
            per_user = self._book.per_user()
            failed_logins = self._failed_logins
        up = snapshot is not None
        yield _gauge("charon_up", "1 when charon answered over VICI at this scrape.", int(up))
        if snapshot is not None:
            yield _gauge(
                "connected_clients",
                "Established IKE_SAs (VPN clients connected).",
                snapshot.connected,
            )
            sas = GaugeMetricFamily(
                PREFIX + "user_ike_sas",
                "Established IKE_SAs per user (EAP identity); 0 for users seen since start.",
                labels=["user"],
            )
            for user in sorted(per_user.keys() | snapshot.sas_per_user.keys()):
                sas.add_metric([user], snapshot.sas_per_user.get(user, 0))
            yield sas
        yield from _traffic_metrics(per_user)
        yield CounterMetricFamily(
            PREFIX + "failed_logins",
            "Logins refused for a wrong password or an unknown user, since the container started.",
            value=failed_logins,
        )
        dates = self._certificate_dates()
        if dates is not None:
            yield _gauge(
                "certificate_expiry_timestamp_seconds",
                "When the server certificate charon serves expires (Unix time).",
                dates[1],
            )
        info = InfoMetricFamily(
            PREFIX + "backend", "The IPsec backend in use: kernel (XFRM) or userspace (libipsec)."
        )
        info.add_metric([], {"backend": self.backend})
        yield info

    def _read(self) -> Snapshot | None:
        session = None
        try:
            session = self._connect()
            return read_snapshot(session.list_sas())
        except Exception as exc:  # charon down or restarting: report it, never fail the scrape
            log.debug("metrics: charon did not answer over VICI (%s)", exc)
            return None
        finally:
            if session is not None:
                _close(session)


# CHILD_SA counters count the IP packets inside the tunnel (no ESP or UDP overhead).
_DIRECTIONS = (
    ("received", "bytes_in", "packets_in", "from VPN clients inside their tunnels"),
    ("sent", "bytes_out", "packets_out", "to VPN clients inside their tunnels"),
)


def _traffic_metrics(per_user: Mapping[str, Traffic]) -> Iterator[Metric]:
    users = sorted(per_user)
    for direction, size, count, what in _DIRECTIONS:
        for unit, attribute in (("bytes", size), ("packets", count)):
            family = CounterMetricFamily(
                f"{PREFIX}user_{direction}_{unit}",
                f"{unit.capitalize()} {direction} {what}, per user (EAP identity).",
                labels=["user"],
            )
            for user in users:
                family.add_metric([user], getattr(per_user[user], attribute))
            yield family
            yield CounterMetricFamily(
                f"{PREFIX}{direction}_{unit}",
                f"{unit.capitalize()} {direction} {what}, all users.",
                value=sum(getattr(traffic, attribute) for traffic in per_user.values()),
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _close(session: Any) -> None:
    with contextlib.suppress(OSError):
        session.transport.close()


def _number(value: object) -> int:
    try:
        return int(text(value))
    except ValueError:
        return 0


def _app(registry: CollectorRegistry) -> WsgiApp:
    from flask import request

    def scrape() -> Response:
        if request.environ["PATH_INFO"] != PATH:
            return plain(404, f"only {PATH} is served here\n".encode())
        if request.method not in {"GET", "HEAD"}:
            return plain(405, b"GET only\n", headers=[("Allow", "GET, HEAD")])
        return plain(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    return small_app(__name__, scrape)


def serve(port: int, collector: VpnCollector) -> HttpServer:
    """Listen on ``port`` at every address of the container and answer scrapes in a daemon
    thread. Raises OSError when the port cannot be opened."""
    registry = CollectorRegistry(auto_describe=False)  # no VICI call at registration
    registry.register(collector)
    return HttpServer(port, _app(registry), "metrics")
