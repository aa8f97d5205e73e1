"""The local Debian base: choosing it, and trimming a debootstrap tree like slim images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ikev2_vpn_helper.base import (
    debian_sources,
    debian_suite,
    dpkg_slim_config,
    is_kept,
    local_base_tag,
    minimizing_config_files,
    slim_rootfs,
    trim_tree,
)


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
