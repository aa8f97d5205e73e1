"""The local Debian base: choosing it, and trimming a debootstrap tree like slim images."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from docker.errors import ImageNotFound

from ikev2_vpn_helper import base
from ikev2_vpn_helper.base import (
    debian_sources,
    debian_suite,
    dpkg_slim_config,
    ensure_base_image,
    image_exists,
    is_kept,
    local_base_tag,
    minimizing_config_files,
    slim_rootfs,
    trim_tree,
    write_image_archive,
)
from ikev2_vpn_helper.platforms import AMD64, ARM64, ARMV7, Platform


@pytest.mark.parametrize(
    ("reference", "suite"),
    [
        ("debian:trixie-slim", "trixie"),
        ("debian:trixie", "trixie"),
        ("docker.io/library/debian:bookworm-slim", "bookworm"),
        ("debian:13", None),
        ("ubuntu:24.04", None),
        ("registry.example:5000/debian:trixie", None),
    ],
)
def test_debian_suite_comes_from_official_debian_references_only(
    reference: str, suite: str | None
) -> None:
    assert debian_suite(reference) == suite


def test_local_base_tag() -> None:
    assert local_base_tag("trixie") == "ikev2-vpn-base:trixie"
    assert local_base_tag("trixie", ARM64) == "ikev2-vpn-base:trixie-arm64"
    assert local_base_tag("trixie", ARMV7) == "ikev2-vpn-base:trixie-armv7"


def test_dpkg_config_keeps_later_installs_slim() -> None:
    text = dpkg_slim_config()
    assert "path-exclude /usr/share/doc/*\n" in text
    assert "path-exclude /usr/share/man/*\n" in text
    assert "path-exclude /usr/share/locale/*\n" in text
    assert "path-include /usr/share/doc/*/copyright\n" in text
    # dpkg applies the last matching rule: includes must come after excludes.
    assert text.index("path-include") > text.rindex("path-exclude")


def test_minimizing_config_cleans_apt_caches_and_blocks_service_starts() -> None:
    files = {path: (text, mode) for path, text, mode in minimizing_config_files()}
    assert "DPkg::Post-Invoke" in files["etc/apt/apt.conf.d/docker-clean"][0]
    assert files["usr/sbin/policy-rc.d"] == ("#!/bin/sh\nexit 101\n", 0o755)
    assert files["etc/apt/apt.conf.d/docker-no-languages"][0] == 'Acquire::Languages "none";\n'


def test_sources_include_updates_and_security() -> None:
    text = debian_sources("trixie", "http://deb.debian.org/debian", "http://security.example")
    assert "Suites: trixie trixie-updates\n" in text
    assert "URIs: http://security.example\nSuites: trixie-security\n" in text
    assert text.count("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg") == 2


def test_copyright_files_survive() -> None:
    assert is_kept("/usr/share/doc/bash/copyright")
    assert is_kept("/usr/share/locale/locale.alias")
    assert not is_kept("/usr/share/doc/bash/README.gz")
    assert not is_kept("/usr/share/locale/de/LC_MESSAGES/apt.mo")


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_trim_removes_docs_keeps_copyright_and_prunes(tmp_path: Path) -> None:
    doc = tmp_path / "usr/share/doc"
    _touch(doc / "bash/copyright")
    _touch(doc / "bash/README.gz")
    _touch(doc / "apt/examples/sources.list")
    (doc / "libfoo").symlink_to("bash")  # a link to a kept directory stays
    (doc / "libbar").symlink_to("apt")  # a link to a directory that goes, goes
    trim_tree(tmp_path, "/usr/share/doc/*")
    assert (doc / "bash/copyright").exists()
    assert not (doc / "bash/README.gz").exists()
    assert not (doc / "apt").exists()
    assert (doc / "libfoo").is_symlink()
    assert not os.path.lexists(doc / "libbar")


def test_trim_follows_alternative_chains_inside_the_root(tmp_path: Path) -> None:
    man = tmp_path / "usr/share/man/man1"
    _touch(man / "which.debianutils.1.gz")
    alternative = tmp_path / "etc/alternatives/which.1.gz"
    alternative.parent.mkdir(parents=True)
    alternative.symlink_to("/usr/share/man/man1/which.debianutils.1.gz")
    (man / "which.1.gz").symlink_to("/etc/alternatives/which.1.gz")
    trim_tree(tmp_path, "/usr/share/man/*")
    assert not os.path.lexists(man / "which.1.gz")
    assert not (tmp_path / "usr/share/man/man1").exists()
    assert (tmp_path / "usr/share/man").is_dir()  # the excluded directory itself stays


def test_slim_rootfs_writes_config_and_drops_caches(tmp_path: Path) -> None:
    _touch(tmp_path / "var/lib/apt/lists/deb.debian.org_debian_dists_trixie_InRelease")
    _touch(tmp_path / "var/cache/apt/archives/bash_5.2_amd64.deb")
    _touch(tmp_path / "var/cache/apt/pkgcache.bin")
    _touch(tmp_path / "etc/apt/sources.list", "deb http://deb.debian.org/debian trixie main\n")
    _touch(tmp_path / "etc/resolv.conf", "nameserver 10.0.0.1\n")
    (tmp_path / "var/lib/apt/lists/partial").mkdir()
    slim_rootfs(tmp_path, "trixie")
    assert not list((tmp_path / "var/lib/apt/lists").glob("*_*"))
    assert (tmp_path / "var/lib/apt/lists/partial").is_dir()
    assert not (tmp_path / "var/cache/apt/archives/bash_5.2_amd64.deb").exists()
    assert not (tmp_path / "var/cache/apt/pkgcache.bin").exists()
    assert not (tmp_path / "etc/apt/sources.list").exists()
    assert "trixie-security" in (tmp_path / "etc/apt/sources.list.d/debian.sources").read_text()
    assert (tmp_path / "etc/resolv.conf").read_text() == ""  # no host details in the image
    assert (tmp_path / "etc/dpkg/dpkg.cfg.d/docker").read_text() == dpkg_slim_config()


# --- the archive docker load reads ------------------------------------------------------------


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
        }


@pytest.mark.parametrize(
    ("platform", "architecture", "variant"),
    [(AMD64, "amd64", None), (ARM64, "arm64", "v8"), (ARMV7, "arm", "v7")],
)
def test_the_load_archive_records_the_architecture_and_the_layer(
    tmp_path: Path, platform: Platform, architecture: str, variant: str | None
) -> None:
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        tar.add(__file__, arcname="etc/os-release")
    layer_sha = hashlib.sha256(layer.read_bytes()).hexdigest()
    archive = tmp_path / "image.tar"
    image_id = write_image_archive(
        archive, layer, "ikev2-vpn-base:trixie-x", platform, created_by="debootstrap"
    )
    members = _members(archive)
    manifest = json.loads(members["manifest.json"])
    assert manifest == [
        {
            "Config": f"{image_id.removeprefix('sha256:')}.json",
            "RepoTags": ["ikev2-vpn-base:trixie-x"],
            "Layers": [f"{layer_sha}/layer.tar"],
        }
    ]
    config_bytes = members[manifest[0]["Config"]]
    assert image_id == "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    config = json.loads(config_bytes)
    assert config["architecture"] == architecture
    assert config.get("variant") == variant
    assert config["os"] == "linux"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{layer_sha}"]}
    assert config["config"] == {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["bash"],
    }
    assert config["history"][0]["created_by"] == "debootstrap"
    assert members[f"{layer_sha}/layer.tar"] == layer.read_bytes()


# --- which base: present, pulled or made, per platform ----------------------------------------


class FakeImages:
    """The engine's images, by reference, with the architecture each was built for."""

    def __init__(self, images: dict[str, dict[str, str]]) -> None:
        self.images = images

    def get(self, reference: str) -> Any:
        if reference not in self.images:
            raise ImageNotFound(reference)
        return SimpleNamespace(attrs={"Os": "linux", **self.images[reference]})


def fake_engine(images: dict[str, dict[str, str]]) -> Any:
    return SimpleNamespace(images=FakeImages(images), info=lambda: {"Architecture": "x86_64"})


def test_an_image_of_another_architecture_is_not_the_base_for_this_one() -> None:
    engine = fake_engine({"debian:trixie-slim": {"Architecture": "amd64"}})
    assert image_exists(engine, "debian:trixie-slim")
    assert image_exists(engine, "debian:trixie-slim", AMD64)
    assert not image_exists(engine, "debian:trixie-slim", ARM64)
    assert not image_exists(engine, "debian:bookworm-slim", AMD64)


def test_a_foreign_platform_uses_its_own_local_base(monkeypatch: pytest.MonkeyPatch) -> None:
    pulled: list[Platform] = []

    def no_registry(_engine: object, _reference: str, platform: Platform) -> str:
        pulled.append(platform)
        return "no such host"

    monkeypatch.setattr(base, "try_pull", no_registry)
    engine = fake_engine(
        {
            "debian:trixie-slim": {"Architecture": "amd64"},
            "ikev2-vpn-base:trixie": {"Architecture": "amd64"},
            "ikev2-vpn-base:trixie-arm64": {"Architecture": "arm64", "Variant": "v8"},
        }
    )
    choice = ensure_base_image(engine, platform=ARM64, log=lambda _: None)
    assert choice.image == "ikev2-vpn-base:trixie-arm64"
    assert pulled == [ARM64]
    assert ensure_base_image(engine, log=lambda _: None).image == "debian:trixie-slim"
