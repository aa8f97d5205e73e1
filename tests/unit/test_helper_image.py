"""Building the server image: extra CAs and the concise build log."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.image import (
    build_args,
    follow_build,
    host_extra_cas,
    pem_certificates,
    read_ca_files,
)

CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\nAbCd+/==\n-----END CERTIFICATE-----"


def test_pem_blocks_are_found_and_normalised() -> None:
    text = f"junk\r\n{CERT.replace(chr(10), chr(13) + chr(10))}\r\nmore\n{CERT}\n"
    assert pem_certificates(text) == [CERT, CERT]
    assert pem_certificates("no certificate here") == []


def test_ca_files_are_read_and_deduplicated(tmp_path: Path) -> None:
    first = tmp_path / "proxy.crt"
    first.write_text(CERT + "\n")
    second = tmp_path / "sub" / "again.crt"
    second.parent.mkdir()
    second.write_text(CERT + "\n")
    assert host_extra_cas(tmp_path) == [first, second]
    assert read_ca_files([first, second]) == [CERT]


def test_a_file_without_certificate_is_an_operator_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.crt"
    empty.write_text("nothing\n")
    with pytest.raises(HelperError, match="holds no PEM certificate"):
        read_ca_files([empty])
    with pytest.raises(HelperError, match="cannot read"):
        read_ca_files([tmp_path / "missing.crt"])


def test_missing_ca_directory_means_no_extra_cas(tmp_path: Path) -> None:
    assert host_extra_cas(tmp_path / "none") == []


def test_build_args_pass_the_base_and_the_cas() -> None:
    assert build_args("ikev2-vpn-base:trixie", []) == {"BASE_IMAGE": "ikev2-vpn-base:trixie"}
    arguments = build_args("debian:trixie-slim", [CERT, CERT])
    assert arguments["EXTRA_CA_CERTS"] == f"{CERT}\n{CERT}\n"


def test_build_log_shows_steps_and_keeps_the_tail_for_errors() -> None:
    shown: list[str] = []
    messages = [
        {"stream": "Step 1/2 : FROM debian:trixie-slim\n"},
        {"stream": " ---> abc\n"},
        {"stream": "Step 2/2 : RUN false\n"},
        {"stream": "some output\n"},
        {"error": "The command '/bin/sh -c false' returned a non-zero code: 1"},
    ]
    output = follow_build(messages, shown.append, verbose=False)
    assert shown == ["Step 1/2 : FROM debian:trixie-slim", "Step 2/2 : RUN false"]
    assert output.error == "The command '/bin/sh -c false' returned a non-zero code: 1"
    assert output.lines[-1] == "some output"
    assert output.image_id is None


def test_build_log_finds_the_image_id() -> None:
    output = follow_build([{"aux": {"ID": "sha256:0123"}}], lambda _: None, verbose=True)
    assert output.image_id == "sha256:0123"
    assert output.error is None
