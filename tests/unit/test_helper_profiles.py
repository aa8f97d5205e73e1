"""``ikev2-vpn-helper profiles``: what is copied out of the container, and how."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from docker.errors import NotFound

from ikev2_vpn_helper import cli
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.profiles import describe, extract_profiles, fetch_profiles


def tar(entries: list[tuple[str, bytes | None, int]], links: tuple[str, ...] = ()) -> bytes:
    """A tar like the engine's get_archive: (name, content or None for a directory, mode)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/shadow"
            archive.addfile(info)
    return buffer.getvalue()


ALICE = [
    ("alice", None, 0o700),
    ("alice/apple.mobileconfig", b"<plist/>", 0o600),
    ("alice/ca.crt", b"-----BEGIN CERTIFICATE-----", 0o644),
    ("alice/odd-mode.txt", b"x", 0o777),
]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_extracts_the_users_files_with_their_modes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = extract_profiles(tar(ALICE), "alice", out)
    assert [path.name for path in files] == ["apple.mobileconfig", "ca.crt", "odd-mode.txt"]
    assert (out / "apple.mobileconfig").read_bytes() == b"<plist/>"
    assert mode(out) == 0o700
    assert mode(out / "apple.mobileconfig") == 0o600
    assert mode(out / "ca.crt") == 0o644
    assert mode(out / "odd-mode.txt") == 0o644  # never writable or executable for others


def test_skips_everything_but_plain_files_of_that_user(tmp_path: Path) -> None:
    archive = tar(
        [
            *ALICE,
            ("alice/../escape", b"x", 0o600),
            ("alice/sub", None, 0o700),
            ("alice/sub/deeper", b"x", 0o600),
            ("alice/.hidden", b"x", 0o600),
            ("bob/apple.mobileconfig", b"x", 0o600),
            ("/abs", b"x", 0o600),
        ],
        links=("alice/link",),
    )
    files = extract_profiles(archive, "alice", tmp_path / "out")
    assert len(files) == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "apple.mobileconfig",
        "ca.crt",
        "odd-mode.txt",
    ]
    assert not (tmp_path / "escape").exists()


def test_overwrites_earlier_copies_but_never_follows_a_link(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "apple.mobileconfig").write_bytes(b"old")
    extract_profiles(tar(ALICE), "alice", out)
    assert (out / "apple.mobileconfig").read_bytes() == b"<plist/>"

    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (out / "ca.crt").unlink()
    (out / "ca.crt").symlink_to(victim)
    with pytest.raises(HelperError, match="symbolic link"):
        extract_profiles(tar(ALICE), "alice", out)
    assert victim.read_bytes() == b"keep"


class FakeContainer:
    name = "vpn"

    def __init__(self, archives: dict[str, bytes]) -> None:
        self.archives = archives
        self.asked: list[str] = []

    def get_archive(self, path: str) -> tuple[list[bytes], dict[str, Any]]:
        self.asked.append(path)
        if path not in self.archives:
            raise NotFound("no such file")
        data = self.archives[path]
        return [data[:10], data[10:]], {}


def test_fetch_copies_from_data_clients(tmp_path: Path) -> None:
    container = FakeContainer({"/data/clients/alice": tar(ALICE)})
    files = fetch_profiles(container, "alice", tmp_path)
    assert container.asked == ["/data/clients/alice"]
    assert len(files) == 3


def test_fetch_for_an_unknown_user_names_the_known_ones(tmp_path: Path) -> None:
    clients = tar([("clients", None, 0o700), *[("clients/" + n, d, m) for n, d, m in ALICE]])
    container = FakeContainer({"/data/clients": clients})
    with pytest.raises(HelperError, match="no profiles for user 'bob'; it has profiles for: alice"):
        fetch_profiles(container, "bob", tmp_path)
    with pytest.raises(HelperError, match="has no client profiles"):
        fetch_profiles(FakeContainer({}), "bob", tmp_path)


def test_fetch_refuses_names_that_are_not_user_names(tmp_path: Path) -> None:
    container = FakeContainer({})
    with pytest.raises(HelperError, match="not allowed"):
        fetch_profiles(container, "../pki", tmp_path)
    assert container.asked == []


def test_listing_shows_names_and_sizes_only(tmp_path: Path) -> None:
    secret = tmp_path / "alice.nmconnection"
    secret.write_text("password=hunter2\n")
    assert describe([secret]) == [f"{secret}  (17 bytes)"]


def test_command_line() -> None:
    args = cli.build_parser().parse_args(["profiles", "vpn", "alice", "--out", "d"])
    assert (args.command, args.server, args.user, args.out) == (
        "profiles",
        "vpn",
        "alice",
        Path("d"),
    )
    assert cli.COMMANDS["profiles"] is cli.cmd_profiles
