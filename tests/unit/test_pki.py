"""The self-signed CA and server certificate, as users and operators notice them."""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from certfactory import IKE_INTERMEDIATE, NOW, SERVER_AUTH, Issued, make_leaf, new_key
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from ikev2_vpn.errors import ConfigError
from ikev2_vpn.state.credentials import ServerCredentials
from ikev2_vpn.state.pki import ca_fingerprint, ensure_self_signed, rotate

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


def stolen_ca(data_dir: Path) -> Issued:
    """What a copy of the volume gives an attacker: the CA certificate and its key."""
    cert = x509.load_pem_x509_certificate((data_dir / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key(
        (data_dir / "pki" / "ca.key").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return Issued(cert, key)


def legacy_ca(data_dir: Path) -> x509.Certificate:
    """Replace ca.crt with what earlier versions made from the same key: ten years, no name
    constraints (same subject and key, so certificates it issued stay valid)."""
    ca = stolen_ca(data_dir)
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=3650))
    )
    for extension in ca.cert.extensions:
        if not isinstance(extension.value, x509.NameConstraints):
            builder = builder.add_extension(extension.value, extension.critical)
    cert = builder.sign(ca.key, hashes.SHA256())
    (data_dir / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def openssl_refusal(
    ca: x509.Certificate, leaf: x509.Certificate, key_pem: bytes, host: str, tmp_path: Path
) -> str | None:
    """A TLS handshake in memory through OpenSSL (Python's ssl module), the client trusting
    only ``ca`` and dialling ``host``: None when it accepts ``leaf``, else OpenSSL's reason."""
    chain, key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(key_pem)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(chain, key)
    client_side = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
    client_side.load_verify_locations(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_side.wrap_bio(to_client, to_server, server_hostname=host)
    from_client, from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_side.wrap_bio(from_client, from_server, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        try:
            client.do_handshake()
            done["client"] = True
        except ssl.SSLCertVerificationError as refused:
            return str(refused.verify_message)
        except ssl.SSLWantReadError:
            pass
        from_client.write(to_server.read())
        try:
            server.do_handshake()
            done["server"] = True
        except ssl.SSLWantReadError:
            pass
        to_client.write(from_server.read())
        if all(done.values()):
            return None
    raise AssertionError("the in-memory handshake did not finish")


def key_pem(issued: Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


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
    assert timedelta(days=1826) <= lifetime <= timedelta(days=1827)  # five years


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
    if ":" not in address:
        # cryptography's verifier calls "2001:db8::7" a malformed DNS name under the CA's
        # DNS constraint; OpenSSL, strongSwan and the devices compare it as text
        # (test_openssl_accepts_the_servers_own_certificate, tests/e2e/test_ca.py).
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


def test_host_change_reissues_server_certificate_under_an_unconstrained_ca(
    data_dir: Path, first: ServerCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    """A CA made before name constraints existed can sign for the new host: devices that
    trust it keep working."""
    legacy_ca(data_dir)
    first = replace(first, ca=x509.load_pem_x509_certificate((data_dir / "ca.crt").read_bytes()))
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
        ensure_self_signed(data_dir, "other.vpn.example.com", now=NOW)
    assert creds.ca is not None
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        m.startswith("CA created: ikev2-vpn CA ") and ca_fingerprint(creds.ca) in m
        for m in messages
    )
    assert any(m.startswith("CA reused: ") and "expires 2030-" in m for m in messages)
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
        ensure_self_signed(data_dir, HOST, now=NOW + timedelta(days=1526))
    assert "the CA expires on 2030-" in caplog.text
    assert "ikev2-vpn ca rotate" in caplog.text
    with pytest.raises(ConfigError, match="the CA expired on 2030-"):
        ensure_self_signed(data_dir, HOST, now=NOW + timedelta(days=1827))


def test_server_certificate_never_outlives_the_ca(data_dir: Path, first: ServerCredentials) -> None:
    assert first.ca is not None
    late = ensure_self_signed(data_dir, HOST, now=NOW + timedelta(days=1600))
    assert late.leaf.not_valid_after_utc == first.ca.not_valid_after_utc


# --- a CA that signs nothing else ------------------------------------------------------


def constraints(creds: ServerCredentials) -> x509.Extension[x509.NameConstraints]:
    assert creds.ca is not None
    return creds.ca.extensions.get_extension_for_class(x509.NameConstraints)


def test_ca_for_a_dns_name_may_sign_for_that_name_and_no_ip_address(
    first: ServerCredentials,
) -> None:
    extension = constraints(first)
    assert extension.critical
    assert extension.value.permitted_subtrees == [x509.DNSName(HOST)]
    assert extension.value.excluded_subtrees == [
        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.ip_network("::/0")),
    ]


@pytest.mark.parametrize(("address", "network"), [("203.0.113.7", "/32"), ("2001:db8::7", "/128")])
def test_ca_for_an_ip_address_may_sign_for_that_address_only(
    data_dir: Path, address: str, network: str
) -> None:
    extension = constraints(ensure_self_signed(data_dir, address, now=NOW))
    assert extension.critical
    assert extension.value.permitted_subtrees == [
        x509.IPAddress(ipaddress.ip_network(address + network)),
        x509.DNSName(address),  # the SAN's DNS form, which Windows needs, and no other name
    ]
    assert extension.value.excluded_subtrees is None


ROGUE_NAMES = {
    "another site": {"dns": ("www.bank.example",), "cn": "www.bank.example"},
    "a look-alike": {"dns": ("vpn.example.com.evil.example",), "cn": "x"},
    "an IP address": {"dns": (), "ips": ("192.0.2.10",), "cn": "192.0.2.10"},
}


@pytest.mark.parametrize("rogue", ROGUE_NAMES, ids=list(ROGUE_NAMES))
@pytest.mark.parametrize("host", [HOST, "203.0.113.7"])
def test_a_stolen_ca_key_cannot_mint_a_certificate_for_another_name(
    data_dir: Path, tmp_path: Path, host: str, rogue: str
) -> None:
    """The attack of finding 5: a copy of /data/pki/ca.key signs a certificate for a site
    the CA's devices visit. OpenSSL and cryptography's verifier both refuse it."""
    creds = ensure_self_signed(data_dir, host, now=NOW)
    assert creds.ca is not None
    names = dict(ROGUE_NAMES[rogue])
    forged = make_leaf(
        stolen_ca(data_dir),
        dns=names["dns"],
        ips=names.get("ips", ()),
        cn=str(names["cn"]),
        not_before=NOW - timedelta(hours=1),  # valid today, wherever the test runs
        not_after=NOW + timedelta(days=3000),
    )
    target = (list(names["dns"]) + list(names.get("ips", ())))[0]
    refusal = openssl_refusal(creds.ca, forged.cert, key_pem(forged), target, tmp_path)
    assert refusal is not None and "subtree violation" in refusal, refusal
    subject: x509.DNSName | x509.IPAddress = (
        x509.DNSName(target) if names["dns"] else x509.IPAddress(ipaddress.ip_address(target))
    )
    verifier = PolicyBuilder().store(Store([creds.ca])).time(NOW).build_server_verifier(subject)
    with pytest.raises(VerificationError):
        verifier.verify(forged.cert, [])


def test_without_name_constraints_the_stolen_key_could_mint_any_name(
    data_dir: Path, first: ServerCredentials, tmp_path: Path
) -> None:
    """The same forgery against a CA as earlier versions made it: accepted (why rotate)."""
    old = legacy_ca(data_dir)
    forged = make_leaf(
        stolen_ca(data_dir),
        dns=("www.bank.example",),
        cn="www.bank.example",
        not_before=NOW - timedelta(hours=1),
        not_after=NOW + timedelta(days=3000),
    )
    assert openssl_refusal(old, forged.cert, key_pem(forged), "www.bank.example", tmp_path) is None


@pytest.mark.parametrize("host", [HOST, "203.0.113.7", "2001:db8::7"])
def test_openssl_accepts_the_servers_own_certificate(
    data_dir: Path, tmp_path: Path, host: str
) -> None:
    creds = ensure_self_signed(data_dir, host, now=NOW)
    assert creds.ca is not None
    # The server's dates are the real ones' (NOW is in the past): check against today.
    today = ensure_self_signed(tmp_path / "today", host)
    assert today.ca is not None
    assert openssl_refusal(today.ca, today.leaf, today.key_pem, host, tmp_path) is None


def test_a_host_under_vpn_host_keeps_the_ca(
    data_dir: Path, first: ServerCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        moved = ensure_self_signed(data_dir, "new.vpn.example.com", now=NOW)
    assert moved.ca == first.ca
    client_accepts(moved, "new.vpn.example.com")


@pytest.mark.parametrize("new_host", ["vpn2.example.com", "198.51.100.4", "example.com"])
def test_a_host_the_ca_cannot_sign_for_stops_the_start_with_one_line(
    data_dir: Path, first: ServerCredentials, new_host: str
) -> None:
    before = snapshot(data_dir)
    with pytest.raises(ConfigError) as raised:
        ensure_self_signed(data_dir, new_host, now=NOW)
    error = raised.value
    assert error.setting == "VPN_HOST"
    assert f"{new_host} is not a name the CA in {data_dir / 'ca.crt'} may sign for" in str(error)
    assert f"(only {HOST})" in str(error)
    assert "set VPN_HOST back" in error.fix and "ikev2-vpn ca rotate" in error.fix
    assert "\n" not in error.line()
    assert snapshot(data_dir) == before


def test_an_unconstrained_ca_is_reused_as_is_with_a_warning(
    data_dir: Path, first: ServerCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    old = legacy_ca(data_dir)
    before = snapshot(data_dir)
    with caplog.at_level(logging.WARNING):
        again = ensure_self_signed(data_dir, HOST, now=NOW)
    assert again.ca == old
    assert snapshot(data_dir) == before
    assert "has no name constraints" in caplog.text
    assert "ikev2-vpn ca rotate" in caplog.text


# --- rotation ------------------------------------------------------------------------------


def test_rotation_makes_a_constrained_ca_and_keeps_the_old_one_aside(
    data_dir: Path, first: ServerCredentials, tmp_path: Path
) -> None:
    old = legacy_ca(data_dir)
    old_files = {
        name: path.read_bytes()
        for name, path in {
            "ca.crt": data_dir / "ca.crt",
            "ca.key": data_dir / "pki" / "ca.key",
            "server.crt": data_dir / "pki" / "server.crt",
            "server.key": data_dir / "pki" / "server.key",
        }.items()
    }
    (data_dir / "users.json").write_bytes(b"{}")
    later = NOW + timedelta(days=10)
    rotation = rotate(data_dir, HOST, now=later)

    assert rotation.old == old
    assert rotation.new != old
    assert (data_dir / "ca.crt").read_bytes() == rotation.new.public_bytes(
        serialization.Encoding.PEM
    )
    assert rotation.new.extensions.get_extension_for_class(x509.NameConstraints).critical
    assert rotation.retired.parent == data_dir / "pki" / "retired"
    assert rotation.retired.name.startswith("20250611T120000Z-")
    assert mode(rotation.retired) == 0o700
    assert {path.name: path.read_bytes() for path in rotation.retired.iterdir()} == old_files
    assert mode(rotation.retired / "ca.key") == 0o600
    assert mode(data_dir / "pki" / "ca.key") == 0o600
    assert (data_dir / "users.json").read_bytes() == b"{}"
    again = ensure_self_signed(data_dir, HOST, now=later)  # the next start
    assert again.ca == rotation.new
    again.leaf.verify_directly_issued_by(rotation.new)
    with pytest.raises(ValueError):
        again.leaf.verify_directly_issued_by(old)


def test_rotation_for_a_new_host_lets_the_server_start_again(
    data_dir: Path, first: ServerCredentials
) -> None:
    with pytest.raises(ConfigError):
        ensure_self_signed(data_dir, "vpn2.example.com", now=NOW)
    rotation = rotate(data_dir, "vpn2.example.com", now=NOW)
    creds = ensure_self_signed(data_dir, "vpn2.example.com", now=NOW)
    assert creds.ca == rotation.new
    client_accepts(creds, "vpn2.example.com")


def test_rotation_replaces_a_ca_whose_key_is_lost(data_dir: Path, first: ServerCredentials) -> None:
    (data_dir / "pki" / "ca.key").unlink()
    rotation = rotate(data_dir, HOST, now=NOW)
    assert sorted(path.name for path in rotation.retired.iterdir()) == [
        "ca.crt",
        "server.crt",
        "server.key",
    ]
    assert ensure_self_signed(data_dir, HOST, now=NOW).ca == rotation.new


def test_rotation_without_a_ca_says_so(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist, so there is no CA to replace"):
        rotate(data_dir, HOST, now=NOW)
    assert not data_dir.exists() or not any(data_dir.rglob("*"))


def test_a_rotation_cut_short_after_the_old_certificate_went_ends_with_a_new_ca(
    data_dir: Path, first: ServerCredentials
) -> None:
    """rotate() removes ca.crt first: a crash there is an interrupted first start."""
    (data_dir / "ca.crt").unlink()
    creds = ensure_self_signed(data_dir, HOST, now=NOW)
    assert creds.ca is not None and creds.ca != first.ca
