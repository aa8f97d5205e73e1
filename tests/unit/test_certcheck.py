"""The operator's certificate files, checked at start as an operator would check them by eye."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from certfactory import (
    CLIENT_AUTH,
    HOST,
    IKE_INTERMEDIATE,
    NOW,
    SERVER_AUTH,
    Chain,
    Files,
    le_like_chain,
    make_ca,
    make_csr,
    make_leaf,
    mount,
    write,
)
from cryptography.hazmat.primitives import serialization

from ikev2_vpn.errors import ConfigError
from ikev2_vpn.state.certcheck import load_operator_credentials


@pytest.fixture(scope="module")
def le() -> Chain:
    return le_like_chain()


@pytest.fixture
def good(tmp_path: Path, le: Chain) -> Files:
    """certbot's layout: fullchain.pem + privkey.pem, the root only in the system store."""
    return mount(tmp_path, le.leaf, cert=le.fullchain_pem, trust=le.root.cert_pem)


def fails(files: Files) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        files.load()
    error = raised.value
    assert "\n" not in str(error), "errors are one line"
    return error


# --- chains that work ----------------------------------------------------------------------


def test_fullchain_with_root_in_trust_store(good: Files, le: Chain) -> None:
    creds = load_operator_credentials(
        good.cert, good.key, None, HOST, now=NOW, trust_store=good.trust
    )
    assert creds.leaf == le.leaf.cert
    assert creds.intermediates == (le.intermediate.cert,)
    assert creds.ca is None
    assert creds.key_path == good.key
    assert creds.key_pem == le.leaf.key_pem()  # unencrypted PKCS#8


def test_leaf_with_separate_chain_file(tmp_path: Path, le: Chain) -> None:
    files = mount(tmp_path, le.leaf, chain=le.intermediate.cert_pem, trust=le.root.cert_pem)
    creds = load_operator_credentials(
        files.cert, files.key, files.chain, HOST, now=NOW, trust_store=files.trust
    )
    assert creds.intermediates == (le.intermediate.cert,)


def test_private_root_in_chain_file_is_trusted_but_not_sent(tmp_path: Path, le: Chain) -> None:
    files = mount(tmp_path, le.leaf, chain=le.intermediate.cert_pem + le.root.cert_pem)
    assert files.trust is None
    creds = files.load()
    assert creds.intermediates == (le.intermediate.cert,)


def test_duplicates_are_sent_once(tmp_path: Path, le: Chain) -> None:
    """Operators pass fullchain.pem as both VPN_CERT_PATH and VPN_CHAIN_PATH."""
    files = mount(
        tmp_path,
        le.leaf,
        cert=le.fullchain_pem,
        chain=le.fullchain_pem,
        trust=le.root.cert_pem,
    )
    creds = files.load()
    assert creds.intermediates == (le.intermediate.cert,)


def test_expired_cross_signed_root_is_not_needed(tmp_path: Path, le: Chain) -> None:
    """Old Let's Encrypt chains carried the root cross-signed by an expired older root."""
    old_root = make_ca("Old Root CA", not_after=NOW - timedelta(days=200))
    cross = make_ca(
        "Test Root X1", issuer=old_root, same_key_as=le.root, not_after=NOW - timedelta(days=10)
    )
    files = mount(tmp_path, le.leaf, cert=le.fullchain_pem + cross.cert_pem, trust=le.root.cert_pem)
    creds = files.load()
    # Still sent: it is what the operator's CA handed out, and clients skip it.
    assert creds.intermediates == (le.intermediate.cert, cross.cert)


def test_traditional_rsa_key_is_reserialised_as_pkcs8(tmp_path: Path, le: Chain) -> None:
    files = mount(
        tmp_path,
        le.leaf,
        cert=le.fullchain_pem,
        key=le.leaf.key_pem(traditional=True),
        trust=le.root.cert_pem,
    )
    creds = files.load()
    assert creds.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_group_readable_key_is_fine(tmp_path: Path, le: Chain) -> None:
    """Kubernetes secrets are often mounted 0640."""
    mount(tmp_path, le.leaf, cert=le.fullchain_pem, trust=le.root.cert_pem, key_mode=0o640).load()


def test_wildcard_covers_one_label(tmp_path: Path, le: Chain) -> None:
    leaf = make_leaf(le.intermediate, dns=["*.example.com"], cn="*.example.com")
    files = mount(
        tmp_path, leaf, cert=leaf.cert_pem + le.intermediate.cert_pem, trust=le.root.cert_pem
    )
    files.load()
    for host in ("example.com", "a.vpn.example.com"):
        assert "does not cover" in fails(replace(files, host=host)).problem


def test_ip_host_with_ip_and_dns_san_passes_quietly(
    tmp_path: Path, le: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    leaf = make_leaf(le.intermediate, dns=["203.0.113.9"], ips=["203.0.113.9"], cn="x")
    files = mount(
        tmp_path,
        leaf,
        cert=leaf.cert_pem + le.intermediate.cert_pem,
        trust=le.root.cert_pem,
        host="203.0.113.9",
    )
    with caplog.at_level(logging.WARNING):
        files.load()
    assert caplog.text == ""


def test_ip_host_with_only_ip_san_warns_about_windows_13801(
    tmp_path: Path, le: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    leaf = make_leaf(le.intermediate, dns=[], ips=["2001:db8::9"], cn="x")
    files = mount(
        tmp_path,
        leaf,
        cert=leaf.cert_pem + le.intermediate.cert_pem,
        trust=le.root.cert_pem,
        host="2001:db8::9",
    )
    with caplog.at_level(logging.WARNING):
        files.load()
    assert "13801" in caplog.text


def test_ecdsa_is_accepted_with_a_warning_about_apple(
    tmp_path: Path, le: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    leaf = make_leaf(le.intermediate, key="p256", eku=[SERVER_AUTH, IKE_INTERMEDIATE])
    files = mount(
        tmp_path, leaf, cert=leaf.cert_pem + le.intermediate.cert_pem, trust=le.root.cert_pem
    )
    with caplog.at_level(logging.WARNING):
        files.load()
    assert "ECDSA" in caplog.text
    assert "Apple" in caplog.text


def test_certificate_expiring_within_two_weeks_warns(
    good: Files, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        replace(good, now=NOW + timedelta(days=50)).load()  # leaf ends at NOW + 60 days
    assert "expires on 2025-07-31" in caplog.text


def test_no_warning_for_a_healthy_certificate(
    good: Files, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        good.load()
    assert caplog.text == ""


# --- failures --------------------------------------------------------------------------

Setup = Callable[[Path, Chain], Files]


def _leaf_only(**options: object) -> Setup:
    """A chain whose leaf is made with ``options``, mounted certbot-style."""

    def setup(tmp_path: Path, le: Chain) -> Files:
        leaf = make_leaf(le.intermediate, **options)  # type: ignore[arg-type]
        return mount(
            tmp_path, leaf, cert=leaf.cert_pem + le.intermediate.cert_pem, trust=le.root.cert_pem
        )

    return setup


def _good(
    tmp_path: Path,
    le: Chain,
    *,
    cert: bytes | None = None,
    chain: bytes | None = None,
    trust: bytes | None = None,
    key: bytes | None = None,
    key_mode: int = 0o600,
) -> Files:
    """certbot's layout with one file changed."""
    return mount(
        tmp_path,
        le.leaf,
        cert=le.fullchain_pem if cert is None else cert,
        chain=chain,
        trust=le.root.cert_pem if trust is None else trust,
        key=key,
        key_mode=key_mode,
    )


def _dangling_symlink(tmp_path: Path, le: Chain) -> Files:
    files = _good(tmp_path, le)
    files.cert.unlink()
    files.cert.symlink_to("../../archive/example.com/fullchain1.pem")
    return files


def _directory(tmp_path: Path, le: Chain) -> Files:
    files = _good(tmp_path, le)
    files.cert.unlink()
    files.cert.mkdir()
    return files


def _truncated(pem: bytes) -> bytes:
    return pem[: len(pem) // 2]


def _damaged(pem: bytes) -> bytes:
    lines = pem.splitlines(keepends=True)
    return b"".join([lines[0], b"!!!!not base64!!!!\n", *lines[1:]])


def _other_generation(tmp_path: Path, le: Chain) -> Files:
    impostor = make_ca("Test R10", issuer=le.root)  # same name, new key
    return mount(
        tmp_path, le.leaf, cert=le.leaf.cert_pem + impostor.cert_pem, trust=le.root.cert_pem
    )


def _expired_intermediate(tmp_path: Path, le: Chain) -> Files:
    intermediate = make_ca("Old R3", issuer=le.root, not_after=NOW - timedelta(days=1))
    leaf = make_leaf(intermediate)
    return mount(tmp_path, leaf, cert=leaf.cert_pem + intermediate.cert_pem, trust=le.root.cert_pem)


def _intermediate_without_key_usage(tmp_path: Path, le: Chain) -> Files:
    intermediate = make_ca("Sloppy CA", issuer=le.root, key_usage=False)
    leaf = make_leaf(intermediate)
    return mount(tmp_path, leaf, cert=leaf.cert_pem + intermediate.cert_pem, trust=le.root.cert_pem)


def _self_signed_leaf(tmp_path: Path, le: Chain) -> Files:
    leaf = make_leaf(None)
    return mount(tmp_path, leaf, cert=leaf.cert_pem, trust=le.root.cert_pem)


def _wrong_key(tmp_path: Path, le: Chain) -> Files:
    return _good(tmp_path, le, key=make_leaf(le.intermediate).key_pem())


def _reversed_fullchain(tmp_path: Path, le: Chain) -> Files:
    return _good(tmp_path, le, cert=le.intermediate.cert_pem + le.leaf.cert_pem)


def _encrypted_legacy(tmp_path: Path, le: Chain) -> Files:
    key = le.leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"secret"),
    )
    return _good(tmp_path, le, key=key)


FAILURES: dict[str, tuple[Setup, str, str]] = {
    # name: (setup, setting, words the operator must see)
    "cert missing": (
        lambda t, le: replace(_good(t, le), cert=t / "nope.pem"),
        "VPN_CERT_PATH",
        "does not exist",
    ),
    "cert dangling symlink": (_dangling_symlink, "VPN_CERT_PATH", "all of /etc/letsencrypt"),
    "cert is a directory": (_directory, "VPN_CERT_PATH", "is a directory"),
    "cert empty": (lambda t, le: _good(t, le, cert=b"\n"), "VPN_CERT_PATH", "is empty"),
    "cert is DER": (
        lambda t, le: _good(t, le, cert=le.leaf.cert.public_bytes(serialization.Encoding.DER)),
        "VPN_CERT_PATH",
        "not PEM",
    ),
    "cert file holds the key": (
        lambda t, le: _good(t, le, cert=le.leaf.key_pem()),
        "VPN_CERT_PATH",
        "holds a private key, not a certificate",
    ),
    "cert file holds a CSR": (
        lambda t, le: _good(t, le, cert=make_csr()),
        "VPN_CERT_PATH",
        "certificate signing request",
    ),
    "cert truncated": (
        lambda t, le: _good(t, le, cert=_truncated(le.fullchain_pem)),
        "VPN_CERT_PATH",
        "cut off",
    ),
    "cert damaged": (
        lambda t, le: _good(t, le, cert=_damaged(le.fullchain_pem)),
        "VPN_CERT_PATH",
        "damaged",
    ),
    "chain missing": (
        lambda t, le: replace(_good(t, le), chain=t / "chain.pem"),
        "VPN_CHAIN_PATH",
        "does not exist",
    ),
    "chain holds a key": (
        lambda t, le: _good(t, le, chain=le.leaf.key_pem()),
        "VPN_CHAIN_PATH",
        "not a certificate",
    ),
    "key missing": (
        lambda t, le: replace(_good(t, le), key=t / "nope.key"),
        "VPN_KEY_PATH",
        "does not exist",
    ),
    "key world-readable": (
        lambda t, le: _good(t, le, key_mode=0o644),
        "VPN_KEY_PATH",
        "chmod 600",
    ),
    "key file holds a certificate": (
        lambda t, le: _good(t, le, key=le.leaf.cert_pem),
        "VPN_KEY_PATH",
        "holds a certificate, not a private key",
    ),
    "key truncated": (
        lambda t, le: _good(t, le, key=_truncated(le.leaf.key_pem())),
        "VPN_KEY_PATH",
        "cut off",
    ),
    "key damaged": (
        lambda t, le: _good(t, le, key=_damaged(le.leaf.key_pem())),
        "VPN_KEY_PATH",
        "does not decode",
    ),
    "key encrypted (PKCS#8)": (
        lambda t, le: _good(t, le, key=le.leaf.key_pem(password=b"secret")),
        "VPN_KEY_PATH",
        "provide an unencrypted key",
    ),
    "key encrypted (legacy)": (_encrypted_legacy, "VPN_KEY_PATH", "provide an unencrypted key"),
    "key of another certificate": (
        _wrong_key,
        "VPN_KEY_PATH",
        "does not belong to the certificate in VPN_CERT_PATH; use the key",
    ),
    "fullchain in wrong order": (
        _reversed_fullchain,
        "VPN_KEY_PATH",
        "put the server certificate first",
    ),
    "RSA-1024": (_leaf_only(key="rsa1024"), "VPN_KEY_PATH", "RSA-1024"),
    "Ed25519": (_leaf_only(key="ed25519"), "VPN_KEY_PATH", "Ed25519, which native VPN clients"),
    "ECDSA P-224": (_leaf_only(key="p224"), "VPN_KEY_PATH", "secp224r1"),
    "not yet valid": (
        _leaf_only(not_before=NOW + timedelta(days=2)),
        "VPN_CERT_PATH",
        "not valid until 2025-06-03",
    ),
    "expired": (
        _leaf_only(not_after=NOW - timedelta(days=3)),
        "VPN_CERT_PATH",
        "expired on 2025-05-29",
    ),
    "no EKU": (_leaf_only(eku=None), "VPN_CERT_PATH", "has no Extended Key Usage"),
    "clientAuth only": (
        _leaf_only(eku=[CLIENT_AUTH, IKE_INTERMEDIATE]),
        "VPN_CERT_PATH",
        "lacks Extended Key Usage serverAuth",
    ),
    "other host": (
        _leaf_only(dns=["mail.example.com"], cn="mail.example.com"),
        "VPN_CERT_PATH",
        "does not cover vpn.example.com (its subjectAltName lists mail.example.com)",
    ),
    "host only in CN": (
        _leaf_only(dns=["www.example.com"]),
        "VPN_CERT_PATH",
        "only in its CN",
    ),
    "intermediate missing": (
        lambda t, le: _good(t, le, cert=le.leaf.cert_pem),
        "VPN_CERT_PATH",
        "no certificate for 'CN=Test R10,O=Test PKI,C=US'",
    ),
    "intermediate missing from chain file": (
        lambda t, le: _good(t, le, cert=le.leaf.cert_pem, chain=le.root.cert_pem),
        "VPN_CHAIN_PATH",
        "add that CA certificate to VPN_CHAIN_PATH",
    ),
    "root in no trust store": (
        lambda t, le: replace(_good(t, le), trust=None),
        "VPN_CERT_PATH",
        "no certificate for 'CN=Test Root X1,O=Test PKI,C=US'",
    ),
    "root missing from trust store": (
        lambda t, le: _good(t, le, trust=make_ca("Some Other Root").cert_pem),
        "VPN_CERT_PATH",
        "Test Root X1",
    ),
    "intermediate of another generation": (_other_generation, "VPN_CERT_PATH", "not signed by"),
    "intermediate expired": (
        _expired_intermediate,
        "VPN_CERT_PATH",
        "the intermediate 'CN=Old R3,O=Test PKI,C=US' expired on 2025-05-31 12:00 UTC; use",
    ),
    "intermediate breaks the CA profile": (
        _intermediate_without_key_usage,
        "VPN_CERT_PATH",
        "fails path validation",
    ),
    "self-signed leaf": (_self_signed_leaf, "VPN_CERT_PATH", "self-signed"),
}


@pytest.mark.parametrize("case", FAILURES, ids=list(FAILURES))
def test_each_problem_is_one_line_naming_the_setting(tmp_path: Path, le: Chain, case: str) -> None:
    setup, setting, words = FAILURES[case]
    error = fails(setup(tmp_path, le))
    assert error.setting == setting
    assert words in str(error)
    assert str(error).startswith(f"{setting}: ")
    assert error.fix  # every error says what to do


def test_ip_host_needs_an_ip_san(tmp_path: Path, le: Chain) -> None:
    """A DNS-type entry with the IP's text alone does not satisfy clients."""
    leaf = make_leaf(le.intermediate, dns=["203.0.113.9"], cn="203.0.113.9")
    files = mount(
        tmp_path,
        leaf,
        cert=leaf.cert_pem + le.intermediate.cert_pem,
        trust=le.root.cert_pem,
        host="203.0.113.9",
    )
    error = fails(files)
    assert error.setting == "VPN_CERT_PATH"
    assert "203.0.113.9 as an IP address in subjectAltName" in error.fix


def test_unreadable_cert(good: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, which reads any file whatever its mode: make the read fail instead.
    real_read = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path == good.cert:
            raise PermissionError(13, "Permission denied")
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert "is not readable" in fails(good).problem


@pytest.mark.parametrize("case", FAILURES, ids=list(FAILURES))
def test_errors_never_contain_key_material(tmp_path: Path, le: Chain, case: str) -> None:
    setup = FAILURES[case][0]
    files = setup(tmp_path, le)
    secret = files.key.read_bytes() if files.key.is_file() else le.leaf.key_pem()
    body = [line for line in secret.splitlines() if line and not line.startswith(b"-----")]
    message = str(fails(files))
    assert "PRIVATE KEY-----" not in message
    for line in body:
        assert line.decode(errors="replace")[:24] not in message


def test_missing_trust_store_leaves_roots_in_the_files(
    tmp_path: Path, le: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    files = mount(tmp_path, le.leaf, cert=le.fullchain_pem + le.root.cert_pem)
    with caplog.at_level(logging.WARNING):
        replace(files, trust=tmp_path / "absent.crt").load()
    assert "trust store" in caplog.text
    assert "Test Root X1" in fails(replace(files, cert=write(files.cert, le.fullchain_pem))).problem


def test_files_edited_on_windows_still_load(tmp_path: Path, le: Chain) -> None:
    """CRLF line endings, a byte-order mark and openssl's 'Bag Attributes' text."""

    def windows(pem: bytes) -> bytes:
        return b"\xef\xbb\xbfBag Attributes\r\n" + pem.replace(b"\n", b"\r\n")

    files = mount(
        tmp_path,
        le.leaf,
        cert=windows(le.fullchain_pem),
        key=windows(le.leaf.key_pem()),
        trust=le.root.cert_pem,
    )
    assert files.load().intermediates == (le.intermediate.cert,)


def test_key_path_pointing_at_a_directory(good: Files) -> None:
    directory = good.key.parent / "keys"
    directory.mkdir(mode=0o755)
    error = fails(replace(good, key=directory))
    assert error.setting == "VPN_KEY_PATH"
    assert "is a directory" in error.problem
