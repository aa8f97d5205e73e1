"""Renewing the ACME certificate in the running container.

A background thread sleeps until a third of the certificate's lifetime is left, orders a
new one, and loads it into charon over VICI: connected clients keep their tunnels, new ones
get the new certificate. On failure it retries with back-off, logging each attempt, and the
current certificate stays in use until it expires (the health check reports that). When
the container started on the self-signed fallback, the first "renewal" is due at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from .. import defaults, render
from ..apply.files import write_credentials
from ..errors import ConfigError
from ..state import acme
from . import vici_session

log = logging.getLogger(__name__)


def retry_delay(failures: int, lifetime: timedelta) -> float:
    """Seconds before retry number ``failures`` (1, 2, ...): doubling from one minute up to
    six hours, scaled down for certificates that live only minutes (test CAs)."""
    seconds = lifetime.total_seconds()
    first = min(defaults.ACME_RETRY_MIN_S, max(1.0, seconds / 30))
    cap = min(defaults.ACME_RETRY_MAX_S, max(first, seconds / 6))
    # The exponent is bounded: a CA that refuses for months must not overflow the float.
    return float(min(first * 2.0 ** min(failures - 1, 64), cap))


class Renewer:
    """Keeps the served certificate fresh; one per container, started after charon loads."""

    def __init__(
        self,
        request: acme.AcmeRequest,
        plan: render.Plan,
        key_id: str,
        *,
        fallback: bool,
        on_loaded: Callable[[render.Plan, bool], None] | None = None,
    ) -> None:
        self.request = request
        # Told about each certificate charon now serves, and whether the server's own CA
        # went away with it (the self-signed fallback ended): client profiles follow.
        self.on_loaded = on_loaded
        self.plan = plan
        self.key_id = key_id
        self.fallback = fallback  # serving a self-signed certificate until the CA answers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="acme-renewal", daemon=True)

    def start(self) -> None:
        log.info("ACME: next renewal at %s", acme.when(self.due()))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def due(self) -> datetime:
        if self.fallback:
            return datetime.now(UTC)
        return acme.renew_at(self.plan.credentials.leaf)

    def _loop(self) -> None:
        failures = 0
        wait = max(0.0, (self.due() - datetime.now(UTC)).total_seconds())
        while not self._stop.wait(wait):
            try:
                self.renew_once()
            except Exception as exc:  # never let the thread die: the server keeps serving
                failures += 1
                wait = retry_delay(failures, acme.lifetime_of(self.plan.credentials.leaf))
                self._report_failure(exc, wait)
                continue
            failures = 0
            # Never back to back, even if a new certificate is due at once (a clock off,
            # a CA that backdates a lot): that would loop on the CA.
            floor = retry_delay(1, acme.lifetime_of(self.plan.credentials.leaf))
            wait = max(floor, (self.due() - datetime.now(UTC)).total_seconds())
            log.info("ACME: next renewal at %s", acme.when(self.due()))

    def renew_once(self) -> None:
        """Order a certificate and load it into charon (raises on failure).

        A certificate already stored but not yet loaded (an earlier attempt failed after
        the order) is loaded instead of ordering another: CAs limit duplicate orders.
        """
        issued = self._stored_newer()
        if issued is None:
            log.info("ACME: renewing the certificate for %s", self.request.host)
            issued = acme.obtain(self.request)
            acme.clear_failures(self.request)
            log.info("ACME: renewed the certificate for %s", self.request.host)
        plan = dataclasses.replace(self.plan, credentials=issued.credentials)
        session = vici_session.connect(timeout=10.0)
        self.key_id = vici_session.replace_certificate(
            session, render.vici_config(plan), self.key_id
        )
        write_credentials(issued.credentials)
        ca_changed = self.plan.credentials.ca != plan.credentials.ca
        self.plan, self.fallback = plan, False
        if self.on_loaded is not None:
            self.on_loaded(plan, ca_changed)
        connected = sum(1 for _ in session.list_sas())
        log.info(
            "ACME: new certificate loaded into charon (serial %x, valid until %s); "
            "%d connected client(s) kept their tunnels",
            issued.leaf.serial_number,
            acme.when(issued.leaf.not_valid_after_utc),
            connected,
        )

    def _stored_newer(self) -> acme.Issued | None:
        stored = acme.load_live(self.request)
        if stored is None or self.fallback:
            return stored
        served = self.plan.credentials.leaf
        if stored.leaf.serial_number == served.serial_number:
            return None
        if stored.leaf.not_valid_after_utc <= served.not_valid_after_utc:
            return None
        log.info(
            "ACME: loading the certificate already obtained (serial %x)", stored.leaf.serial_number
        )
        return stored

    def _report_failure(self, exc: Exception, wait: float) -> None:
        line = exc.line() if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        leaf = self.plan.credentials.leaf
        serving = (
            "a self-signed certificate"
            if self.fallback
            else f"the current certificate (valid until {acme.when(leaf.not_valid_after_utc)})"
        )
        log.error(
            "ACME: renewal failed: %s; retrying in %.0f s, still serving %s", line, wait, serving
        )
