"""Building the server image: extra CAs and the concise build log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ikev2_vpn_helper import image
from ikev2_vpn_helper.base import BaseChoice
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.image import (
    BuildPlan,
    build_args,
    build_for_platforms,
    follow_build,
    host_extra_cas,
    pem_certificates,
    read_ca_files,
)
from ikev2_vpn_helper.platforms import AMD64, ARM64, ARMV7, Platform

ROOT = Path(__file__).parents[2]
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


# --- one image per platform ---------------------------------------------------------------------


class FakeBuilder:
    """An amd64 engine whose builder makes an image for the platform asked, or for
    ``gives`` when set (a base of the wrong architecture)."""

    def __init__(self, gives: Platform | None = None) -> None:
        self.gives = gives
        self.builds: list[dict[str, Any]] = []
        self.tags: list[str] = []
        self.attrs: dict[str, dict[str, Any]] = {}
        self.api = SimpleNamespace(build=self.build, tag=self.tag)
        self.images = SimpleNamespace(get=lambda ref: SimpleNamespace(attrs=self.attrs[ref]))

    def info(self) -> dict[str, str]:
        return {"Architecture": "x86_64"}

    def build(self, **options: Any) -> Iterator[dict[str, Any]]:
        self.builds.append(options)
        platform = self.gives or next(
            p for p in (AMD64, ARM64, ARMV7) if p.docker == options["platform"]
        )
        image_id = f"sha256:{len(self.builds):064d}"
        self.attrs[image_id] = {
            "Os": "linux",
            "Architecture": platform.architecture,
            "Variant": platform.variant or "",
            "Size": 250e6,
        }
        yield {"aux": {"ID": image_id}}

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        self.tags.append(f"{repository}:{tag}")


@pytest.fixture
def bases(monkeypatch: pytest.MonkeyPatch) -> list[Platform]:
    """Base images found without Docker; the platforms asked for, in order."""
    asked: list[Platform] = []

    def ensure(_engine: object, _reference: str, *, platform: Platform, **_: object) -> BaseChoice:
        asked.append(platform)
        return BaseChoice(f"ikev2-vpn-base:trixie-{platform.suffix}", "present locally")

    monkeypatch.setattr(image, "ensure_base_image", ensure)
    return asked


@pytest.fixture
def binfmt(tmp_path: Path) -> Path:
    (tmp_path / "status").write_text("enabled\n")
    for entry in ("qemu-aarch64", "qemu-arm"):
        (tmp_path / entry).write_text("enabled\ninterpreter /x\nflags: POF\n")
    return tmp_path


def test_every_platform_is_built_on_its_own_base_and_tagged(
    tmp_path: Path, binfmt: Path, bases: list[Platform]
) -> None:
    engine = FakeBuilder()
    report: list[str] = []
    built = build_for_platforms(
        engine,
        [AMD64, ARM64, ARMV7],
        "ikev2-vpn:arch",
        BuildPlan(context=ROOT),
        log=lambda _: None,
        report=report.append,
        binfmt_dir=binfmt,
    )
    assert built == {
        AMD64: "ikev2-vpn:arch-amd64",
        ARM64: "ikev2-vpn:arch-arm64",
        ARMV7: "ikev2-vpn:arch-armv7",
    }
    assert bases == [AMD64, ARM64, ARMV7]
    assert [b["platform"] for b in engine.builds] == ["linux/amd64", "linux/arm64", "linux/arm/v7"]
    assert [b["buildargs"]["BASE_IMAGE"] for b in engine.builds] == [
        "ikev2-vpn-base:trixie-amd64",
        "ikev2-vpn-base:trixie-arm64",
        "ikev2-vpn-base:trixie-armv7",
    ]
    assert engine.tags == ["ikev2-vpn:arch"]  # the engine's own platform: the plain tag too
    assert len(report) == 3
    assert report[1].startswith("built ikev2-vpn:arch-arm64 for linux/arm64 (")
    assert "250 MB" in report[1]


def test_missing_emulation_stops_before_anything_starts(
    tmp_path: Path, bases: list[Platform]
) -> None:
    engine = FakeBuilder()
    with pytest.raises(HelperError, match=r"linux/arm64 .* binfmt_misc is not mounted"):
        build_for_platforms(
            engine,
            [AMD64, ARM64],
            "ikev2-vpn:arch",
            BuildPlan(context=ROOT),
            binfmt_dir=tmp_path,
        )
    assert bases == []
    assert engine.builds == []


def test_an_image_built_for_another_architecture_is_an_error(
    binfmt: Path, bases: list[Platform]
) -> None:
    engine = FakeBuilder(gives=AMD64)
    with pytest.raises(HelperError, match="for linux/arm/v7 gave an image for linux/amd64;"):
        build_for_platforms(
            engine,
            [ARMV7],
            "ikev2-vpn:x",
            BuildPlan(context=ROOT),
            log=lambda _: None,
            binfmt_dir=binfmt,
        )
