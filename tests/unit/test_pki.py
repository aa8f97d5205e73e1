"""The self-signed CA and server certificate, as users and operators notice them."""

from __future__ import annotations

import ipaddress
import logging
import os
from datetime import timedelta
from pathlib import Path

import pytest
from certfactory import IKE_INTERMEDIATE, NOW, SERVER_AUTH, new_key
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, Store

from ikev2_vpn.errors import ConfigError
from ikev2_vpn.state.credentials import ServerCredentials
from ikev2_vpn.state.pki import ca_fingerprint, ensure_self_signed

HOST = "vpn.example.com"


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def snapshot(data_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under data_dir with its content and mtime."""
    return {
        str(path.relative_to(data_dir)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(data_dir.rglob("*"))
        if path.is_file()
    }


def san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def client_accepts(creds: ServerCredentials, host: str) -> None:
    """Validate like a client that imported ca.crt: RFC 5280 path plus server profile."""
    assert creds.ca is not None
    try:
        subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    verifier = PolicyBuilder().store(Store([creds.ca])).time(NOW).build_server_verifier(subject)
    verifier.verify(creds.leaf, list(creds.intermediates))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def first(data_dir: Path) -> ServerCredentials:
    """The credentials made on the first start."""
    return ensure_self_signed(data_dir, HOST, now=NOW)


# --- first start -----------------------------------------------------------------------


def test_first_start_lays_out_files_with_safe_permissions(
    data_dir: Path, first: ServerCredentials
) -> None:
    pki = data_dir / "pki"
    assert mode(pki) == 0o700
    assert mode(data_dir / "ca.crt") == 0o644
    assert mode(pki / "ca.key") == 0o600
    assert mode(pki / "server.key") == 0o600
    assert mode(pki / "server.crt") == 0o644
    assert first.key_path == pki / "server.key"
    assert first.ca is not None
    assert (data_dir / "ca.crt").read_bytes() == first.ca.public_bytes(serialization.Encoding.PEM)
    assert first.intermediates == ()


def test_ca_is_an_rsa_root_native_clients_import(first: ServerCredentials) -> None:
    ca = first.ca
    assert ca is not None
    ca_key = ca.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey)
    assert ca_key.key_size == 3072  # RSA, not ECDSA: Apple clients (docs/clients.md)
    assert ca.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256  # not PSS
    assert ca.subject == ca.issuer
    cn = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert str(cn).startswith("ikev2-vpn CA ")
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "ikev2-vpn"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert timedelta(days=3650) <= lifetime <= timedelta(days=3651)


def test_two_installations_have_distinguishable_cas(tmp_path: Path) -> None:
    one = ensure_self_signed(tmp_path / "one", HOST, now=NOW).ca
    two = ensure_self_signed(tmp_path / "two", HOST, now=NOW).ca
    assert one is not None and two is not None
    assert one.subject != two.subject
    assert ca_fingerprint(one) != ca_fingerprint(two)


def test_server_certificate_for_dns_name(first: ServerCredentials) -> None:
    leaf = first.leaf
    assert first.ca is not None
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, rsa.RSAPublicKey)
    assert leaf_key.key_size == 3072  # RSA, not ECDSA: Apple clients (docs/clients.md)
    assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HOST
    assert list(san(leaf)) == [x509.DNSName(HOST)]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {SERVER_AUTH, IKE_INTERMEDIATE}
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = first.ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert leaf.not_valid_before_utc == NOW - timedelta(hours=1)  # clock skew
    assert leaf.not_valid_after_utc == NOW + timedelta(days=730)
    leaf.verify_directly_issued_by(first.ca)
    client_accepts(first, HOST)


@pytest.mark.parametrize("address", ["203.0.113.7", "2001:db8::7"])
def test_ip_host_gets_ip_and_dns_san(data_dir: Path, address: str) -> None:
    """Windows fails with error 13801 unless the IP is also a DNS-type SAN (docs/clients.md)."""
    creds = ensure_self_signed(data_dir, address, now=NOW)
    names = san(creds.leaf)
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(address)]
    assert names.get_values_for_type(x509.DNSName) == [address]
    client_accepts(creds, address)


def test_host_longer_than_a_cn_still_gets_its_san(data_dir: Path) -> None:
    host = "a" * 60 + ".vpn.example.com"
    creds = ensure_self_signed(data_dir, host, now=NOW)
    assert list(san(creds.leaf)) == [x509.DNSName(host)]
    client_accepts(creds, host)


def test_returned_key_is_unencrypted_pkcs8_of_the_certificate(first: ServerCredentials) -> None:
    assert first.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(first.key_pem, password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == first.leaf.public_key().public_bytes(*spki)
    assert first.key_path.read_bytes() == first.key_pem


def test_ca_fingerprint_is_colon_separated_sha256(first: ServerCredentials) -> None:
    assert first.ca is not None
    fingerprint = ca_fingerprint(first.ca)
    pairs = fingerprint.split(":")
    assert len(pairs) == 32
    assert all(len(pair) == 2 for pair in pairs)
    assert bytes.fromhex("".join(pairs)) == first.ca.fingerprint(hashes.SHA256())


# --- restarts --------------------------------------------------------------------------


def test_restart_reuses_ca_and_server_certificate(
    data_dir: Path, first: ServerCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    before = snapshot(data_dir)
    with caplog.at_level(logging.INFO):
        again = ensure_self_signed(data_dir, HOST, now=NOW + timedelta(days=30))
    assert first.ca is not None and again.ca is not None
    assert ca_fingerprint(again.ca) == ca_fingerprint(first.ca)
    assert again.leaf == first.leaf
    assert again.key_pem == first.key_pem
    assert snapshot(data_dir) == before  # nothing rewritten
    assert ca_fingerprint(again.ca) in caplog.text
    assert "server certificate for vpn.example.com reused" in caplog.text


def test_host_change_reissues_server_certificate_under_same_ca(
    data_dir: Path, first: ServerCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    ca_bytes = (data_dir / "ca.crt").read_bytes()
    with caplog.at_level(logging.INFO):
        moved = ensure_self_signed(data_dir, "198.51.100.4", now=NOW)
    assert (data_dir / "ca.crt").read_bytes() == ca_bytes
    assert moved.ca == first.ca
    assert moved.leaf != first.leaf
    assert moved.key_pem != first.key_pem
    assert x509.DNSName("198.51.100.4") in san(moved.leaf)
    assert "host changed from vpn.example.com to 198.51.100.4" in caplog.text
    client_accepts(moved, "198.51.100.4")


@pytest.mark.parametrize(
    ("days_later", "reissued"),
    [(480, False), (490, True), (800, True)],  # a third of 730 days is left at day ~487
)
def test_server_certificate_renewed_with_a_third_of_its_life_left(
    data_dir: Path,
    first: ServerCredentials,
    caplog: pytest.LogCaptureFixture,
    days_later: int,
    reissued: bool,
) -> None:
    later = NOW + timedelta(days=days_later)
    with caplog.at_level(logging.INFO):
        again = ensure_self_signed(data_dir, HOST, now=later)
    assert (again.leaf != first.leaf) is reissued
    assert again.ca == first.ca
    if reissued:
        assert "expires soon" in caplog.text or "expired on" in caplog.text
        assert again.leaf.not_valid_after_utc == later + timedelta(days=730)


def test_server_certificate_from_another_ca_is_replaced(
    tmp_path: Path, data_dir: Path, first: ServerCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "other"
    ensure_self_signed(other, HOST, now=NOW)
    for name in ("server.crt", "server.key"):
        (data_dir / "pki" / name).write_bytes((other / "pki" / name).read_bytes())
    with caplog.at_level(logging.INFO):
        again = ensure_self_signed(data_dir, HOST, now=NOW)
    assert first.ca is not None
    again.leaf.verify_directly_issued_by(first.ca)
    assert "issued by another CA" in caplog.text


def test_crash_between_server_key_and_certificate_is_repaired(
    data_dir: Path, first: ServerCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    stray = new_key("rsa2048").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (data_dir / "pki" / "server.key").write_bytes(stray)
    with caplog.at_level(logging.INFO):
        again = ensure_self_signed(data_dir, HOST, now=NOW)
    assert "key mismatch" in caplog.text
    assert again.leaf != first.leaf
    assert again.ca == first.ca


def test_missing_server_certificate_is_reissued(
    data_dir: Path, first: ServerCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    (data_dir / "pki" / "server.crt").unlink()
    with caplog.at_level(logging.INFO):
        again = ensure_self_signed(data_dir, HOST, now=NOW)
    assert "(missing)" in caplog.text
    assert again.ca == first.ca


def test_restart_tightens_loosened_key_permissions(
    data_dir: Path, first: ServerCredentials
) -> None:
    for key in ("ca.key", "server.key"):
        (data_dir / "pki" / key).chmod(0o644)
    ensure_self_signed(data_dir, HOST, now=NOW)
    assert mode(data_dir / "pki" / "ca.key") == 0o600
    assert mode(data_dir / "pki" / "server.key") == 0o600


def test_leftover_temporaries_are_removed(data_dir: Path, first: ServerCredentials) -> None:
    leftovers = [data_dir / ".ca.crt.abc.tmp", data_dir / "pki" / ".server.key.xyz.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"half")
    ensure_self_signed(data_dir, HOST, now=NOW)
    assert not any(leftover.exists() for leftover in leftovers)


# --- interrupted first start and damaged state --------------------------------------------


def test_interrupted_first_start_with_only_ca_key_creates_a_ca(data_dir: Path) -> None:
    """ca.key is written before ca.crt: no client can have imported that CA yet."""
    ensure_self_signed(data_dir, HOST, now=NOW)
    (data_dir / "ca.crt").unlink()
    old_key = (data_dir / "pki" / "ca.key").read_bytes()
    creds = ensure_self_signed(data_dir, HOST, now=NOW)
    assert creds.ca is not None
    assert (data_dir / "ca.crt").exists()
    assert (data_dir / "pki" / "ca.key").read_bytes() != old_key
    creds.leaf.verify_directly_issued_by(creds.ca)


def test_interrupted_first_start_before_anything_was_written(data_dir: Path) -> None:
    (data_dir / "pki").mkdir(parents=True)
    (data_dir / "pki" / ".ca.key.123.tmp").write_bytes(b"-----BEGIN PRIV")
    creds = ensure_self_signed(data_dir, HOST, now=NOW)
    assert creds.ca is not None
    assert sorted(p.name for p in (data_dir / "pki").iterdir()) == [
        "ca.key",
        "server.crt",
        "server.key",
    ]


def test_lost_ca_key_is_an_error_and_nothing_is_touched(
    data_dir: Path, first: ServerCredentials
) -> None:
    (data_dir / "pki" / "ca.key").unlink()
    before = snapshot(data_dir)
    with pytest.raises(ConfigError) as raised:
        ensure_self_signed(data_dir, HOST, now=NOW)
    assert raised.value.setting == str(data_dir / "pki" / "ca.key")
    assert "is missing" in str(raised.value)
    assert "import the new CA" in raised.value.fix
    assert snapshot(data_dir) == before


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("swap-key", "ca.crt"),  # restored from two different backups
        ("garble-cert", "ca.crt"),
        ("garble-key", "pki/ca.key"),
    ],
)
def test_damaged_ca_is_an_error_naming_the_file(
    data_dir: Path, first: ServerCredentials, damage: str, named: str
) -> None:
    ca_key = data_dir / "pki" / "ca.key"
    if damage == "swap-key":
        other = new_key("rsa2048")
        ca_key.write_bytes(
            other.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    elif damage == "garble-cert":
        (data_dir / "ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    else:
        ca_key.write_bytes(b"not a key")
    before = snapshot(data_dir)
    with pytest.raises(ConfigError) as raised:
        ensure_self_signed(data_dir, HOST, now=NOW)
    error = raised.value
    assert error.setting == str(data_dir / named)
    assert "delete both to start over" in error.fix
    assert str(data_dir / "pki") in error.fix and str(data_dir / "ca.crt") in error.fix
    assert "\n" not in str(error)
    assert "PRIVATE KEY" not in str(error)
    assert snapshot(data_dir) == before


# --- logs ------------------------------------------------------------------------------


def test_logs_say_what_happened_without_key_material(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        creds = ensure_self_signed(data_dir, HOST, now=NOW)
        ensure_self_signed(data_dir, "other.example.com", now=NOW)
    assert creds.ca is not None
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        m.startswith("CA created: ikev2-vpn CA ") and ca_fingerprint(creds.ca) in m
        for m in messages
    )
    assert any(m.startswith("CA reused: ") and "expires 2035-" in m for m in messages)
    assert any(m.startswith("server certificate for vpn.example.com issued") for m in messages)
    key_body = b"".join(creds.key_pem.splitlines()[1:-1]).decode()
    for message in messages:
        assert "PRIVATE KEY" not in message
        assert key_body[:40] not in message
    assert os.linesep not in "".join(messages)


def test_ca_near_its_end_warns_and_an_expired_ca_stops_the_start(
    data_dir: Path, first: ServerCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        ensure_self_signed(data_dir, HOST, now=NOW + timedelta(days=3400))
    assert "the CA expires on 2035-" in caplog.text
    with pytest.raises(ConfigError, match="the CA expired on 2035-"):
        ensure_self_signed(data_dir, HOST, now=NOW + timedelta(days=3651))


def test_server_certificate_never_outlives_the_ca(data_dir: Path, first: ServerCredentials) -> None:
    assert first.ca is not None
    late = ensure_self_signed(data_dir, "late.example.com", now=NOW + timedelta(days=3400))
    assert late.leaf.not_valid_after_utc == first.ca.not_valid_after_utc
