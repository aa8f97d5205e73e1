"""The certificate half of the health check: what `docker ps` shows when renewal is failing."""

from __future__ import annotations

import json
from pathlib import Path

import certfactory
import pytest

from ikev2_vpn.apply import files
from ikev2_vpn.run import health
from ikev2_vpn.state.credentials import ServerCredentials

DAY = 86400.0
NOW = 1_750_000_000.0  # any fixed moment: certificate_problem takes it as an argument


@pytest.fixture
def status_file(tmp_path: Path) -> Path:
    return tmp_path / "certificate.json"


def write_status(path: Path, *, issued_days_ago: float, expires_in_days: float) -> Path:
    status = {
        "subject": "CN=vpn.example.com",
        "serial": "1f",
        "not_before": NOW - issued_days_ago * DAY,
        "not_after": NOW + expires_in_days * DAY,
    }
    path.write_text(json.dumps(status))
    return path


def test_health_reads_the_file_start_up_writes() -> None:
    assert health.CERTIFICATE_STATUS == files.CERTIFICATE_STATUS


@pytest.mark.parametrize(
    ("issued_days_ago", "expires_in_days"),
    [
        (0, 90),  # just issued
        (60, 30),  # renewal due, not yet urgent
        (83, 7.01),  # 90-day: the warning starts at 7 days, not at 9 (a tenth)
        (5, 1.01),  # 6-day certificate: a tenth of its lifetime is 0.6 days
        (3650, 3650),  # the self-signed fallback
    ],
)
def test_a_certificate_with_time_left_is_fine(
    status_file: Path, issued_days_ago: float, expires_in_days: float
) -> None:
    write_status(status_file, issued_days_ago=issued_days_ago, expires_in_days=expires_in_days)
    assert health.certificate_problem(status_file, now=NOW) == ""


@pytest.mark.parametrize(
    ("issued_days_ago", "expires_in_days", "shown"),
    [
        (83.5, 6.5, "6.5 days"),  # 90-day certificate: less than a week left
        (89.9, 0.1, "2.4 hours"),
        (5.7, 0.3, "7.2 hours"),  # 6-day certificate: less than a tenth left
        (90, 30 / DAY, "30 s"),
    ],
)
def test_a_certificate_about_to_expire_is_reported(
    status_file: Path, issued_days_ago: float, expires_in_days: float, shown: str
) -> None:
    write_status(status_file, issued_days_ago=issued_days_ago, expires_in_days=expires_in_days)
    problem = health.certificate_problem(status_file, now=NOW)
    assert problem == f"the server certificate expires in {shown} and has not been renewed"


@pytest.mark.parametrize(
    ("expired_days_ago", "shown"), [(3, "3.0 days"), (2 / 24, "2.0 hours"), (0, "0 s")]
)
def test_an_expired_certificate_is_reported(
    status_file: Path, expired_days_ago: float, shown: str
) -> None:
    write_status(
        status_file, issued_days_ago=90 + expired_days_ago, expires_in_days=-expired_days_ago
    )
    problem = health.certificate_problem(status_file, now=NOW)
    assert problem == f"the server certificate expired {shown} ago; clients refuse it"


@pytest.mark.parametrize(
    "content",
    [None, "", "{", "[]", '{"not_before": 1}', '{"not_before": "x", "not_after": 2}', "null"],
)
def test_a_missing_or_garbled_status_is_a_problem(status_file: Path, content: str | None) -> None:
    if content is not None:
        status_file.write_text(content)
    problem = health.certificate_problem(status_file, now=NOW)
    assert problem == "the server certificate's status is unknown (not loaded yet)"


def test_status_written_for_a_real_certificate_reads_back(tmp_path: Path) -> None:
    chain = certfactory.le_like_chain()
    credentials = ServerCredentials(
        leaf=chain.leaf.cert,
        intermediates=(chain.intermediate.cert,),
        key_pem=chain.leaf.key_pem(),
        key_path=tmp_path / "privkey.pem",
    )
    files.write_credentials(credentials, root=tmp_path)
    status = tmp_path / files.CERTIFICATE_STATUS.relative_to("/")
    moment = certfactory.NOW.timestamp()
    assert health.certificate_problem(status, now=moment) == ""
    expired = chain.leaf.cert.not_valid_after_utc.timestamp() + DAY
    assert "expired 1.0 days ago" in health.certificate_problem(status, now=expired)


def test_ike_ports_are_found_in_the_kernels_udp_tables(tmp_path: Path) -> None:
    """Rows as /proc/net/udp and udp6 show them: local address and port in hex."""
    header = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
    v4 = tmp_path / "udp"
    v4.write_text(header + "  731: 00000000:01F4 00000000:0000 07 00000000:00000000 00:0 0\n")
    v6 = tmp_path / "udp6"
    v6.write_text(header + f"  12: {'0' * 32}:1194 {'0' * 32}:0000 07 00000000:00000000 0 0\n")
    assert health.unbound_ike_ports([v4, v6]) == []
    assert health.unbound_ike_ports([v4]) == [4500]
    assert health.unbound_ike_ports([v6, tmp_path / "missing"]) == [500]
    assert health.unbound_ike_ports([]) == [500, 4500]
