"""The CPU architectures the server image is built for, and the emulation a foreign one needs.

A platform other than the engine's own is built under QEMU user emulation: the kernel runs
the foreign binaries through a binfmt_misc entry. That entry must carry the F flag (the
interpreter is opened when the entry is registered), or programs inside containers and
chroots, which do not see the host's /usr/libexec, cannot start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import docker

from .errors import HelperError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


@dataclass(frozen=True)
class Platform:
    """One architecture, named the way each tool involved names it."""

    docker: str  # the engine's --platform: linux/arm/v7
    debian_arch: str  # debootstrap --arch: armhf
    architecture: str  # the image config's "architecture": arm
    variant: str | None  # the image config's "variant": v7
    binfmt: str  # the binfmt_misc entry that runs it on another CPU: qemu-arm
    suffix: str  # in tags: ikev2-vpn:latest-armv7

    def __str__(self) -> str:
        return self.docker


AMD64 = Platform("linux/amd64", "amd64", "amd64", None, "qemu-x86_64", "amd64")
ARM64 = Platform("linux/arm64", "arm64", "arm64", "v8", "qemu-aarch64", "arm64")
ARMV7 = Platform("linux/arm/v7", "armhf", "arm", "v7", "qemu-arm", "armv7")
PLATFORMS = (AMD64, ARM64, ARMV7)
_BY_NAME = {
    **{platform.docker: platform for platform in PLATFORMS},
    "linux/arm64/v8": ARM64,
    "linux/arm": ARMV7,
}
# What `uname -m` on the engine's host says (docker info's "Architecture").
_BY_MACHINE = {"x86_64": AMD64, "aarch64": ARM64, "arm64": ARM64, "armv7l": ARMV7}


def supported() -> str:
    return ", ".join(platform.docker for platform in PLATFORMS)


def parse_platform(name: str) -> Platform:
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        raise HelperError(f"unknown platform {name!r}; supported: {supported()} (or all)") from None


def parse_platforms(text: str) -> list[Platform]:
    """``all``, one platform or a comma list; each once, in the order given."""
    if text.strip().lower() == "all":
        return list(PLATFORMS)
    chosen: list[Platform] = []
    for name in text.split(","):
        platform = parse_platform(name)
        if platform not in chosen:
            chosen.append(platform)
    return chosen


def host_platform(engine: docker.DockerClient) -> Platform:
    """The engine's own architecture: what it builds and runs without emulation."""
    machine = str(engine.info().get("Architecture", ""))
    try:
        return _BY_MACHINE[machine]
    except KeyError:
        raise HelperError(
            f"the engine runs on {machine or 'an unknown CPU'}; images are built for "
            f"{supported()} only"
        ) from None


def missing_emulation(platform: Platform, binfmt_dir: Path = BINFMT_DIR) -> str | None:
    """What keeps this host from running ``platform``'s programs, or None when nothing does."""
    if not (binfmt_dir / "status").is_file():
        return f"binfmt_misc is not mounted on {binfmt_dir}"
    entry = binfmt_dir / platform.binfmt
    if not entry.is_file():
        return f"binfmt_misc has no {platform.binfmt} entry"
    lines = entry.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "enabled":
        return f"the binfmt_misc entry {platform.binfmt} is disabled"
    flags = next((line.split(":", 1)[1] for line in lines if line.startswith("flags:")), "")
    if "F" not in flags:
        return f"the binfmt_misc entry {platform.binfmt} lacks the F flag (works in containers)"
    return None


def check_emulation(
    platforms: Iterable[Platform], host: Platform, binfmt_dir: Path = BINFMT_DIR
) -> None:
    """Fail with one line, before anything starts, when a foreign platform cannot run here."""
    for platform in platforms:
        if platform == host:
            continue
        missing = missing_emulation(platform, binfmt_dir)
        if missing:
            raise HelperError(
                f"building for {platform} on this {host} host needs QEMU emulation, but "
                f"{missing}; on Debian/Ubuntu: apt-get install qemu-user-static, then "
                f"mount -t binfmt_misc binfmt_misc {binfmt_dir} if it is not mounted and "
                f"/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/{platform.binfmt}.conf; "
                "Docker Desktop has it built in; elsewhere: docker run --privileged --rm "
                "tonistiigi/binfmt --install arm64,arm"
            )


def tag_with_suffix(tag: str, platform: Platform) -> str:
    """``ikev2-vpn:arch`` -> ``ikev2-vpn:arch-arm64``; a tag without version gets latest."""
    repository, colon, version = tag.rpartition(":")
    if not colon or "/" in version:  # no version: the colon (if any) was a registry port
        repository, version = tag, "latest"
    return f"{repository}:{version}-{platform.suffix}"


def image_tags(
    platforms: list[Platform], host: Platform, tag: str, *, tag_given: bool
) -> dict[Platform, list[str]]:
    """The tags each platform's image gets; the first is the one it is built as.

    One platform: the tag given, else the default tag for the host's own platform and the
    default tag with the platform's suffix for another. Several: each ``<tag>-<suffix>``,
    and the host's own platform also the plain tag.
    """
    if len(platforms) == 1:
        platform = platforms[0]
        one = tag if tag_given or platform == host else tag_with_suffix(tag, platform)
        return {platform: [one]}
    return {
        platform: [tag_with_suffix(tag, platform), *([tag] if platform == host else [])]
        for platform in platforms
    }


def matches(attrs: dict[str, object], platform: Platform) -> bool:
    """Whether an image (its inspect attributes) is built for ``platform``.

    An image without a variant matches arm64 (v8 is the only one) and arm/v7 (the default
    that engines assume for arm).
    """
    if attrs.get("Os", "linux") != "linux" or attrs.get("Architecture") != platform.architecture:
        return False
    return platform.variant is None or attrs.get("Variant") in (None, "", platform.variant)


def describe(attrs: dict[str, object]) -> str:
    variant = attrs.get("Variant")
    return f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture')}" + (
        f"/{variant}" if variant else ""
    )
