"""`ikev2-vpn ca rotate` outside a running server (a one-off container on the volume)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from ikev2_vpn import cli, defaults
from ikev2_vpn.run import users_live
from ikev2_vpn.state.pki import ca_fingerprint, ensure_self_signed

HOST = "vpn.example.com"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.upper().startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VPN_HOST", HOST)
    data = tmp_path / "data"
    monkeypatch.setattr(defaults, "DATA_DIR", data)
    monkeypatch.setattr(cli, "CONTAINER_LOG", tmp_path / "container.log")
    return data


@pytest.fixture(autouse=True)
def root_logger() -> Iterator[None]:
    """The command points the root logger at this test's captured streams: put it back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_rotate_replaces_the_ca_and_says_what_happens_next(
    environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = ensure_self_signed(environment, HOST).ca
    assert old is not None
    assert cli.main(["ca", "rotate"]) == 0
    out = capsys.readouterr().out
    new = x509.load_pem_x509_certificate((environment / "ca.crt").read_bytes())
    assert new != old
    assert f"new CA for {HOST}: ikev2-vpn CA " in out
    assert ca_fingerprint(new) in out
    retired = next((environment / "pki" / "retired").iterdir())
    assert f"kept in {retired}" in out
    assert "the next start serves the new certificate" in out
    assert "every device must import the new ca.crt" in out


def test_rotate_without_a_ca_is_one_line(
    environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ca", "rotate"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"ikev2-vpn: error: {environment / 'ca.crt'}: does not exist, so there is no CA to "
        "replace; start the server with VPN_CERT=self-signed: the first start makes one"
    ]


def test_rotate_needs_the_host_when_no_server_runs(
    environment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_self_signed(environment, HOST)
    before = (environment / "ca.crt").read_bytes()
    monkeypatch.delenv("VPN_HOST")
    assert cli.main(["ca", "rotate"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("ikev2-vpn: error: VPN_HOST is not set")
    assert (environment / "ca.crt").read_bytes() == before


def test_ca_help_explains_rotation(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["ca", "--help"])
    out = capsys.readouterr().out
    assert "/data/pki/retired/" in out
    assert "docker compose run --rm vpn ca rotate" in out


def test_rotate_on_a_running_server_signs_later_profiles_with_the_new_certificate(
    environment: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The facts `users` and `share` read name the new CA and the new server certificate,
    whose key is the one now in /data (an old certificate with the new key would sign
    profiles no device can verify)."""
    facts_file = tmp_path / "server.json"
    read, save = users_live.running_facts, users_live.save_facts
    save(users_live.server_facts(HOST, True, ensure_self_signed(environment, HOST)), facts_file)
    monkeypatch.setattr(users_live, "running_facts", lambda: read(facts_file))
    monkeypatch.setattr(users_live, "save_facts", lambda facts: save(facts, facts_file))
    assert cli.main(["ca", "rotate"]) == 0
    facts = read(facts_file)
    assert facts is not None
    new = x509.load_pem_x509_certificate((environment / "ca.crt").read_bytes())
    assert facts.ca == new
    signer = facts.signer()
    assert signer is not None
    assert signer.certificate.issuer == new.subject
    assert signer.certificate.public_key() == signer.key.public_key()
