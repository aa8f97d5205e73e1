"""Bad input, generated: every setting and the users file given arbitrary text.

Whatever the operator writes, the container either stops with ConfigError lines (one line
each, naming a setting, never quoting a password) or renders a configuration in which no
value opened or closed a section or added a line. The settings are enumerated from
``Settings.model_fields``, so a new setting is fuzzed without touching this file.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from planfactory import make_plan
from pydantic import SecretStr
from swanctl_syntax import Section, parse_conf, swanctl

from ikev2_vpn import defaults, render
from ikev2_vpn.errors import ConfigErrors
from ikev2_vpn.settings import (
    Account,
    FileVariantSource,
    Settings,
    describe,
    env_name,
    known_variables,
    load_settings,
)
from ikev2_vpn.state.users import nt_hash

CONN = defaults.CONNECTION_NAME
POOL = defaults.POOL_V4_NAME

# Every password generated here carries this character, and nothing else does: wherever it
# shows up in an error, a log line or a rendered file, a password (or a piece of one) leaked.
MARK = "\U0001f511"

_ODD = [*" \t\n\r\x0b\x0c\x1c\x85\u2028:.@+-_{}#;\"'\\%,/=[]$`", "0", "1", "a", "é", "€"]
_CHARS = st.one_of(
    st.sampled_from(_ODD),
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00" + MARK),
)
TEXT = st.text(_CHARS, max_size=40) | st.text(_CHARS, min_size=300, max_size=600)

# Settings whose value names a file the settings step reads.
FILE_SETTINGS = {"VPN_USERS_FILE", "ACME_CA_BUNDLE"} | {
    env_name(field) + "_FILE" for field in FileVariantSource.FIELDS
}

# Values that pass validation, so that generated inputs often get as far as rendering.
# A setting missing here gets its default as its valid example.
VALID: dict[str, list[str]] = {
    "VPN_HOST": ["vpn.example.com", "203.0.113.7", "2001:db8::7", "Vpn.Example.org."],
    "VPN_USER": ["alice", "bob@example.com", "c.d+e-f_g"],
    "VPN_POOL_V4": ["10.10.10.0/24", "192.168.5.0/24", "100.64.0.0/16"],
    "VPN_POOL_V4_STATIC": ["10.10.10.192/26", "192.168.5.128/25"],
    "VPN_POOL_V6": ["fd00:10:10::/112", "fd12:3456::/64"],
    "VPN_DNS": ["198.51.100.53", "192.0.2.1,2001:db8::53", "1.1.1.1 9.9.9.9"],
    "VPN_CLIENT_DENY": ["192.168.0.0/16", "10.1.2.3, 2001:db8::/32"],
    "VPN_CLIENT_ALLOW": ["172.17.0.1", "169.254.169.254/32,fd00::/8", "0.0.0.0/0"],
    "VPN_CERT": ["self-signed", "files", "letsencrypt"],
    "ACME_EMAIL": ["admin@example.com"],
    "ACME_DIRECTORY": ["staging", "https://acme.example.com/dir"],
    "VPN_DPD_DELAY": ["5", "30s", "3600"],
    "VPN_BAN_AFTER": ["0", "5"],
    "VPN_BAN_SECONDS": ["10", "600"],
    "VPN_METRICS_PORT": ["9814", "1", "65535"],
    "VPN_LOG_LEVEL": ["0", "2"],
    "VPN_RADIUS_SERVERS": ["radius.example.com", "198.51.100.7:1812, [2001:db8::1]:11812"],
    "VPN_RADIUS_SECRET": ["s3cret", 'lab "secret" #1 {x} \\y'],
    "VPN_RADIUS_NAS_IDENTIFIER": ["vpn-eu-1", "vpn.example.com"],
    "VPN_RADIUS_ACCOUNTING_PORT": ["1813"],
    "VPN_RADIUS_INTERIM_INTERVAL": ["0", "300s"],
}
_BOOLS = ["true", "false", "1", "0", "yes", "no"]


def _examples(field: str) -> list[str]:
    name = env_name(field)
    if name in VALID:
        return VALID[name]
    info = Settings.model_fields[field]
    if info.annotation is bool:
        return _BOOLS
    return [] if info.default in (None, ()) else [str(info.default)]


NAMES = sorted(env_name(field) for field in Settings.model_fields)
EXAMPLES = {env_name(field): _examples(field) for field in Settings.model_fields}

_USER_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,8}", fullmatch=True)


def _password(chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.text(chars, max_size=24).map(lambda text: MARK + text + MARK)


# VPN_USERS separates entries by whitespace, so its passwords cannot hold any (README).
_ENV_PASSWORD = _password(_CHARS.filter(lambda c: not c.isspace()))
# A users file separates accounts by "\n"; anything else is part of the password.
_FILE_PASSWORD = _password(_CHARS.filter(lambda c: c != "\n"))
_USERS_VALUE = st.lists(
    st.tuples(_USER_NAMES | TEXT.map(lambda t: t.replace(MARK, "")), _ENV_PASSWORD), max_size=4
).map(lambda pairs: " ".join(f"{name}:{password}" for name, password in pairs))
_USERS_FILE_TEXT = st.lists(
    st.one_of(
        st.tuples(_USER_NAMES, _FILE_PASSWORD).map(":".join),
        st.tuples(_USER_NAMES, _FILE_PASSWORD).map(lambda pair: ":".join(pair) + "\r"),
        st.sampled_from(["", "# comment", "   "]),
        TEXT.map(lambda text: text.replace("\n", "")),
    ),
    max_size=5,
).map("\n".join)

_VALID_USERS = st.lists(st.tuples(_USER_NAMES, _ENV_PASSWORD), min_size=1, max_size=4).map(
    lambda pairs: " ".join(f"{name}:{password}" for name, password in pairs)
)
_VALID_USERS_FILE_TEXT = st.lists(
    st.tuples(_USER_NAMES, _FILE_PASSWORD).map(":".join), min_size=1, max_size=5
).map("\n".join)


def _value(name: str, junk: bool) -> st.SearchStrategy[str]:
    """Mostly valid, sometimes valid with junk around it, sometimes anything; only
    valid values (passwords excepted: they are anything) when not ``junk``."""
    examples = EXAMPLES[name]
    anything = TEXT
    if name == "VPN_PASSWORD":
        return st.one_of(_FILE_PASSWORD, _password(_CHARS))
    if name == "VPN_USERS":
        return st.one_of(_USERS_VALUE, _USERS_VALUE, anything) if junk else _VALID_USERS
    if name == "VPN_RADIUS_SECRET":  # marked ones are refused (not ASCII), never quoted
        return st.one_of(st.sampled_from(examples), _password(_CHARS), anything)
    if not examples:
        return anything
    valid = st.sampled_from(examples)
    if not junk:
        return valid
    padded = st.tuples(valid, TEXT).map("".join) | st.tuples(TEXT, valid).map("".join)
    return st.one_of(valid, valid, valid, padded, anything)


@st.composite
def environments(draw: st.DrawFn, junk: bool = True) -> dict[str, str]:
    """Some settings, each with a generated value; file settings get generated contents."""
    chosen = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=7))
    if not junk:  # leave out what needs other settings to go with it
        chosen = [name for name in chosen if not name.startswith(("ACME_", "VPN_CHAIN"))]
        chosen += ["VPN_PASSWORD"] if "VPN_USER" in chosen else []
        chosen = [name for name in chosen if name != "VPN_PASSWORD" or "VPN_USER" in chosen]
    env = {name: draw(_value(name, junk)) for name in chosen}
    if not junk and env.get("VPN_CERT") != "self-signed":
        env.pop("VPN_CERT", None)
    if not junk and any(name.startswith("VPN_RADIUS_") for name in env):
        # RADIUS replaces local users: a whole, valid RADIUS setup without them.
        for name in ("VPN_USER", "VPN_PASSWORD", "VPN_USERS", "VPN_POOL_V4_STATIC"):
            env.pop(name, None)
        for name in ("VPN_RADIUS_SERVERS", "VPN_RADIUS_SECRET"):
            env.setdefault(name, draw(st.sampled_from(EXAMPLES[name])))
        return env
    if draw(st.booleans()):
        text = _USERS_FILE_TEXT if junk else _VALID_USERS_FILE_TEXT
        env["VPN_USERS_FILE"] = "\0" + draw(text)  # "\0": contents, see _mount
    if not junk:
        return env
    if draw(st.integers(0, 4)) == 0:
        env["VPN_PASSWORD_FILE"] = "\0" + draw(
            _FILE_PASSWORD | _FILE_PASSWORD.map(lambda password: password + "\n")
        )
    if draw(st.integers(0, 6)) == 0:
        env["ACME_CA_BUNDLE"] = "\0" + draw(TEXT | st.just("-----BEGIN CERTIFICATE-----\n"))
    return env


def _mount(env: dict[str, str], directory: Path) -> dict[str, str]:
    """Values starting with NUL (which no environment variable can hold) are file contents:
    written to a file, whose path becomes the value."""
    mounted = dict(env)
    for name, value in env.items():
        if value.startswith("\0"):
            path = directory / name.lower()
            path.write_text(value[1:], encoding="utf-8", newline="")
            mounted[name] = str(path)
    return mounted


def _load(env: dict[str, str]) -> Settings | ConfigErrors:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("VPN_", "ACME_"))}
    with mock.patch.dict(os.environ, {**kept, **env}, clear=True):
        try:
            return load_settings()
        except ConfigErrors as errors:  # anything else fails the test with its traceback
            return errors


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_every_setting_is_fuzzed() -> None:
    """The generators cover every setting the image reads (new ones are found by name)."""
    assert set(NAMES) | FILE_SETTINGS == known_variables()


# --- refused input: one line per problem, naming a setting, never a password -------------


def check_refusal(errors: ConfigErrors) -> None:
    known = known_variables()
    assert errors.errors, "refused without saying why"
    for error in errors.errors:
        line = error.line()
        assert error.setting in known, f"{line!r} names no setting"
        assert line.startswith(error.setting + ": ")
        assert len(line.splitlines()) == 1, f"{line!r} is not one line"
        assert MARK not in line, f"a password leaked into {line!r}"
    assert str(errors).count("\n") == len(errors.errors) - 1


# --- accepted input: rendered without injection -------------------------------------------


def _plan(plan: render.Plan, loaded: Settings) -> render.Plan:
    accounts = loaded.accounts()
    static: tuple[render.StaticAddress, ...] = ()
    if loaded.pool_v4_static is not None and accounts:
        static = (render.StaticAddress(accounts[0].name, loaded.pool_v4_static[1]),)
    return replace(
        plan,
        host=loaded.host or "vpn.example.com",
        accounts=accounts,
        dns=loaded.dns,
        pool_v4=loaded.pool_v4,
        pool_v4_static=loaded.pool_v4_static,
        pool_v6=loaded.pool_v6,
        pool_v6_egress=loaded.pool_v6_egress,
        egress_interface_v6="eth0",
        static=static,
        proposals=loaded.proposals,
        log_level=loaded.log_level,
        dpd_delay=loaded.dpd_delay,
        radius=None
        if loaded.radius_secret is None
        else render.RadiusPlan(
            servers=loaded.radius_servers,
            secret=loaded.radius_secret,
            nas_identifier=loaded.radius_nas_identifier or "vpn.example.com",
            accounting_port=loaded.radius_accounting_port,
            interim_interval=loaded.radius_interim_interval,
        ),
    )


def check_rendering(plan: render.Plan) -> Section:
    main, users = render.swanctl_conf(plan), render.users_conf(plan.users())
    for text in (main, users, render.strongswan_conf(plan)):
        assert MARK not in text, "a password reached a configuration file"
    includes = {}
    if plan.radius is not None:
        # The one quoted value: the secret, which strongswan.conf itself never holds.
        secret = render.conf_string(plan.radius.secret.get_secret_value())
        secrets = render.radius_secrets_conf(plan.radius)
        assert secrets.count(secret) == len(plan.radius.servers)
        includes[str(defaults.RADIUS_SECRETS_FILE)] = secrets.replace(secret, "hidden")
    parse_conf(render.strongswan_conf(plan), includes)
    conf = swanctl(plan)  # any line outside key = value / section { } syntax fails
    assert set(conf) <= {"connections", "pools", "secrets"}
    expected_connections = {CONN} | {static.connection for static in plan.static}
    if plan.pool_v4_static is not None:
        expected_connections.add(defaults.IDENTIFY_CONNECTION)
    assert set(conf["connections"]) == expected_connections
    for name, connection in conf["connections"].items():
        assert connection["local"]["id"] == plan.host, name
        assert connection["dpd_delay"] == f"{plan.dpd_delay}s"
        assert set(connection["children"]) == {CONN}
    for static in plan.static:
        assert conf["connections"][static.connection]["remote"]["eap_id"] == static.user
    assert conf["pools"][POOL]["dns"] == ", ".join(str(server) for server in plan.dns)
    secrets = conf.get("secrets", {})
    assert [(s["id"], s["secret"]) for s in secrets.values()] == [
        (a.name, "0x" + nt_hash(a.password).hex()) for a in plan.accounts
    ]
    assert all(set(secret) == {"id", "secret"} for secret in secrets.values())
    return conf


@pytest.fixture(scope="module")
def plan() -> render.Plan:
    return make_plan()


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(env=environments())
@example(env={"VPN_USERS_FILE": "/tmp/x\n}\nsecrets {"})
@example(env={"ACME_CA_BUNDLE": "/no\u2028such"})
@example(env={"VPN_PASSWORD_FILE": "/no\nsuch", "VPN_USER": "alice"})
@example(env={"VPN_CERT_PATH": "/a\n}", "VPN_USERS": f"a:{MARK}x{MARK}"})
@example(env={"VPN_USERS": f"a:{MARK}}}\n{{{MARK} b:{MARK}#x{MARK}"})
def test_any_environment_is_refused_cleanly_or_rendered_without_injection(
    plan: render.Plan, files: Path, env: dict[str, str]
) -> None:
    loaded = _load(_mount(env, files))
    if isinstance(loaded, ConfigErrors):
        event(f"refused: {loaded.errors[0].setting}")
        check_refusal(loaded)
        return
    event("accepted")
    for line in describe(loaded):  # logged at every start
        assert MARK not in line and "\n" not in line
    check_rendering(_plan(plan, loaded))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(env=environments(junk=False))
def test_valid_settings_with_any_passwords_render_without_injection(
    plan: render.Plan, files: Path, env: dict[str, str]
) -> None:
    """Mostly accepted input, so that many examples get as far as rendering."""
    loaded = _load(_mount(env, files))
    if isinstance(loaded, ConfigErrors):
        event(f"refused: {loaded.errors[0].setting}")
        check_refusal(loaded)
        return
    event("accepted")
    check_rendering(_plan(plan, loaded))


@settings(max_examples=200, deadline=None)
@given(
    accounts=st.lists(
        st.tuples(_USER_NAMES, _FILE_PASSWORD), max_size=6, unique_by=lambda pair: pair[0]
    )
)
def test_every_accepted_account_renders_as_exactly_one_secret(
    plan: render.Plan, accounts: list[tuple[str, str]]
) -> None:
    """Straight to the renderer: any password, including those no setting can carry."""
    declared = tuple(
        Account(name=name, password=SecretStr(password), source="VPN_USERS")
        for name, password in accounts
    )
    conf = check_rendering(replace(plan, accounts=declared))
    assert len(conf.get("secrets", {})) == len(declared)


def test_users_file_errors_do_not_quote_lines(files: Path) -> None:
    """A users-file line without a colon may be a password pasted on its own line."""
    path = files / "pasted"
    path.write_text(f"alice:{MARK}one{MARK}\n{MARK}two{MARK}\n", encoding="utf-8")
    loaded = _load({"VPN_USERS_FILE": str(path)})
    assert isinstance(loaded, ConfigErrors)
    check_refusal(loaded)
    assert "line 2 has no colon" in str(loaded)
