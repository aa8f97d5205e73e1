"""Passwords that no profile or charon can carry are refused on every path, before anything
is written; a users.json that still holds one is reported and that user skipped at start;
charon and the other children start without the settings' variables (issue 13, 6 and 8).

The CLI tests run the container's real ``ikev2-vpn users`` main with its standard input, a
fake VICI session standing in for charon.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import plistlib
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from profilefactory import make_profile as profile_input
from pydantic import SecretStr
from test_users_live import FakeVici

from ikev2_vpn import cli
from ikev2_vpn.apply import profile_writer
from ikev2_vpn.errors import ConfigErrors
from ikev2_vpn.profiles import apple
from ikev2_vpn.run import charon, children, users_live
from ikev2_vpn.run.charon import Supervisor
from ikev2_vpn.run.users_live import LiveUsers, ServerFacts
from ikev2_vpn.settings import (
    Settings,
    check_password,
    child_environment,
    forget_environment,
    load_settings,
)
from ikev2_vpn.state.users import STORE_NAME, load_store, nt_hash, resolve_accounts

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def _refused(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs") or char in "\ufffe\uffff"


# Characters the rule refuses: every control character, lone surrogates (what os.environ
# makes of bytes that are not UTF-8) and the two that are no XML character.
BAD_CHARS = st.one_of(
    st.characters(codec=None, categories=["Cc"]),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from(["\ufffe", "\uffff", "\x0c", "\x1b", "\x00", "\r"]),
)
GOOD_TEXT = st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1).filter(
    lambda text: not any(_refused(c) for c in text)
)


@st.composite
def bad_passwords(draw: st.DrawFn, env: bool = False) -> str:
    """A printable password with one refused character somewhere (``env``: one that an
    environment variable can hold: no NUL, and surrogates only as os.environ makes them)."""
    bad = draw(BAD_CHARS.filter(lambda c: c != "\x00") if env else BAD_CHARS)
    if env and unicodedata.category(bad) == "Cs":
        bad = draw(
            st.integers(0x80, 0xFF).map(lambda b: bytes([b]).decode(errors="surrogateescape"))
        )
    head, tail = draw(GOOD_TEXT), draw(GOOD_TEXT)
    return head + bad + tail


# --- the rule --------------------------------------------------------------------------------


@FUZZ
@given(st.text())
@example("pass\x0cword")
@example("esc\x1b[31m")
@example("cr\rlf")
@example("\udcff-not-utf8")
@example("nul\x00")
def test_an_accepted_password_fits_every_profile_and_charon(password: str) -> None:
    problem = check_password(password)
    assert bool(problem) == (not password or any(_refused(c) for c in password))
    if problem:
        assert password not in problem or not password.strip()
        return
    profile = profile_input(password=SecretStr(password))
    files = {file.name: file.content for file in profile_writer.profile_files(profile)}
    vpn = plistlib.loads(files[apple.FILE_NAME])["PayloadContent"][-1]
    assert vpn["IKEv2"]["AuthPassword"] == password  # as typed: no CR turned into LF
    assert len(nt_hash(SecretStr(password))) == 16


# --- the environment and mounted files -------------------------------------------------------


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., str]:
    """Set the given variables (``*_FILE`` ones get a file with the bytes given), load the
    settings, and return the one error line."""

    def _load(**env: str | bytes) -> str:
        for name in list(os.environ):
            if name.startswith(("VPN_", "ACME_")):
                monkeypatch.delenv(name)
        for name, value in env.items():
            if isinstance(value, bytes):  # a *_FILE setting: the file holds the bytes
                (tmp_path / name).write_bytes(value)
            monkeypatch.setenv(name, value if isinstance(value, str) else str(tmp_path / name))
        with pytest.raises(ConfigErrors) as refused:
            load_settings()
        lines = [error.line() for error in refused.value.errors]
        assert len(lines) == 1
        return lines[0]

    return _load


def _with_bytes(password: str) -> bytes:
    return password.encode("utf-8", errors="surrogatepass")  # invalid UTF-8 either way


@FUZZ
@given(password=bad_passwords(env=True))
def test_environment_passwords_are_refused_with_one_line(
    environment: Callable[..., str], password: str
) -> None:
    line = environment(VPN_USER="alice", VPN_PASSWORD=password)
    assert line.startswith("VPN_PASSWORD: the password holds "), line
    assert line.endswith("; choose a password of printable characters")
    assert _secret_free(line, password)
    # VPN_USERS splits at whitespace (some control characters are): its entries one by one.
    for entry in password.split():
        if any(_refused(char) for char in entry):
            line = environment(VPN_USERS=f"alice:{entry}")
            assert line.startswith("VPN_USERS: the password of 'alice' holds "), line
            assert _secret_free(line, entry)


@FUZZ
@given(password=bad_passwords())
def test_file_passwords_are_refused_with_one_line(
    environment: Callable[..., str], password: str
) -> None:
    raw = _with_bytes(password)
    line = environment(VPN_USER="alice", VPN_PASSWORD_FILE=raw + b"\n")
    assert line.startswith("VPN_PASSWORD_FILE: "), line
    assert _secret_free(line, password)
    if "\n" not in password:
        line = environment(VPN_USERS_FILE=b"alice:" + raw + b"\n")
        assert line.startswith("VPN_USERS_FILE: "), line
        assert _secret_free(line, password)
    line = environment(VPN_RADIUS_SERVERS="radius.example.test", VPN_RADIUS_SECRET_FILE=raw + b"\n")
    assert line.startswith("VPN_RADIUS_SECRET_FILE: "), line
    assert _secret_free(line, password)


def test_non_utf8_bytes_in_the_environment_are_refused_not_crashed(
    environment: Callable[..., str],
) -> None:
    """The issue's crash: os.environ turns the bytes into lone surrogates, nt_hash raised."""
    line = environment(VPN_USER="alice", VPN_PASSWORD=b"caf\xe9".decode(errors="surrogateescape"))
    assert line == (
        "VPN_PASSWORD: the password holds bytes that are not UTF-8 text; "
        "choose a password of printable characters"
    )


def _secret_free(line: str, password: str) -> bool:
    """The password is not in the line (short ones may be part of a word by chance)."""
    return len(password.strip()) < 4 or password not in line


# --- ikev2-vpn users add / passwd, through the CLI's main -----------------------------------


class Cli:
    """``ikev2-vpn users`` run in this process against a store in tmp_path."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
        self.monkeypatch, self.data_dir, self.vici = monkeypatch, data_dir, FakeVici()
        facts = ServerFacts(host="vpn.example.test", esp_gcm=True, ca_pem=None)
        monkeypatch.setattr(users_live, "read_facts", lambda: facts)
        monkeypatch.setattr(
            users_live,
            "LiveUsers",
            functools.partial(LiveUsers, data_dir=data_dir, write_conf=lambda _text: None),
        )
        monkeypatch.setattr(profile_writer, "ensure_dir", _mkdir)
        monkeypatch.setattr("ikev2_vpn.run.vici_session.connect", lambda: self.vici)
        monkeypatch.setattr(cli, "CONTAINER_LOG", data_dir / "container.log")

    def __call__(self, stdin: bytes, *argv: str) -> tuple[int, str]:
        self.monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        errors = io.StringIO()
        self.monkeypatch.setattr("sys.stderr", errors)
        code = cli.main(["users", *argv, "--password-stdin"])
        logging.getLogger().handlers.clear()
        return code, errors.getvalue()

    def stored(self) -> bytes:
        path = self.data_dir / STORE_NAME
        return path.read_bytes() if path.exists() else b""


def _mkdir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


@pytest.fixture
def users_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Cli]:
    for name in list(os.environ):
        if name.startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VPN_USERS", "alice:Alice-pw")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    yield Cli(monkeypatch, data_dir)
    logging.getLogger().handlers.clear()


@FUZZ
@given(password=bad_passwords())
@example(password="form\x0cfeed")  # the issue's: saved, loaded, then every start crashed
def test_users_add_and_passwd_refuse_before_anything_is_written(
    users_cli: Cli, password: str
) -> None:
    assert users_cli(b"Bob-pw-1\n", "add", "bob")[0] == 0
    before, calls = users_cli.stored(), len(users_cli.vici.calls)
    profiles = sorted((users_cli.data_dir / "clients").rglob("*"))
    for action in ("add", "passwd"):
        name = "carol" if action == "add" else "bob"
        code, err = users_cli(_with_bytes(password), action, name)
        assert code == 2
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ikev2-vpn: error: the password "), err
        assert _secret_free(err, password)
    assert users_cli.stored() == before
    assert len(users_cli.vici.calls) == calls  # charon was told nothing
    assert sorted((users_cli.data_dir / "clients").rglob("*")) == profiles
    # A start after the refused attempts has everyone, and no one poisoned.
    accounts = resolve_accounts((), users_cli.data_dir).accounts
    assert [account.name for account in accounts] == ["bob"]
    users_cli.data_dir.joinpath(STORE_NAME).unlink()


@FUZZ
@given(password=GOOD_TEXT.filter(lambda text: text.removesuffix("\n") != ""))
def test_users_add_takes_any_password_the_rule_accepts(users_cli: Cli, password: str) -> None:
    code, err = users_cli(password.encode(), "add", "dave")
    assert code == 0, err
    store = load_store(users_cli.data_dir)
    assert store.users["dave"].password.get_secret_value() == password.removesuffix("\n")
    users_cli.data_dir.joinpath(STORE_NAME).unlink()


# --- a users.json written by an older version or by hand ------------------------------------


def _poisoned_store(data_dir: Path) -> bytes:
    content = {
        "version": 2,
        "users": {
            "bob": {"password": "Bob-pw-1", "origin": "managed"},
            "eve": {"password": "Poison\x0cPw", "origin": "managed"},
            "mallory": {"password": "Bad\ud800Pw", "origin": "managed"},
        },
        "static_ips": {},
    }
    raw = (json.dumps(content, indent=2) + "\n").encode()
    (data_dir / STORE_NAME).write_bytes(raw)
    return raw


def test_a_poisoned_store_is_reported_and_the_user_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = _poisoned_store(tmp_path)
    with caplog.at_level(logging.WARNING):
        resolved = resolve_accounts((), tmp_path)
    assert [account.name for account in resolved.accounts] == ["bob"]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith("user 'eve' in ")
    assert "control character U+000C" in warnings[0]
    assert "`ikev2-vpn users passwd eve`" in warnings[0]
    assert "not UTF-8" in warnings[1] and "'mallory'" in warnings[1]
    assert not any("Poison" in text or "Bad" in text for text in warnings)
    assert (tmp_path / STORE_NAME).read_bytes() == raw  # nothing in /data lost


def test_the_start_writes_profiles_for_everyone_usable(tmp_path: Path) -> None:
    _poisoned_store(tmp_path)
    accounts = resolve_accounts((), tmp_path).accounts
    profiles = [profile_input(user=a.name, password=a.password) for a in accounts]
    profile_writer.write_all(profiles, tmp_path)
    assert sorted(p.name for p in (tmp_path / "clients").iterdir()) == ["bob"]


def test_a_poisoned_user_is_repaired_or_removed_with_users(users_cli: Cli) -> None:
    _poisoned_store(users_cli.data_dir)
    assert users_cli(b"Eve-new-pw\n", "passwd", "eve")[0] == 0
    assert ("load-shared", "eve") in [
        (n, c.get("owners", [""])[0]) for n, c in users_cli.vici.calls
    ]
    users_cli.monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert cli.main(["users", "remove", "mallory"]) == 0
    # mallory's secret never reached charon, so none is unloaded (charon would refuse).
    assert "unload-shared" not in users_cli.vici.names()
    names = [a.name for a in resolve_accounts((), users_cli.data_dir).accounts]
    assert sorted(names) == ["bob", "eve"]


def test_profile_writing_at_start_survives_a_profile_that_cannot_be_rendered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defence in depth: a password that slipped past the rule costs that user's profiles,
    not the start of the server."""
    bad = profile_input(user="eve", password=SecretStr("Poison\x0cPw"))
    good = profile_input(user="bob", password=SecretStr("Bob-pw-1"))
    with caplog.at_level(logging.ERROR):
        changes = profile_writer.write_all([bad, good], tmp_path)
    assert list(changes) == ["bob"]
    assert "client profiles of user 'eve' not written" in caplog.text
    assert "Poison" not in caplog.text


# --- finding 8: no settings, so no secrets, in children's environments ----------------------


SECRETS = {
    "VPN_PASSWORD": "Env-secret-1",
    "VPN_USERS": "bob:Env-secret-2",
    "VPN_RADIUS_SECRET": "Env-secret-3",
    "ACME_EMAIL": "admin@example.test",
}


@pytest.fixture
def secret_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):  # through monkeypatch: restored after the test
        if name.startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", os.environ.get("PATH", "/usr/bin:/bin"))


@pytest.mark.usefixtures("secret_environment")
def test_charon_starts_without_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dump = tmp_path / "environ"
    program = tmp_path / "charon"
    program.write_text(f"#!/bin/sh\nenv > {dump}\n")
    program.chmod(0o755)
    monkeypatch.setattr(charon, "CHARON", program)
    monkeypatch.setattr(charon, "STALE_FILES", ())
    supervisor = Supervisor()
    supervisor.start()
    assert supervisor.process is not None
    supervisor.process.wait()
    seen = dump.read_text()
    assert "PATH=" in seen  # the rest of the environment is there
    for name, value in SECRETS.items():
        assert name not in seen and value not in seen


@pytest.mark.usefixtures("secret_environment")
def test_other_children_start_without_the_settings() -> None:
    seen = children.run(["env"]).stdout
    assert "PATH=" in seen
    assert not any(value in seen for value in SECRETS.values())


@pytest.mark.usefixtures("secret_environment")
def test_the_entrypoint_forgets_the_settings_once_loaded() -> None:
    assert child_environment()["PATH"]
    removed = forget_environment()
    assert set(SECRETS) <= set(removed)
    assert not any(name in os.environ for name in SECRETS)
    assert "PATH" in os.environ


def test_start_forgets_the_environment_right_after_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ikev2_vpn import start

    for name in list(os.environ):
        if name.startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VPN_USER", "alice")
    monkeypatch.setenv("VPN_PASSWORD", "Env-secret-1")
    loaded: Settings = start._settings()
    assert loaded.password is not None and loaded.password.get_secret_value() == "Env-secret-1"
    assert "VPN_PASSWORD" not in os.environ and "VPN_USER" not in os.environ
