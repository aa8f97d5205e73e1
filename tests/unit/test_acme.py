"""ACME certificates under /data: what survives a restart, what the CA is asked, and the one
line an operator reads when the CA says no."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import certfactory
import pytest
import requests
from acme import challenges, messages
from acme import errors as acme_errors
from certfactory import NOW, Chain
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA
from ports import free_port, refused

from ikev2_vpn import defaults
from ikev2_vpn.errors import ConfigError
from ikev2_vpn.probe.identity import ServerIdentity
from ikev2_vpn.settings import KeyType, load_settings
from ikev2_vpn.state import acme, server
from ikev2_vpn.state.acme import AcmeRequest
from ikev2_vpn.state.files import atomic_write

HOST = "vpn.example.com"
DIRECTORY = "https://acme.example.net/directory"
OTHER_DIRECTORY = "https://acme-staging.example.net/directory"
DAY = timedelta(days=1)
ERROR = "urn:ietf:params:acme:error:"

Store = Callable[..., acme.Issued]


@pytest.fixture(scope="module")
def chain() -> Chain:
    """What the CA returns: a 90-day leaf (from NOW) under an intermediate under a root."""
    return certfactory.le_like_chain(key="p256", not_before=NOW, not_after=NOW + 90 * DAY)


@pytest.fixture
def acme_request(tmp_path: Path) -> AcmeRequest:
    return AcmeRequest(
        host=HOST,
        directory=DIRECTORY,
        email=None,
        ca_bundle=None,
        key_type=KeyType.ECDSA_P256,
        data_dir=tmp_path / "data",
    )


@pytest.fixture
def store(acme_request: AcmeRequest, chain: Chain) -> Store:
    """Store a certificate as obtain() does once the CA delivered it (default: ``chain``)."""

    def _store(leaf: certfactory.Issued | None = None, now: datetime = NOW) -> acme.Issued:
        leaf = leaf or chain.leaf
        certs = [leaf.cert, chain.intermediate.cert]
        return acme._store(acme_request, leaf.key_pem(), certs, now)

    return _store


def new_leaf(chain: Chain, host: str = HOST, days: float = 90) -> certfactory.Issued:
    return certfactory.make_leaf(
        chain.intermediate, dns=(host,), cn=host, key="p256", not_after=NOW + days * DAY
    )


def current_leaf(chain: Chain) -> certfactory.Issued:
    """A leaf valid now (for code that asks the clock itself)."""
    now = datetime.now(UTC)
    return certfactory.make_leaf(
        chain.intermediate, key="p256", not_before=now - DAY, not_after=now + 89 * DAY
    )


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def tree(root: Path) -> dict[str, str | bytes]:
    """Every file (content) and symlink (target) under root."""
    return {
        str(path.relative_to(root)): str(path.readlink())
        if path.is_symlink()
        else path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_symlink() or path.is_file()
    }


def cert_dirs(acme_request: AcmeRequest) -> list[str]:
    return sorted(p.name for p in (acme_request.root / "certs").iterdir())


# --- storing and reusing the certificate ---------------------------------------------------


def test_stored_certificate_is_reused_after_a_restart(
    acme_request: AcmeRequest, chain: Chain, store: Store
) -> None:
    stored = store()
    loaded = acme.load_live(acme_request, now=NOW + DAY)
    assert loaded is not None
    assert loaded.leaf == chain.leaf.cert
    assert loaded.credentials.intermediates == (chain.intermediate.cert,)
    assert loaded.credentials.key_pem == chain.leaf.key_pem()
    assert loaded.credentials.ca is None  # a public CA: clients need not import anything
    assert loaded.directory == DIRECTORY
    assert loaded.path == stored.path
    # swanctl.conf follows the link, so it always reads the key of the live certificate.
    assert loaded.credentials.key_path == acme_request.root / "live" / "privkey.pem"


def test_certificate_files_are_laid_out_with_safe_permissions(
    acme_request: AcmeRequest, chain: Chain, store: Store
) -> None:
    stored = store()
    live = acme_request.root / "live"
    assert live.is_symlink()
    assert not live.readlink().is_absolute()  # /data may be mounted anywhere on the host
    assert live.resolve() == stored.path
    assert mode(acme_request.root / "certs") == 0o700
    assert mode(stored.path / "privkey.pem") == 0o600
    assert mode(stored.path / "cert.pem") == 0o644
    assert (stored.path / "cert.pem").read_bytes() == chain.leaf.cert_pem
    assert (stored.path / "chain.pem").read_bytes() == chain.intermediate.cert_pem
    order = json.loads((stored.path / "order.json").read_text())
    assert order["host"] == HOST
    assert order["directory"] == DIRECTORY
    assert order["serial"] == f"{chain.leaf.cert.serial_number:x}"


def test_nothing_stored_means_a_new_certificate_is_needed(acme_request: AcmeRequest) -> None:
    assert acme.load_live(acme_request, now=NOW) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host": "other.example.com"}, "not for other.example.com"),
        ({"directory": OTHER_DIRECTORY}, "comes from another CA"),
    ],
)
def test_certificate_for_other_settings_is_not_reused(
    acme_request: AcmeRequest,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    change: dict[str, Any],
    message: str,
) -> None:
    store()
    before = tree(acme_request.root)
    caplog.set_level(logging.INFO)
    assert acme.load_live(replace(acme_request, **change), now=NOW) is None
    assert message in caplog.text
    assert tree(acme_request.root) == before  # switching back later must still find it


def test_expired_certificate_is_not_reused(
    acme_request: AcmeRequest, chain: Chain, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store()
    before = tree(acme_request.root)
    caplog.set_level(logging.INFO)
    assert acme.load_live(acme_request, now=NOW + 90 * DAY) is None
    assert "expired on 2025-08-30 12:00:00 UTC" in caplog.text
    assert acme.load_live(acme_request, now=NOW + 90 * DAY - timedelta(seconds=1)) is not None
    assert tree(acme_request.root) == before


def ec_key_pem() -> bytes:
    return certfactory.new_key("p256").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def damage_key(folder: Path) -> None:
    (folder / "privkey.pem").write_bytes(ec_key_pem())


@pytest.mark.parametrize(
    "damage",
    [
        damage_key,
        lambda folder: (folder / "privkey.pem").unlink(),
        lambda folder: (folder / "privkey.pem").write_text("garbage"),
        lambda folder: (folder / "cert.pem").write_text(""),
        lambda folder: (folder / "cert.pem").write_bytes(b"\x00\x01"),
        lambda folder: (folder / "chain.pem").write_text("-----BEGIN CERTIFICATE-----\nxx\n"),
        lambda folder: (folder / "order.json").unlink(),
        lambda folder: (folder / "order.json").write_text("{"),
        lambda folder: (folder / "order.json").write_text("{}"),
    ],
    ids=[
        "key of another certificate",
        "key missing",
        "key garbled",
        "cert empty",
        "cert binary",
        "chain garbled",
        "order missing",
        "order garbled",
        "order without directory",
    ],
)
def test_damaged_certificate_is_not_reused_and_not_deleted(
    acme_request: AcmeRequest,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
) -> None:
    damage(store().path)
    before = tree(acme_request.root)
    assert acme.load_live(acme_request, now=NOW) is None
    assert "unreadable" in caplog.text
    assert tree(acme_request.root) == before  # left for the operator to look at


def test_live_link_to_a_removed_directory_means_a_new_certificate(
    acme_request: AcmeRequest, store: Store
) -> None:
    stored = store()
    for file in stored.path.iterdir():
        file.unlink()
    stored.path.rmdir()
    assert acme.load_live(acme_request, now=NOW) is None
    assert (acme_request.root / "live").is_symlink()


def test_a_new_certificate_becomes_live_and_the_previous_one_is_kept(
    acme_request: AcmeRequest, chain: Chain, store: Store
) -> None:
    first = store(now=NOW)
    second = store(new_leaf(chain), now=NOW + 60 * DAY)
    assert (acme_request.root / "live").resolve() == second.path
    live = acme.load_live(acme_request, now=NOW + 60 * DAY)
    assert live is not None
    assert live.leaf == second.leaf
    assert cert_dirs(acme_request) == [first.path.name, second.path.name]
    assert not list(acme_request.root.glob(".*"))  # no temporary link left behind


def test_older_certificates_are_pruned_to_one_previous(
    acme_request: AcmeRequest, chain: Chain, store: Store
) -> None:
    stored = [store(new_leaf(chain), now=NOW + n * 30 * DAY) for n in range(4)]
    assert cert_dirs(acme_request) == [stored[2].path.name, stored[3].path.name]
    assert (acme_request.root / "live").resolve() == stored[3].path


def test_pruning_keeps_the_live_certificate_even_when_it_sorts_first(
    acme_request: AcmeRequest, chain: Chain, store: Store
) -> None:
    """The clock went back (e.g. a host without RTC): the new certificate sorts oldest."""
    store(new_leaf(chain), now=NOW + 30 * DAY)
    store(new_leaf(chain), now=NOW + 60 * DAY)
    newest = store(new_leaf(chain), now=NOW)
    assert (acme_request.root / "live").resolve() == newest.path
    assert newest.path.name in cert_dirs(acme_request)
    assert len(cert_dirs(acme_request)) == 2


def test_a_kill_before_the_switch_leaves_the_old_certificate_live(
    acme_request: AcmeRequest, chain: Chain, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link is replaced by rename(2): until then, the old certificate is served."""
    old = store(now=NOW)

    real_replace = Path.replace

    def replace_or_die(self: Path, target: Path) -> Path:
        if self.name == ".live.tmp":
            raise KeyboardInterrupt  # stands in for SIGKILL between symlink() and rename()
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace_or_die)
    with pytest.raises(KeyboardInterrupt):
        store(new_leaf(chain), now=NOW + 60 * DAY)
    monkeypatch.undo()
    assert (acme_request.root / "live").resolve() == old.path
    assert (acme_request.root / ".live.tmp").is_symlink()  # the half-made link
    live = acme.load_live(acme_request, now=NOW)
    assert live is not None
    assert live.leaf == old.leaf
    acme.remove_stale_temporaries(acme_request)
    assert not (acme_request.root / ".live.tmp").is_symlink()
    newest = store(new_leaf(chain), now=NOW + 61 * DAY)
    assert (acme_request.root / "live").resolve() == newest.path


def test_a_kill_while_writing_leaves_only_a_temporary_behind(
    acme_request: AcmeRequest, chain: Chain, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = store(now=NOW)
    real_write = atomic_write

    def write(path: Path, data: bytes, mode: int = 0o600) -> None:
        if path.name == "privkey.pem":
            raise KeyboardInterrupt
        real_write(path, data, mode)

    monkeypatch.setattr(acme, "atomic_write", write)
    with pytest.raises(KeyboardInterrupt):
        store(new_leaf(chain), now=NOW + 60 * DAY)
    monkeypatch.undo()
    [leftover] = (acme_request.root / "certs").glob(".*.tmp")
    assert cert_dirs(acme_request) == sorted([old.path.name, leftover.name])
    live = acme.load_live(acme_request, now=NOW)
    assert live is not None
    assert live.leaf == old.leaf
    acme.remove_stale_temporaries(acme_request)
    assert cert_dirs(acme_request) == [old.path.name]


def test_remove_stale_temporaries_removes_only_temporaries(
    acme_request: AcmeRequest, store: Store
) -> None:
    stored = store()
    acme.record_failure(acme_request, "ACME_DIRECTORY: something; try again")
    root, certs = acme_request.root, acme_request.root / "certs"
    keep = tree(root)
    (root / ".live.tmp").symlink_to(Path("certs") / stored.path.name)  # a link to a live dir
    (root / ".failures.json.k2j3.tmp").write_text("{")
    half = certs / ".20250601T120000Z-1f.tmp"
    half.mkdir()
    (half / "privkey.pem").write_text("half")
    (certs / ".cert.pem.x1y2.tmp").write_text("half")
    acme.remove_stale_temporaries(acme_request)
    assert tree(root) == keep
    assert sorted(p.name for p in root.iterdir()) == ["certs", "failures.json", "live"]
    assert cert_dirs(acme_request) == [stored.path.name]


def test_remove_stale_temporaries_on_a_first_start(acme_request: AcmeRequest) -> None:
    acme.remove_stale_temporaries(acme_request)
    assert not acme_request.root.exists()


def test_certificate_that_does_not_match_the_request_is_not_stored(
    acme_request: AcmeRequest, chain: Chain
) -> None:
    other = new_leaf(chain, host="other.example.com")
    with pytest.raises(ConfigError) as caught:
        acme._store(acme_request, other.key_pem(), [other.cert, chain.intermediate.cert], NOW)
    assert caught.value.setting == "ACME_DIRECTORY"
    assert "does not match the request" in caught.value.problem
    with pytest.raises(ConfigError):  # the right name, but not our key
        acme._store(acme_request, new_leaf(chain).key_pem(), [chain.leaf.cert], NOW)
    assert acme.load_live(acme_request, now=NOW) is None


# --- when to renew -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "left_at_renewal"),
    [(90 * DAY, 30 * DAY), (6 * DAY, 2 * DAY), (timedelta(minutes=3), timedelta(minutes=1))],
)
def test_renewal_starts_when_a_third_of_the_lifetime_is_left(
    chain: Chain, lifetime: timedelta, left_at_renewal: timedelta
) -> None:
    leaf = certfactory.make_leaf(
        chain.intermediate, key="p256", not_before=NOW, not_after=NOW + lifetime
    )
    assert acme.renew_at(leaf.cert) == NOW + lifetime - left_at_renewal
    assert acme.lifetime_of(leaf.cert) == lifetime


def test_issued_certificate_knows_its_renewal_time(store: Store) -> None:
    assert store().renew_at() == NOW + 60 * DAY


# --- failed starts in a row ----------------------------------------------------------------


def fail(acme_request: AcmeRequest, times: int, at: datetime = NOW) -> None:
    for number in range(1, times + 1):
        acme.record_failure(acme_request, f"ACME_DIRECTORY: failure {number}; try again", at)


def test_no_failures_no_wait(acme_request: AcmeRequest) -> None:
    assert acme.restart_delay(acme_request, NOW) == (0.0, "")


def test_first_retry_after_a_failure_is_immediate(acme_request: AcmeRequest) -> None:
    """An operator who just fixed the DNS record wants to see it work at once."""
    fail(acme_request, 1)
    assert acme.restart_delay(acme_request, NOW)[0] == 0.0


@pytest.mark.parametrize(
    ("failures", "wait"), [(2, 30), (3, 60), (4, 120), (5, 240), (7, 960), (8, 1800), (20, 1800)]
)
def test_repeated_failures_back_off_up_to_half_an_hour(
    acme_request: AcmeRequest, failures: int, wait: float
) -> None:
    fail(acme_request, failures)
    assert acme.restart_delay(acme_request, NOW) == (
        wait,
        f"ACME_DIRECTORY: failure {failures}; try again",
    )


def test_time_since_the_last_failure_counts(acme_request: AcmeRequest) -> None:
    fail(acme_request, 3)  # 60 s back-off
    assert acme.restart_delay(acme_request, NOW + timedelta(seconds=45))[0] == 15
    assert acme.restart_delay(acme_request, NOW + timedelta(seconds=60))[0] == 0
    assert acme.restart_delay(acme_request, NOW + DAY)[0] == 0
    # A clock that went back never makes the wait longer than the back-off.
    assert acme.restart_delay(acme_request, NOW - DAY)[0] == 60


@pytest.mark.parametrize("change", [{"host": "other.example.com"}, {"directory": OTHER_DIRECTORY}])
def test_changed_settings_start_the_count_afresh(
    acme_request: AcmeRequest, change: dict[str, Any]
) -> None:
    fail(acme_request, 5)
    changed = replace(acme_request, **change)
    assert acme.restart_delay(changed, NOW) == (0.0, "")
    fail(changed, 1)
    record = json.loads((acme_request.root / "failures.json").read_text())
    assert record["count"] == 1
    assert acme.restart_delay(acme_request, NOW) == (0.0, "")  # the old count is gone


def test_success_clears_the_failures(acme_request: AcmeRequest) -> None:
    fail(acme_request, 4)
    acme.clear_failures(acme_request)
    assert acme.restart_delay(acme_request, NOW) == (0.0, "")
    acme.clear_failures(acme_request)  # nothing to clear is fine


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '"x"', '{"host": "vpn.example.com"}', '{"host": "vpn.example.com", '
     '"directory": "https://acme.example.net/directory", "count": 5, "last": "yesterday"}'],
)  # fmt: skip
def test_garbled_failure_record_is_ignored(acme_request: AcmeRequest, content: str) -> None:
    acme_request.root.mkdir(parents=True)
    (acme_request.root / "failures.json").write_text(content)
    assert acme.restart_delay(acme_request, NOW) == (0.0, "")
    fail(acme_request, 1)
    assert json.loads((acme_request.root / "failures.json").read_text())["count"] == 1


def test_failure_record_is_private_and_readable(acme_request: AcmeRequest) -> None:
    fail(acme_request, 2)
    path = acme_request.root / "failures.json"
    assert mode(path) == 0o600
    assert json.loads(path.read_text()) == {
        "host": HOST,
        "directory": DIRECTORY,
        "count": 2,
        "last": NOW.isoformat(),
        "reason": "ACME_DIRECTORY: failure 2; try again",
    }


# --- explaining failures -------------------------------------------------------------------


def explained(exc: BaseException, acme_request: AcmeRequest) -> ConfigError:
    """explain() must always give one bounded line."""
    error = acme.explain(exc, acme_request)
    assert "\n" not in error.line()
    assert len(error.line()) < 800
    return error


def problem(code: str, detail: str | None = None) -> messages.Error:
    """An RFC 7807 problem document as the CA sends it."""
    document = {"type": ERROR + code} | ({"detail": detail} if detail is not None else {})
    parsed: messages.Error = messages.Error.from_json(document)
    return parsed


def test_tls_failure_without_bundle_points_at_the_directory(acme_request: AcmeRequest) -> None:
    failure = requests.exceptions.SSLError(
        "HTTPSConnectionPool(host='acme.example.net', port=443): Max retries exceeded "
        "(Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] "
        "certificate verify failed: self-signed certificate in certificate chain')))"
    )
    error = explained(failure, acme_request)
    assert error.setting == "ACME_DIRECTORY"
    assert "cannot verify the TLS certificate of acme.example.net" in error.problem
    assert "CERTIFICATE_VERIFY_FAILED" in error.problem
    assert "ACME_CA_BUNDLE" in error.fix


def test_tls_failure_with_bundle_points_at_the_bundle(
    acme_request: AcmeRequest, tmp_path: Path
) -> None:
    with_bundle = replace(acme_request, ca_bundle=tmp_path / "pebble.minica.pem")
    error = explained(requests.exceptions.SSLError("certificate verify failed"), with_bundle)
    assert error.setting == "ACME_CA_BUNDLE"


@pytest.mark.parametrize(
    "failure",
    [
        requests.exceptions.ConnectionError("Failed to resolve 'acme.example.net'"),
        requests.exceptions.ConnectTimeout("timed out"),
        requests.exceptions.ReadTimeout("read timed out"),
        # acme rewrites connection errors like this:
        ValueError("Requesting acme.example.net/directory: Connection refused"),
    ],
)
def test_unreachable_ca_points_at_the_directory(
    acme_request: AcmeRequest, failure: Exception
) -> None:
    error = explained(failure, acme_request)
    assert error.setting == "ACME_DIRECTORY"
    assert error.problem.startswith(f"cannot reach the ACME server at {DIRECTORY} (")
    assert "connect out over HTTPS" in error.fix


@pytest.mark.parametrize(
    "failure",
    [
        PermissionError(13, "Permission denied", "/data/acme/certs"),
        OSError(28, "No space left on device"),
        ValueError("Could not deserialize key data."),
    ],
)
def test_local_failures_are_not_blamed_on_the_network(
    acme_request: AcmeRequest, failure: Exception
) -> None:
    """A full or read-only /data, or a damaged account key, is no connection problem."""
    error = explained(failure, acme_request)
    assert "cannot reach" not in error.problem
    assert type(failure).__name__ in error.problem
    assert str(failure.args[-1]) in error.problem


@pytest.mark.parametrize("code", ["connection", "unauthorized", "incorrectResponse", "tls"])
def test_failed_validation_points_at_the_host_and_port_80(
    acme_request: AcmeRequest, code: str
) -> None:
    detail = "203.0.113.5: Fetching http://vpn.example.com/.well-known/acme-challenge/x: Timeout"
    error = explained(problem(code, detail), acme_request)
    assert error.setting == "VPN_HOST"
    assert error.problem == (
        f"the CA could not validate {HOST} over HTTP-01 on TCP port 80 ({detail})"
    )
    assert "80:80/tcp" in error.fix


@pytest.mark.parametrize(
    ("code", "setting", "words"),
    [
        ("dns", "VPN_HOST", "could not look up vpn.example.com"),
        ("caa", "VPN_HOST", "CAA record"),
        ("rejectedIdentifier", "VPN_HOST", "will not issue a certificate for vpn.example.com"),
        ("rateLimited", "ACME_DIRECTORY", "rate limit"),
        ("invalidContact", "ACME_EMAIL", "contact address"),
        ("unsupportedContact", "ACME_EMAIL", "contact address"),
        ("externalAccountRequired", "ACME_DIRECTORY", "external account binding"),
        ("serverInternal", "ACME_DIRECTORY", "the CA refused the request (serverInternal: "),
        ("badCSR", "ACME_DIRECTORY", "the CA refused the request (badCSR: "),
    ],
)
def test_ca_problems_point_at_the_setting_to_change(
    acme_request: AcmeRequest, code: str, setting: str, words: str
) -> None:
    error = explained(problem(code, "the CA's own words"), acme_request)
    assert error.setting == setting
    assert words in error.problem
    if code != "externalAccountRequired":
        assert "the CA's own words" in error.problem


def test_rate_limit_suggests_the_staging_directory(acme_request: AcmeRequest) -> None:
    detail = "too many certificates (5) already issued for this exact set of identifiers"
    error = explained(problem("rateLimited", detail), acme_request)
    assert "ACME_DIRECTORY=staging" in error.fix


def test_problem_of_unknown_type_still_shows_the_detail(acme_request: AcmeRequest) -> None:
    odd = messages.Error.from_json(
        {"type": "urn:example:ca:error:quotaExceeded", "detail": "ask your admin"}
    )
    error = explained(odd, acme_request)
    assert error.setting == "ACME_DIRECTORY"
    assert "ask your admin" in error.problem


def test_problem_without_detail_uses_the_standard_description(acme_request: AcmeRequest) -> None:
    error = explained(problem("dns"), acme_request)
    assert "There was a problem with a DNS query" in error.problem


def test_ca_that_wants_a_contact_address_points_at_acme_email(acme_request: AcmeRequest) -> None:
    """Some CAs word "give an address" as a malformed request."""
    error = explained(problem("malformed", "contact email is required"), acme_request)
    assert error.setting == "ACME_EMAIL"
    with_email = replace(acme_request, email="admin@example.com")
    assert explained(problem("malformed", "contact email is required"), with_email).setting == (
        "ACME_DIRECTORY"
    )


def test_ca_detail_is_one_bounded_line(acme_request: AcmeRequest) -> None:
    detail = "first line\nsecond\tline\r\n" + "x" * 5000
    error = explained(problem("connection", detail), acme_request)
    assert "first line second line x" in error.problem
    assert "..." in error.problem


def test_issuance_error_is_explained_by_its_problem(acme_request: AcmeRequest) -> None:
    failure = acme_errors.IssuanceError(problem("badCSR", "key too small"))
    error = explained(failure, acme_request)
    assert "key too small" in error.problem


def failed_authorization(*errors: messages.Error | None) -> messages.AuthorizationResource:
    """As the CA reports a failed order: the authorization, its challenges and their errors."""
    challenges_ = [
        messages.ChallengeBody(
            chall=challenges.HTTP01(token=b"t" * 32),
            uri=f"https://acme.example.net/chall/{number}",
            status=messages.STATUS_INVALID if error else messages.STATUS_PENDING,
            error=error,
        )
        for number, error in enumerate(errors)
    ]
    return messages.AuthorizationResource(
        uri="https://acme.example.net/authz/1",
        body=messages.Authorization(
            identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=HOST),
            challenges=challenges_,
            status=messages.STATUS_INVALID,
        ),
    )


def test_failed_http01_validation_says_what_the_ca_saw(acme_request: AcmeRequest) -> None:
    detail = (
        "203.0.113.5: Fetching http://vpn.example.com/.well-known/acme-challenge/dGVzdA:\n"
        "Connection refused"
    )
    failure = acme_errors.ValidationError(
        [failed_authorization(None, problem("connection", detail))]
    )
    error = explained(failure, acme_request)
    assert error.setting == "VPN_HOST"
    assert "TCP port 80" in error.problem
    assert (
        "Fetching http://vpn.example.com/.well-known/acme-challenge/dGVzdA: Connection refused"
        in (error.problem)
    )


def test_failed_validation_without_a_reason_still_names_port_80(
    acme_request: AcmeRequest,
) -> None:
    failure = acme_errors.ValidationError([failed_authorization(None)])
    error = explained(failure, acme_request)
    assert error.setting == "VPN_HOST"
    assert f"could not validate {HOST}" in error.problem
    assert "TCP port 80" in error.fix


def test_slow_ca_is_reported_as_a_timeout(acme_request: AcmeRequest) -> None:
    error = explained(acme_errors.TimeoutError(), acme_request)
    assert error.setting == "ACME_DIRECTORY"
    assert "within 120 s" in error.problem


def test_anything_else_is_one_line_with_its_type(acme_request: AcmeRequest) -> None:
    error = explained(RuntimeError("unexpected\nstate"), acme_request)
    assert error.setting == "ACME_DIRECTORY"
    assert "(RuntimeError: unexpected state)" in error.problem


# --- obtain(): one order, answered over HTTP-01 ---------------------------------------------


class FakeCA:
    """Stands in for acme's ClientV2: one order for one name, validated over HTTP like a CA."""

    def __init__(
        self,
        chain: Chain,
        port: int,
        *,
        authz_status: messages.Status = messages.STATUS_PENDING,
        offered: challenges.Challenge | None = None,
        refuse: BaseException | None = None,
    ) -> None:
        self.chain = chain
        self.port = port
        self.authz_status = authz_status
        self.offered = offered or challenges.HTTP01(token=os.urandom(32))
        self.refuse = refuse
        account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.net = type("Net", (), {"key": JWKRSA(key=account_key)})()
        self.csr: x509.CertificateSigningRequest | None = None
        self.served: list[tuple[bytes, str]] = []  # what the responder answered, and expected

    def new_order(self, csr_pem: bytes) -> messages.OrderResource:
        self.csr = x509.load_pem_x509_csr(csr_pem)
        challenge = messages.ChallengeBody(
            chall=self.offered, uri="https://acme.example.net/chall/1", status=self.authz_status
        )
        authz = messages.AuthorizationResource(
            uri="https://acme.example.net/authz/1",
            body=messages.Authorization(
                identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=HOST),
                challenges=[challenge],
                status=self.authz_status,
            ),
        )
        return messages.OrderResource(
            body=messages.Order(), authorizations=[authz], csr_pem=csr_pem
        )

    def answer_challenge(self, challb: messages.ChallengeBody, response: Any) -> None:
        """The CA fetches the token from port 80 of VPN_HOST (here: a free loopback port)."""
        assert isinstance(challb.chall, challenges.HTTP01)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{self.port}{challb.chall.path}"
        with opener.open(url, timeout=5) as answer:
            self.served.append((answer.read(), challb.chall.validation(self.net.key)))

    def poll_and_finalize(
        self, order: messages.OrderResource, deadline: datetime
    ) -> messages.OrderResource:
        if self.refuse is not None:
            raise self.refuse
        assert self.csr is not None
        assert deadline > datetime.now()
        names = self.csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        issuer = self.chain.intermediate
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(issuer.cert.subject)
            .public_key(self.csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.now(UTC) - DAY)
            .not_valid_after(datetime.now(UTC) + 89 * DAY)
            .add_extension(names, critical=True)
            .sign(issuer.key, hashes.SHA256())
        )
        pem = leaf.public_bytes(serialization.Encoding.PEM) + issuer.cert_pem
        updated: messages.OrderResource = order.update(fullchain_pem=pem.decode())
        return updated


@pytest.fixture
def fake_ca(
    monkeypatch: pytest.MonkeyPatch, acme_request: AcmeRequest, chain: Chain
) -> Callable[..., tuple[FakeCA, AcmeRequest]]:
    def _fake_ca(**options: Any) -> tuple[FakeCA, AcmeRequest]:
        port = free_port()
        ca = FakeCA(chain, port, **options)
        monkeypatch.setattr(acme, "_client", lambda request: ca)
        return ca, replace(acme_request, http_port=port)

    return _fake_ca


def test_obtain_answers_the_challenge_and_makes_the_certificate_live(
    fake_ca: Callable[..., tuple[FakeCA, AcmeRequest]], caplog: pytest.LogCaptureFixture
) -> None:
    ca, wanted = fake_ca()
    caplog.set_level(logging.INFO)
    issued = acme.obtain(wanted)
    [(served, expected)] = ca.served
    assert served == expected.encode()
    assert ca.csr is not None
    csr_names = ca.csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert csr_names.get_values_for_type(x509.DNSName) == [HOST]
    assert acme.load_live(wanted) == issued
    assert issued.credentials.intermediates == (ca.chain.intermediate.cert,)
    assert refused(wanted.http_port)  # port 80 is free again once the order is done
    assert f"ACME: obtained a certificate for {HOST} from acme.example.net" in caplog.text


@pytest.mark.parametrize(
    ("key_type", "expected"),
    [
        (KeyType.RSA_2048, (rsa.RSAPrivateKey, 2048)),
        (KeyType.RSA_3072, (rsa.RSAPrivateKey, 3072)),
        (KeyType.ECDSA_P256, (ec.EllipticCurvePrivateKey, 256)),
        (KeyType.ECDSA_P384, (ec.EllipticCurvePrivateKey, 384)),
    ],
)
def test_the_server_key_has_the_chosen_type(key_type: KeyType, expected: tuple[type, int]) -> None:
    key = acme._new_key(key_type)
    assert isinstance(key, expected[0])
    assert key.key_size == expected[1]


def test_reused_authorization_needs_no_challenge(
    fake_ca: Callable[..., tuple[FakeCA, AcmeRequest]],
) -> None:
    ca, wanted = fake_ca(authz_status=messages.STATUS_VALID)
    assert acme.obtain(wanted).leaf is not None
    assert ca.served == []


def test_ca_without_http01_is_one_line(fake_ca: Callable[..., tuple[FakeCA, AcmeRequest]]) -> None:
    _, wanted = fake_ca(offered=challenges.DNS01(token=os.urandom(32)))
    with pytest.raises(ConfigError) as caught:
        acme.obtain(wanted)
    assert caught.value.setting == "ACME_DIRECTORY"
    assert "HTTP-01" in caught.value.problem
    assert acme.load_live(wanted) is None


def test_failed_validation_during_obtain_is_explained(
    fake_ca: Callable[..., tuple[FakeCA, AcmeRequest]],
) -> None:
    refusal = acme_errors.ValidationError(
        [failed_authorization(problem("connection", "Connection refused"))]
    )
    _, wanted = fake_ca(refuse=refusal)
    with pytest.raises(ConfigError) as caught:
        acme.obtain(wanted)
    assert caught.value.setting == "VPN_HOST"
    assert "port 80 (Connection refused)" in caught.value.problem
    assert acme.load_live(wanted) is None
    assert refused(wanted.http_port)


def test_unexpected_failure_becomes_one_line(
    acme_request: AcmeRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(request: AcmeRequest, now: datetime) -> acme.Issued:
        raise KeyError("finalize")

    monkeypatch.setattr(acme, "_obtain", broken)
    with pytest.raises(ConfigError) as caught:
        acme.obtain(acme_request)
    assert caught.value.setting == "ACME_DIRECTORY"
    assert "KeyError" in caught.value.problem
    assert caught.value.__cause__ is None  # reported as one line, not a traceback


def test_config_errors_pass_through_obtain_unchanged(
    acme_request: AcmeRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ConfigError("VPN_CERT", "cannot listen on TCP port 80", "free the port")

    def busy(request: AcmeRequest, now: datetime) -> acme.Issued:
        raise original

    monkeypatch.setattr(acme, "_obtain", busy)
    with pytest.raises(ConfigError) as caught:
        acme.obtain(acme_request)
    assert caught.value is original


def test_account_key_is_created_once_and_kept_private(acme_request: AcmeRequest) -> None:
    path = acme_request.root / "accounts" / acme_request.directory_id / "key.pem"
    first = acme._account_key(path)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    again = acme._account_key(path)
    assert again.private_numbers() == first.private_numbers()


def test_account_key_that_is_not_rsa_is_one_line(acme_request: AcmeRequest) -> None:
    path = acme_request.root / "key.pem"
    path.parent.mkdir(parents=True)
    path.write_bytes(ec_key_pem())
    with pytest.raises(ConfigError) as caught:
        acme._account_key(path)
    assert caught.value.setting == str(path)
    assert "delete it" in caught.value.fix


def test_each_directory_gets_its_own_account_folder(acme_request: AcmeRequest) -> None:
    staging = replace(acme_request, directory=OTHER_DIRECTORY)
    assert acme_request.directory_id != staging.directory_id
    assert acme_request.directory_id.startswith("acme.example.net-")
    assert replace(acme_request, directory="https://[::1]:14000/dir").directory_id.isprintable()


# --- start-up: reuse, order, fall back -----------------------------------------------------


@pytest.fixture
def starting(
    monkeypatch: pytest.MonkeyPatch,
    acme_request: AcmeRequest,
    tmp_path: Path,
    clean_environment: None,
) -> list[float]:
    """server.acme_certificate with /data in tmp_path; returns the sleeps it asked for."""
    monkeypatch.setenv("VPN_CERT", "letsencrypt")
    monkeypatch.setenv("VPN_HOST", HOST)
    monkeypatch.setattr(defaults, "DATA_DIR", acme_request.data_dir)
    monkeypatch.setattr(AcmeRequest, "from_settings", staticmethod(lambda s, h: acme_request))
    sleeps: list[float] = []
    monkeypatch.setattr("ikev2_vpn.state.server.time.sleep", sleeps.append)
    return sleeps


def start_certificate() -> server.Certificate:
    return server.acme_certificate(load_settings(), ServerIdentity(HOST, "VPN_HOST"))


def test_start_reuses_the_stored_certificate_without_asking_the_ca(
    starting: list[float], chain: Chain, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = store(current_leaf(chain), now=datetime.now(UTC))

    def never(request: AcmeRequest) -> acme.Issued:
        raise AssertionError("the CA was asked although a valid certificate is stored")

    monkeypatch.setattr(acme, "obtain", never)
    certificate = start_certificate()
    assert certificate.credentials.leaf == stored.leaf
    assert certificate.fallback is False
    assert certificate.acme is not None


def refuse_with(monkeypatch: pytest.MonkeyPatch, error: ConfigError) -> None:
    def refusing(request: AcmeRequest) -> acme.Issued:
        raise error

    monkeypatch.setattr(acme, "obtain", refusing)


REFUSAL = ConfigError("VPN_HOST", "the CA could not validate vpn.example.com", "open port 80")


def test_failed_first_issuance_stops_the_start_and_is_counted(
    starting: list[float], acme_request: AcmeRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_with(monkeypatch, REFUSAL)
    for _ in range(3):
        with pytest.raises(ConfigError) as caught:
            start_certificate()
        assert caught.value is REFUSAL
    # The container restarts in a loop: the third start waited 30 s for the CA's sake.
    assert [round(seconds) for seconds in starting] == [30]
    delay, reason = acme.restart_delay(acme_request)
    assert 59 < delay <= 60
    assert reason == REFUSAL.line()


def test_failed_issuance_with_fallback_serves_self_signed_meanwhile(
    starting: list[float],
    acme_request: AcmeRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ACME_FALLBACK", "self-signed")
    refuse_with(monkeypatch, REFUSAL)
    certificate = start_certificate()
    assert certificate.fallback is True
    assert certificate.acme == acme_request  # the renewer keeps asking the CA
    assert certificate.credentials.ca is not None  # the own CA, for users to import
    assert HOST in certificate.credentials.leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    assert REFUSAL.line() in caplog.text
    assert "ACME_FALLBACK=self-signed" in caplog.text


def test_successful_issuance_clears_earlier_failures(
    starting: list[float],
    acme_request: AcmeRequest,
    chain: Chain,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fail(acme_request, 1, at=datetime.now(UTC))
    leaf = current_leaf(chain)
    monkeypatch.setattr(acme, "obtain", lambda request: store(leaf, now=datetime.now(UTC)))
    certificate = start_certificate()
    assert certificate.fallback is False
    assert not (acme_request.root / "failures.json").exists()
