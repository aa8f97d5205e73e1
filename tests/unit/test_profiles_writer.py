"""/data/clients/<user>/ on disk: permissions, atomic and idempotent writes, stale files and
users, and the start-up step that writes them."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import stat
from pathlib import Path
from unittest import mock

import certfactory
import pytest
from planfactory import make_plan
from profilefactory import HOST, PASSWORD, USER, ca, make_profile
from pydantic import SecretStr

from ikev2_vpn import defaults, render, start
from ikev2_vpn.apply import profile_writer as writer
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.profiles import ProfileInput, ca_fingerprint
from ikev2_vpn.settings import Account, Backend, ProfilePasswords, Settings
from ikev2_vpn.state.users import nt_hash

SELF_SIGNED_FILES = {
    "apple.mobileconfig",
    "android.sswan",
    "android-builtin.txt",
    "windows.ps1",
    "windows-manual.txt",
    f"{USER}.swanctl.conf",
    f"{USER}.nmconnection",
    "ca.crt",
    "README.txt",
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def user_dir(data: Path, user: str = USER) -> Path:
    return data / "clients" / user


def inodes(directory: Path) -> dict[str, int]:
    return {path.name: path.stat().st_ino for path in directory.iterdir()}


def test_writes_every_profile_private_and_the_ca_public(tmp_path: Path) -> None:
    written = writer.write_profiles(make_profile(), tmp_path)
    directory = user_dir(tmp_path)
    assert {path.name for path in directory.iterdir()} == SELF_SIGNED_FILES
    assert sorted(written) == sorted(directory / name for name in SELF_SIGNED_FILES)
    assert mode(tmp_path / "clients") == 0o700
    assert mode(directory) == 0o700
    for path in directory.iterdir():
        assert mode(path) == (0o644 if path.name == "ca.crt" else 0o600), path.name


def test_readme_lists_the_other_files_and_which_hold_the_password(tmp_path: Path) -> None:
    writer.write_profiles(make_profile(), tmp_path)
    readme = (user_dir(tmp_path) / "README.txt").read_text()
    first_words = {line.split()[0] for line in readme.splitlines() if line.strip()}
    listed = first_words & SELF_SIGNED_FILES
    assert listed == SELF_SIGNED_FILES - {"README.txt"}
    assert f"VPN profiles for {USER} on {HOST}" in readme
    assert "contain the password: apple.mobileconfig" in readme
    assert PASSWORD not in readme


def test_a_second_write_with_the_same_input_touches_nothing(tmp_path: Path) -> None:
    writer.write_profiles(make_profile(), tmp_path)
    before = inodes(user_dir(tmp_path))
    assert writer.write_profiles(make_profile(), tmp_path) == []
    assert inodes(user_dir(tmp_path)) == before  # not even rewritten with the same bytes


def test_a_signed_profile_is_not_rewritten_for_a_new_signing_time(tmp_path: Path) -> None:
    """A signature holds its signing time: the same profile signed again is the same."""
    credentials = certfactory.own_ca_credentials()
    signed = make_profile(signer=writer.signer(credentials))
    writer.write_profiles(signed, tmp_path)
    mobileconfig = user_dir(tmp_path) / "apple.mobileconfig"
    assert mobileconfig.read_bytes().startswith(b"0")  # DER: CMS SignedData
    before = inodes(user_dir(tmp_path))
    assert writer.write_profiles(make_profile(signer=writer.signer(credentials)), tmp_path) == []
    assert inodes(user_dir(tmp_path)) == before
    other = certfactory.own_ca_credentials()  # a new server certificate: signed anew
    assert writer.write_profiles(make_profile(signer=writer.signer(other)), tmp_path) == [
        mobileconfig
    ]


def test_readme_gives_the_ca_fingerprint_to_compare(tmp_path: Path) -> None:
    writer.write_profiles(make_profile(), tmp_path)
    readme = (user_dir(tmp_path) / "README.txt").read_text()
    assert ca_fingerprint(ca()) in readme
    writer.write_profiles(make_profile(self_signed=False), tmp_path)
    assert "fingerprint" not in (user_dir(tmp_path) / "README.txt").read_text()


def test_a_new_address_rewrites_what_depends_on_it(tmp_path: Path) -> None:
    writer.write_profiles(make_profile(), tmp_path)
    changed = writer.write_profiles(make_profile(host="vpn2.example.com"), tmp_path)
    names = {path.name for path in changed}
    assert {"windows.ps1", "apple.mobileconfig", f"{USER}.swanctl.conf"} <= names
    assert "ca.crt" not in names  # same CA: untouched
    assert "'vpn2.example.com'" in (user_dir(tmp_path) / "windows.ps1").read_text("utf-8-sig")


def test_stale_files_go_when_the_generation_changes(tmp_path: Path) -> None:
    writer.write_profiles(make_profile(), tmp_path)
    directory = user_dir(tmp_path)
    (directory / "old-format.conf").write_text("from an earlier image")
    (directory / ".windows.ps1.abc.tmp").write_text("left by a killed write")
    changed = writer.write_profiles(make_profile(self_signed=False), tmp_path)  # Let's Encrypt
    assert directory / "ca.crt" in changed
    assert directory / "old-format.conf" in changed
    assert {path.name for path in directory.iterdir()} == SELF_SIGNED_FILES - {"ca.crt"}


def test_permissions_are_repaired_without_rewriting(tmp_path: Path) -> None:
    writer.write_profiles(make_profile(), tmp_path)
    script = user_dir(tmp_path) / "windows.ps1"
    script.chmod(0o644)
    user_dir(tmp_path).chmod(0o755)
    before = script.stat().st_ino
    assert writer.write_profiles(make_profile(), tmp_path) == []
    assert mode(script) == 0o600 and script.stat().st_ino == before
    assert mode(user_dir(tmp_path)) == 0o700


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    writer.write_profiles(make_profile(), tmp_path)
    before = {path.name: path.read_bytes() for path in user_dir(tmp_path).iterdir()}
    with (
        mock.patch("ikev2_vpn.state.files.os.fsync", side_effect=OSError(28, "No space left")),
        pytest.raises(OSError, match="No space left"),
    ):
        writer.write_profiles(make_profile(host="vpn2.example.com"), tmp_path)
    after = {path.name: path.read_bytes() for path in user_dir(tmp_path).iterdir()}
    assert after == before  # no half-written file, no temporary left behind


def test_without_password_no_file_holds_it(tmp_path: Path) -> None:
    writer.write_profiles(make_profile(password=None), tmp_path)
    secret_hash = nt_hash(SecretStr(PASSWORD)).hex().encode()
    for path in user_dir(tmp_path).iterdir():
        content = path.read_bytes()
        assert PASSWORD.encode() not in content, path.name
        assert secret_hash not in content.lower(), path.name
    assert "No file contains the password" in (user_dir(tmp_path) / "README.txt").read_text()


def test_remove_profiles(tmp_path: Path) -> None:
    writer.write_profiles(make_profile(), tmp_path)
    assert writer.remove_profiles(USER, tmp_path) is True
    assert not user_dir(tmp_path).exists()
    assert writer.remove_profiles(USER, tmp_path) is False


@pytest.mark.parametrize("name", ["..", "../etc", "a/b", "", ".hidden"])
def test_user_names_cannot_escape_the_clients_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        writer.remove_profiles(name, tmp_path)
    with pytest.raises(ValueError):
        writer.write_profiles(make_profile(user=name), tmp_path)


def test_write_all_removes_users_that_no_longer_exist(tmp_path: Path) -> None:
    alice, bob = make_profile(), make_profile(user="bob")
    first = writer.write_all([alice, bob], tmp_path)
    assert set(first) == {USER, "bob"}
    assert writer.write_all([alice, bob], tmp_path) == {}
    (tmp_path / "clients" / "notes.txt").write_text("an operator's file stays")
    changes = writer.write_all([alice], tmp_path)
    assert changes == {"bob": [user_dir(tmp_path, "bob")]}
    assert sorted(p.name for p in (tmp_path / "clients").iterdir()) == [USER, "notes.txt"]


# --- from settings and plan, at start ------------------------------------------------------


@pytest.fixture
def plan() -> render.Plan:
    return make_plan(
        host=HOST,
        accounts=(
            Account(name=USER, password=SecretStr(PASSWORD), source="VPN_USERS"),
            Account(name="bob", password=SecretStr("bob-pw-1"), source="VPN_USERS"),
        ),
        dns=(ipaddress.ip_address("192.0.2.53"),),
        backend=BackendChoice(Backend.KERNEL, "test", esp_gcm=False),
    )


def settings(**values: object) -> Settings:
    with mock.patch.dict(os.environ, {}, clear=True):
        return Settings(**values)  # type: ignore[arg-type]


def test_profile_input_follows_the_plan(plan: render.Plan) -> None:
    profile = writer.profile_input(plan, plan.accounts[0])
    assert profile == ProfileInput(
        host=HOST,
        user=USER,
        password=plan.accounts[0].password,
        ca=plan.credentials.ca,
        esp_gcm=False,
        dns=plan.dns,
        pool_v4=plan.pool_v4,
        always_on=False,
        signer=writer.signer(plan.credentials),
    )
    omitted = dataclasses.replace(
        plan, profile_passwords=ProfilePasswords.OMIT, profile_always_on=True
    )
    changed = writer.profile_input(omitted, plan.accounts[0])
    assert dataclasses.replace(profile, password=None, always_on=True) == changed


def test_profiles_at_start_equal_those_of_the_users_command(plan: render.Plan) -> None:
    """The start writes profiles from the plan, `ikev2-vpn users` from the settings and the
    facts the start left: for the same server both give the same profile."""
    values = {"dns": "192.0.2.53", "profile_passwords": "omit", "profile_always_on": True}
    loaded = settings(**values)
    at_start = dataclasses.replace(
        plan,
        dns=loaded.dns,
        pool_v4=loaded.pool_v4,
        profile_passwords=loaded.profile_passwords,
        profile_always_on=loaded.profile_always_on,
    )
    live = writer.profile_for(
        loaded,
        plan.accounts[0],
        host=HOST,
        ca=plan.credentials.ca,
        esp_gcm=False,
        signer=writer.signer(plan.credentials),
    )
    assert writer.profile_input(at_start, plan.accounts[0]) == live


def test_start_writes_profiles_and_logs_which_changed(
    plan: render.Plan,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(defaults, "DATA_DIR", tmp_path)
    caplog.set_level(logging.INFO, logger="ikev2_vpn")
    start._write_profiles(plan)
    assert f"client profiles written to {tmp_path / 'clients'} (2 users)" in caplog.messages
    assert "client profiles changed for: alice, bob" in caplog.messages
    assert {p.name for p in (tmp_path / "clients").iterdir()} == {USER, "bob"}

    caplog.clear()
    start._write_profiles(plan)  # a restart with nothing changed
    assert not [m for m in caplog.messages if "changed" in m or "removed" in m]

    caplog.clear()
    start._write_profiles(dataclasses.replace(plan, accounts=plan.accounts[1:]))
    assert "client profiles removed for users that no longer exist: alice" in caplog.messages
    for message in caplog.messages:
        assert PASSWORD not in message and "bob-pw-1" not in message
