"""Renewal in the running container: the new certificate reaches charon, clients stay connected,
and a CA that says no is retried with back-off while the current certificate keeps serving."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import certfactory
import pytest
from certfactory import NOW, Chain
from planfactory import make_plan
from pydantic import SecretStr
from vici.exception import CommandException

from ikev2_vpn import defaults, render
from ikev2_vpn.errors import ConfigError
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.run import renewal, vici_session
from ikev2_vpn.run.renewal import Renewer, retry_delay
from ikev2_vpn.run.vici_session import ViciError
from ikev2_vpn.settings import Account, Backend, KeyType
from ikev2_vpn.state import acme
from ikev2_vpn.state.credentials import ServerCredentials

HOST = "vpn.example.com"
CONN = defaults.CONNECTION_NAME
DAY = timedelta(days=1)


# --- how long to wait after a failed renewal -----------------------------------------------


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(1, 60), (2, 120), (3, 240), (6, 1920), (9, 15360), (10, 21600), (11, 21600), (500, 21600)],
)
def test_retries_of_a_90_day_certificate_back_off_from_a_minute_to_six_hours(
    failures: int, seconds: float
) -> None:
    assert retry_delay(failures, 90 * DAY) == seconds


@pytest.mark.parametrize(("failures", "seconds"), [(1, 1), (2, 2), (3, 4), (4, 5), (20, 5)])
def test_retries_of_a_30_second_certificate_stay_within_its_life(
    failures: int, seconds: float
) -> None:
    """Test CAs (Pebble) hand out certificates that live minutes or seconds."""
    assert retry_delay(failures, timedelta(seconds=30)) == seconds


@pytest.mark.parametrize("lifetime", [timedelta(minutes=10), 6 * DAY, 90 * DAY, 3650 * DAY])
def test_retries_never_wait_longer_than_a_sixth_of_the_lifetime_or_six_hours(
    lifetime: timedelta,
) -> None:
    delays = [retry_delay(failures, lifetime) for failures in range(1, 40)]
    assert delays == sorted(delays)
    assert max(delays) <= min(lifetime.total_seconds() / 6, 6 * 3600)


def test_a_ca_that_refuses_for_months_does_not_break_the_back_off() -> None:
    """Four retries a day on the self-signed fallback: after a year, still six hours."""
    assert retry_delay(5000, 3650 * DAY) == 6 * 3600


# --- replacing the certificate in charon ---------------------------------------------------


class FakeVici:
    """Records the VICI commands a renewal sends; ``fail`` names the command charon refuses."""

    def __init__(self, *, key_id: bytes = b"new-key", fail: str = "", tunnels: int = 2) -> None:
        self.key_id = key_id
        self.fail = fail
        self.tunnels = tunnels
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _command(self, name: str, message: dict[str, Any]) -> None:
        self.calls.append((name, message))
        if name == self.fail:
            raise CommandException(f"command failed: {name} refused")

    def load_cert(self, message: dict[str, Any]) -> None:
        self._command("load_cert", message)

    def load_key(self, message: dict[str, Any]) -> dict[str, Any]:
        self._command("load_key", message)
        return {"success": b"yes", "id": self.key_id}

    def load_conn(self, message: dict[str, Any]) -> None:
        self._command("load_conn", message)

    def unload_key(self, message: dict[str, Any]) -> None:
        self._command("unload_key", message)

    def list_sas(self) -> Iterator[dict[str, Any]]:
        return iter([{CONN: {"state": b"ESTABLISHED"}}] * self.tunnels)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def credentials_from(chain: Chain) -> ServerCredentials:
    return ServerCredentials(
        leaf=chain.leaf.cert,
        intermediates=(chain.intermediate.cert,),
        key_pem=chain.leaf.key_pem(),
        key_path=Path("/data/acme/live/privkey.pem"),
    )


def self_signed() -> ServerCredentials:
    return certfactory.own_ca_credentials(not_after=NOW + 3650 * DAY)


@pytest.fixture(scope="module")
def old_chain() -> Chain:
    return certfactory.le_like_chain(key="p256")


@pytest.fixture(scope="module")
def new_chain() -> Chain:
    return certfactory.le_like_chain(key="p256", not_before=NOW, not_after=NOW + 90 * DAY)


@pytest.fixture(scope="module")
def plan(old_chain: Chain) -> render.Plan:
    return make_plan(
        host=HOST,
        accounts=(Account(name="alice", password=SecretStr("pw"), source="VPN_USERS"),),
        credentials=credentials_from(old_chain),
        dns=(ipaddress.ip_address("1.1.1.1"),),
        backend=BackendChoice(Backend.KERNEL, "the kernel accepted a test ESP state", True),
    )


def test_replacing_loads_chain_then_key_then_connection_then_drops_the_old_key(
    plan: render.Plan, new_chain: Chain
) -> None:
    session = FakeVici()
    config = render.vici_config(replace(plan, credentials=credentials_from(new_chain)))
    assert vici_session.replace_certificate(session, config, "old-key") == "new-key"
    assert session.names() == ["load_cert", "load_key", "load_conn", "unload_key"]
    assert session.calls[0][1] == {
        "type": "X509",
        "flag": "CA",
        "data": new_chain.intermediate.cert_pem,
    }
    assert session.calls[1][1]["data"] == new_chain.leaf.key_pem()
    assert session.calls[2][1][CONN]["local"]["certs"] == [new_chain.leaf.cert_pem]
    assert session.calls[3][1] == {"id": "old-key"}


def test_replacing_loads_every_authority(plan: render.Plan) -> None:
    session = FakeVici()
    config = render.vici_config(replace(plan, credentials=self_signed()))
    vici_session.replace_certificate(session, config, "old-key")
    assert session.names() == ["load_cert", "load_key", "load_conn", "unload_key"]
    chain = certfactory.le_like_chain(key="p256")
    two = ServerCredentials(
        leaf=chain.leaf.cert,
        intermediates=(chain.intermediate.cert,),
        key_pem=chain.leaf.key_pem(),
        key_path=Path("/k"),
        ca=chain.root.cert,
    )
    session = FakeVici()
    config = render.vici_config(replace(plan, credentials=two))
    vici_session.replace_certificate(session, config, "old-key")
    assert session.names() == ["load_cert", "load_cert", "load_key", "load_conn", "unload_key"]


@pytest.mark.parametrize("old_key_id", ["new-key", ""])
def test_the_key_is_not_unloaded_when_charon_kept_its_id(
    plan: render.Plan, old_key_id: str
) -> None:
    """charon identifies keys by their public key: the same key keeps the same id."""
    session = FakeVici(key_id=b"new-key")
    vici_session.replace_certificate(session, render.vici_config(plan), old_key_id)
    assert "unload_key" not in session.names()


@pytest.mark.parametrize(
    ("failing", "message", "sent"),
    [
        ("load_cert", "loading a CA certificate failed: ", ["load_cert"]),
        ("load_key", "loading the private key failed: ", ["load_cert", "load_key"]),
        ("load_conn", "replacing the connection failed: ", ["load_cert", "load_key", "load_conn"]),
    ],
)
def test_a_refused_step_is_named_and_stops_the_replacement(
    plan: render.Plan, failing: str, message: str, sent: list[str]
) -> None:
    session = FakeVici(fail=failing)
    with pytest.raises(ViciError) as caught:
        vici_session.replace_certificate(session, render.vici_config(plan), "old-key")
    assert str(caught.value).startswith(message)
    assert f"{failing} refused" in str(caught.value)
    assert session.names() == sent
    assert plan.credentials.key_pem.decode() not in str(caught.value)


def test_a_refused_unload_of_the_old_key_only_warns(
    plan: render.Plan, caplog: pytest.LogCaptureFixture
) -> None:
    """The new certificate is in use by then; the old key merely stays in charon's memory."""
    session = FakeVici(fail="unload_key", key_id=b"new-key")
    key_id = vici_session.replace_certificate(session, render.vici_config(plan), "old-key")
    assert key_id == "new-key"
    assert session.names()[-1] == "unload_key"
    assert "could not unload the replaced private key" in caplog.text


# --- one renewal -------------------------------------------------------------------------------


class Fakes:
    """What renew_once talks to: the CA, charon and the files, all recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, issued: acme.Issued) -> None:
        self.issued = issued
        self.refusal: Exception | None = None
        self.session = FakeVici()
        self.connects = 0
        self.written: list[ServerCredentials] = []
        monkeypatch.setattr(acme, "obtain", self.obtain)
        monkeypatch.setattr(vici_session, "connect", self.connect)
        monkeypatch.setattr(renewal, "write_credentials", self.written.append)

    def obtain(self, request: acme.AcmeRequest, now: datetime | None = None) -> acme.Issued:
        if self.refusal is not None:
            raise self.refusal
        return self.issued

    def connect(self, timeout: float = 3.0) -> FakeVici:
        self.connects += 1
        return self.session


@pytest.fixture
def acme_request(tmp_path: Path) -> acme.AcmeRequest:
    return acme.AcmeRequest(
        host=HOST,
        directory="https://acme.example.net/directory",
        email=None,
        ca_bundle=None,
        key_type=KeyType.ECDSA_P256,
        data_dir=tmp_path / "data",
    )


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, new_chain: Chain) -> Fakes:
    issued = acme.Issued(
        credentials=credentials_from(new_chain),
        directory="https://acme.example.net/directory",
        path=tmp_path / "data/acme/certs/20250601T120000Z-1",
    )
    return Fakes(monkeypatch, issued)


def test_renewal_loads_the_new_certificate_into_charon(
    acme_request: acme.AcmeRequest,
    plan: render.Plan,
    fakes: Fakes,
    new_chain: Chain,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    acme.record_failure(acme_request, "ACME_DIRECTORY: earlier; try again")
    renewer = Renewer(acme_request, plan, "old-key", fallback=False)
    renewer.renew_once()
    assert fakes.session.names() == ["load_cert", "load_key", "load_conn", "unload_key"]
    [connection] = [message for name, message in fakes.session.calls if name == "load_conn"]
    assert connection[CONN]["local"]["certs"] == [new_chain.leaf.cert_pem]
    assert connection[CONN]["local"]["id"] == HOST
    assert fakes.session.calls[-1][1] == {"id": "old-key"}
    assert fakes.written == [fakes.issued.credentials]  # for swanctl and the health check
    assert renewer.key_id == "new-key"
    assert renewer.plan.credentials == fakes.issued.credentials
    assert renewer.plan.accounts == plan.accounts  # only the certificate changed
    assert renewer.due() == NOW + 60 * DAY
    assert not (acme_request.root / "failures.json").exists()  # the next restart waits for nothing
    assert "2 connected client(s) kept their tunnels" in caplog.text
    assert f"serial {new_chain.leaf.cert.serial_number:x}" in caplog.text


def test_the_next_renewal_unloads_the_key_of_the_previous_one(
    acme_request: acme.AcmeRequest, plan: render.Plan, fakes: Fakes
) -> None:
    renewer = Renewer(acme_request, plan, "old-key", fallback=False)
    renewer.renew_once()
    fakes.session = FakeVici(key_id=b"newer-key")
    renewer.renew_once()
    assert fakes.session.calls[-1] == ("unload_key", {"id": "new-key"})
    assert renewer.key_id == "newer-key"


def test_fallback_ends_with_the_first_certificate_from_the_ca(
    acme_request: acme.AcmeRequest, plan: render.Plan, fakes: Fakes
) -> None:
    start = datetime.now(UTC)
    fallback_plan = replace(plan, credentials=self_signed())
    renewer = Renewer(acme_request, fallback_plan, "self-signed-key", fallback=True)
    assert start <= renewer.due() <= datetime.now(UTC)  # due at once
    renewer.renew_once()
    assert renewer.fallback is False
    assert renewer.plan.credentials.ca is None
    assert renewer.due() == acme.renew_at(fakes.issued.leaf)


def test_refused_renewal_changes_nothing(
    acme_request: acme.AcmeRequest, plan: render.Plan, fakes: Fakes
) -> None:
    fakes.refusal = ConfigError("VPN_HOST", "the CA could not validate", "open port 80")
    renewer = Renewer(acme_request, plan, "old-key", fallback=False)
    with pytest.raises(ConfigError):
        renewer.renew_once()
    assert fakes.connects == 0
    assert fakes.written == []
    assert (renewer.plan, renewer.key_id) == (plan, "old-key")


def test_charon_refusing_the_new_certificate_keeps_the_old_one_served(
    acme_request: acme.AcmeRequest, plan: render.Plan, fakes: Fakes
) -> None:
    fakes.session = FakeVici(fail="load_conn")
    renewer = Renewer(acme_request, plan, "old-key", fallback=False)
    with pytest.raises(ViciError):
        renewer.renew_once()
    assert "unload_key" not in fakes.session.names()
    assert fakes.written == []
    assert (renewer.plan, renewer.key_id) == (plan, "old-key")


# --- the renewal thread -------------------------------------------------------------------


def test_failed_renewals_are_retried_with_back_off_until_one_succeeds(
    acme_request: acme.AcmeRequest,
    plan: render.Plan,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    renewer = Renewer(acme_request, plan, "old-key", fallback=True)  # due at once
    outcomes: list[Exception | None] = [
        ConfigError("VPN_HOST", "the CA could not validate vpn.example.com", "open port 80"),
        RuntimeError("charon went away"),
        None,  # renewed: the back-off starts over
        ConfigError("ACME_DIRECTORY", "the CA's rate limit was hit", "wait"),
        None,
    ]
    attempts: list[int] = []

    def renew_once() -> None:
        attempts.append(len(attempts))
        outcome = outcomes[len(attempts) - 1]
        if len(attempts) == len(outcomes):
            renewer.stop()
        if outcome is not None:
            raise outcome

    delays: list[int] = []

    def no_wait(failures: int, lifetime: timedelta) -> float:
        delays.append(failures)
        return 0.0

    monkeypatch.setattr(renewer, "renew_once", renew_once)
    monkeypatch.setattr(renewal, "retry_delay", no_wait)
    renewer._loop()  # returns once stopped
    assert len(attempts) == 5
    # Failures back off 1, 2; each success waits at least the first step (never back to
    # back), and the next failure starts over at 1.
    assert delays == [1, 2, 1, 1, 1]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "ACME: renewal failed: VPN_HOST: the CA could not validate vpn.example.com; open port 80; "
        "retrying in 0 s, still serving a self-signed certificate",
        "ACME: renewal failed: RuntimeError: charon went away; retrying in 0 s, still serving "
        "a self-signed certificate",
        "ACME: renewal failed: ACME_DIRECTORY: the CA's rate limit was hit; wait; retrying in "
        "0 s, still serving a self-signed certificate",
    ]


def test_failure_report_names_the_certificate_still_served(
    acme_request: acme.AcmeRequest, plan: render.Plan, caplog: pytest.LogCaptureFixture
) -> None:
    renewer = Renewer(acme_request, plan, "old-key", fallback=False)
    renewer._report_failure(ValueError("no"), 3600.0)
    until = plan.credentials.leaf.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert caplog.records[-1].getMessage() == (
        "ACME: renewal failed: ValueError: no; retrying in 3600 s, still serving the current "
        f"certificate (valid until {until})"
    )


def test_the_thread_waits_until_renewal_is_due(
    acme_request: acme.AcmeRequest, plan: render.Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The current certificate is fresh: nothing is sent to the CA, stop ends the thread."""
    leaf = certfactory.make_leaf(
        certfactory.make_ca(key="p256"),
        key="p256",
        not_before=datetime.now(UTC),
        not_after=datetime.now(UTC) + 90 * DAY,
    )
    fresh = ServerCredentials(
        leaf=leaf.cert, intermediates=(), key_pem=leaf.key_pem(), key_path=Path("/k")
    )
    renewer = Renewer(acme_request, replace(plan, credentials=fresh), "k", fallback=False)
    called: list[str] = []
    monkeypatch.setattr(renewer, "renew_once", lambda: called.append("renew"))
    renewer.start()
    renewer.stop()
    renewer._thread.join(timeout=5)
    assert not renewer._thread.is_alive()
    assert called == []


def test_the_thread_survives_a_failure_and_renews_on_retry(
    acme_request: acme.AcmeRequest, plan: render.Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    renewer = Renewer(acme_request, plan, "old-key", fallback=True)
    renewed = threading.Event()
    calls: list[str] = []

    def renew_once() -> None:
        calls.append("renew")
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")
        renewer.stop()
        renewed.set()

    monkeypatch.setattr(renewer, "renew_once", renew_once)
    monkeypatch.setattr(renewal, "retry_delay", lambda failures, lifetime: 0.01)
    assert renewer._thread.daemon  # never keeps the container from stopping
    renewer.start()
    assert renewed.wait(timeout=5)
    renewer._thread.join(timeout=5)
    assert calls == ["renew", "renew"]


def test_a_certificate_obtained_but_not_loaded_is_loaded_without_a_new_order(
    acme_request: acme.AcmeRequest,
    plan: render.Plan,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An attempt that failed after the order (charon refused, say) must not order again on
    retry: CAs limit duplicate certificates (Let's Encrypt: 5 per week)."""
    monkeypatch.setattr(acme, "load_live", lambda request: fakes.issued)
    fakes.refusal = AssertionError("no new order may be placed")
    renewer = Renewer(acme_request, plan, "old-key", fallback=False)
    renewer.renew_once()
    assert renewer.plan.credentials == fakes.issued.credentials
    assert "load_conn" in fakes.session.names()


def test_the_served_certificate_in_data_is_not_reloaded_but_renewed(
    acme_request: acme.AcmeRequest, plan: render.Plan, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = acme.Issued(credentials=plan.credentials, directory="x", path=Path("/nowhere"))
    monkeypatch.setattr(acme, "load_live", lambda request: served)
    renewer = Renewer(acme_request, plan, "old-key", fallback=False)
    renewer.renew_once()
    assert renewer.plan.credentials == fakes.issued.credentials  # ordered a new one


def test_the_end_of_the_fallback_is_reported_with_the_ca_gone(
    acme_request: acme.AcmeRequest, plan: render.Plan, fakes: Fakes
) -> None:
    """Profiles made during the self-signed fallback carry its CA: they must be rewritten."""
    told: list[tuple[render.Plan, bool]] = []
    fallback_plan = replace(plan, credentials=self_signed())
    renewer = Renewer(
        acme_request,
        fallback_plan,
        "old-key",
        fallback=True,
        on_loaded=lambda new, ca_changed: told.append((new, ca_changed)),
    )
    renewer.renew_once()
    renewer.renew_once()  # a later renewal under the same CA changes no profiles
    assert [changed for _, changed in told] == [True, False]
    assert told[0][0].credentials == fakes.issued.credentials
