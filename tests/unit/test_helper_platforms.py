"""Platforms: their names, the tags of their images, and the emulation a foreign one needs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.platforms import (
    AMD64,
    ARM64,
    ARMV7,
    PLATFORMS,
    Platform,
    check_emulation,
    host_platform,
    image_tags,
    matches,
    missing_emulation,
    parse_platforms,
    tag_with_suffix,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", [AMD64]),
        ("linux/arm64", [ARM64]),
        ("linux/arm64/v8", [ARM64]),
        ("linux/arm/v7", [ARMV7]),
        ("linux/arm", [ARMV7]),
        ("all", [AMD64, ARM64, ARMV7]),
        ("linux/arm/v7, linux/arm64,linux/arm", [ARMV7, ARM64]),
    ],
)
def test_platform_names_and_aliases(text: str, expected: list[object]) -> None:
    assert parse_platforms(text) == expected


def test_an_unknown_platform_lists_the_supported_ones() -> None:
    with pytest.raises(HelperError) as caught:
        parse_platforms("linux/amd64,linux/riscv64")
    message = str(caught.value)
    assert "'linux/riscv64'" in message
    assert "linux/amd64, linux/arm64, linux/arm/v7" in message
    assert "\n" not in message


def test_each_platform_names_its_debian_and_image_architecture() -> None:
    names = {p.suffix: (p.debian_arch, p.architecture, p.variant, p.binfmt) for p in PLATFORMS}
    assert names == {
        "amd64": ("amd64", "amd64", None, "qemu-x86_64"),
        "arm64": ("arm64", "arm64", "v8", "qemu-aarch64"),
        "armv7": ("armhf", "arm", "v7", "qemu-arm"),
    }


@pytest.mark.parametrize(
    ("machine", "platform"), [("x86_64", AMD64), ("aarch64", ARM64), ("armv7l", ARMV7)]
)
def test_the_host_platform_comes_from_the_engine(machine: str, platform: Platform) -> None:
    engine = SimpleNamespace(info=lambda: {"Architecture": machine})
    assert host_platform(engine) == platform


def test_an_engine_on_another_cpu_is_refused() -> None:
    engine = SimpleNamespace(info=lambda: {"Architecture": "s390x"})
    with pytest.raises(HelperError, match="s390x"):
        host_platform(engine)


# --- tags ---------------------------------------------------------------------------------


def test_suffixes_go_on_the_version() -> None:
    assert tag_with_suffix("ikev2-vpn:arch", ARM64) == "ikev2-vpn:arch-arm64"
    assert tag_with_suffix("ikev2-vpn", ARMV7) == "ikev2-vpn:latest-armv7"
    assert tag_with_suffix("registry:5000/vpn", ARM64) == "registry:5000/vpn:latest-arm64"


def test_one_platform_with_a_tag_given_gets_that_tag() -> None:
    assert image_tags([ARM64], AMD64, "vpn:arm", tag_given=True) == {ARM64: ["vpn:arm"]}


def test_one_foreign_platform_without_a_tag_gets_the_suffixed_default() -> None:
    tags = image_tags([ARMV7], AMD64, "ikev2-vpn:latest", tag_given=False)
    assert tags == {ARMV7: ["ikev2-vpn:latest-armv7"]}
    assert image_tags([AMD64], AMD64, "ikev2-vpn:latest", tag_given=False) == {
        AMD64: ["ikev2-vpn:latest"]
    }


def test_several_platforms_each_get_a_suffix_and_the_native_one_the_plain_tag_too() -> None:
    assert image_tags([AMD64, ARM64, ARMV7], AMD64, "ikev2-vpn:arch", tag_given=True) == {
        AMD64: ["ikev2-vpn:arch-amd64", "ikev2-vpn:arch"],
        ARM64: ["ikev2-vpn:arch-arm64"],
        ARMV7: ["ikev2-vpn:arch-armv7"],
    }
    on_arm = image_tags([AMD64, ARM64], ARM64, "vpn:x", tag_given=True)
    assert on_arm == {AMD64: ["vpn:x-amd64"], ARM64: ["vpn:x-arm64", "vpn:x"]}


# --- images -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "platform", "expected"),
    [
        ({"Os": "linux", "Architecture": "amd64"}, AMD64, True),
        ({"Os": "linux", "Architecture": "amd64"}, ARM64, False),
        ({"Os": "linux", "Architecture": "arm64", "Variant": "v8"}, ARM64, True),
        ({"Os": "linux", "Architecture": "arm64"}, ARM64, True),
        ({"Os": "linux", "Architecture": "arm", "Variant": "v7"}, ARMV7, True),
        ({"Os": "linux", "Architecture": "arm", "Variant": "v5"}, ARMV7, False),
        ({"Os": "linux", "Architecture": "arm64", "Variant": "v8"}, ARMV7, False),
        ({"Os": "windows", "Architecture": "amd64"}, AMD64, False),
    ],
)
def test_an_image_matches_its_architecture_and_variant(
    attrs: dict[str, object], platform: Platform, expected: bool
) -> None:
    assert matches(attrs, platform) is expected


# --- emulation ----------------------------------------------------------------------------

QEMU_AARCH64 = (
    "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\n"
    "offset 0\nmagic 7f454c460201010000000000000000000200b700\n"
)


@pytest.fixture
def binfmt(tmp_path: Path) -> Path:
    """A mounted binfmt_misc with a working qemu-aarch64 entry."""
    (tmp_path / "status").write_text("enabled\n")
    (tmp_path / "register").write_text("")
    (tmp_path / "qemu-aarch64").write_text(QEMU_AARCH64)
    return tmp_path


def test_a_registered_entry_with_the_f_flag_is_enough(binfmt: Path) -> None:
    assert missing_emulation(ARM64, binfmt) is None
    check_emulation([AMD64, ARM64], AMD64, binfmt)


def test_binfmt_misc_not_mounted(tmp_path: Path) -> None:
    assert missing_emulation(ARM64, tmp_path) == f"binfmt_misc is not mounted on {tmp_path}"


def test_no_entry_for_the_platform(binfmt: Path) -> None:
    assert missing_emulation(ARMV7, binfmt) == "binfmt_misc has no qemu-arm entry"


def test_a_disabled_entry(binfmt: Path) -> None:
    (binfmt / "qemu-aarch64").write_text(QEMU_AARCH64.replace("enabled", "disabled", 1))
    assert missing_emulation(ARM64, binfmt) == "the binfmt_misc entry qemu-aarch64 is disabled"


def test_an_entry_without_the_f_flag(binfmt: Path) -> None:
    (binfmt / "qemu-aarch64").write_text(QEMU_AARCH64.replace("flags: POF", "flags: PO"))
    assert "lacks the F flag" in str(missing_emulation(ARM64, binfmt))


def test_missing_emulation_is_one_line_that_says_how_to_add_it(binfmt: Path) -> None:
    with pytest.raises(HelperError) as caught:
        check_emulation([AMD64, ARM64, ARMV7], AMD64, binfmt)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("building for linux/arm/v7 on this linux/amd64 host")
    assert "no qemu-arm entry" in message
    assert "apt-get install qemu-user-static" in message
    assert "/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-arm.conf" in message
    assert "tonistiigi/binfmt --install arm64,arm" in message


def test_the_engines_own_platform_needs_no_emulation(tmp_path: Path) -> None:
    check_emulation([ARM64], ARM64, tmp_path / "not-mounted")
