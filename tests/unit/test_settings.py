"""Settings from the environment: what an operator types, and the one line they get back."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import pytest

from ikev2_vpn.errors import ConfigError, ConfigErrors
from ikev2_vpn.settings import (
    AcmeFallback,
    Backend,
    CertSource,
    KeyType,
    ProposalSet,
    Settings,
    describe,
    unknown_variables,
)

Load = Callable[..., Settings]
Reject = Callable[..., ConfigError]

# Distinctive secrets: any appearance in a message is a leak, not a coincidence.
SECRET = "Zq7-secret-Xy9"
OTHER_SECRET = "Wv4-hidden-Kt2"


# Every test starts from an environment without any VPN_* or ACME_* variable.
pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def reject(load: Load) -> Reject:
    """Expect exactly one problem, reported as one line that starts with the variable."""

    def _reject(setting: str, **env: str) -> ConfigError:
        with pytest.raises(ConfigErrors) as caught:
            load(**env)
        message = str(caught.value)
        assert len(caught.value.errors) == 1, message
        error = caught.value.errors[0]
        assert error.setting == setting, message
        assert message == error.line()
        assert message.startswith(f"{setting}: ")
        assert "\n" not in message
        assert error.problem
        assert error.fix
        return error

    return _reject


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str | bytes], str]:
    """Write a mounted file (a secret, a users list) and return its path as a variable value."""

    def _write(name: str, content: str | bytes) -> str:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return str(path)

    return _write


def passwords(settings: Settings) -> dict[str, str]:
    return {a.name: a.password.get_secret_value() for a in settings.accounts()}


# --- defaults ------------------------------------------------------------------------------


def test_nothing_set_gives_the_documented_defaults(load: Load) -> None:
    settings = load()
    assert settings.host is None
    assert settings.host_detect is True
    assert settings.accounts() == ()
    assert settings.pool_v4 == ipaddress.IPv4Network("10.10.10.0/24")
    assert [str(server) for server in settings.dns] == ["1.1.1.1", "1.0.0.1"]
    assert settings.ipsec_backend is Backend.AUTO
    assert settings.proposals is ProposalSet.COMPATIBLE
    assert settings.cert is CertSource.SELF_SIGNED
    assert settings.log_level == 1


def test_empty_values_behave_as_unset(load: Load) -> None:
    """compose passes `VPN_X: ${VPN_X:-}` as an empty string for every unset variable."""
    names = [
        "VPN_HOST", "VPN_HOST_DETECT", "VPN_USER", "VPN_PASSWORD", "VPN_PASSWORD_FILE",
        "VPN_USERS", "VPN_USERS_FILE", "VPN_POOL_V4", "VPN_DNS", "VPN_IPSEC_BACKEND",
        "VPN_PROPOSALS", "VPN_CERT", "VPN_CHAIN_PATH", "VPN_LOG_LEVEL",
    ]  # fmt: skip
    defaults = load()
    assert load(**dict.fromkeys(names, "")) == defaults


# --- VPN_HOST ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("vpn.example.com", "vpn.example.com"),
        ("VPN.Example.COM.", "vpn.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("my-server", "my-server"),
        ("203.0.113.5", "203.0.113.5"),
        ("2001:DB8:0::1", "2001:db8::1"),
    ],
)
def test_host_accepts_dns_names_and_addresses(load: Load, value: str, expected: str) -> None:
    assert load(VPN_HOST=value).host == expected


@pytest.mark.parametrize(
    "value",
    [
        "https://vpn.example.com",
        "vpn.example.com:500",
        "203.0.113.5:4500",
        "[2001:db8::1]",
        "vpn.example.com/",
        " vpn.example.com",
        "vpn example.com",
        "vpn_1.example.com",
        "-vpn.example.com",
        "vpn..example.com",
        "1.2.3.999",
        "a" * 64 + ".example.com",
        "vpn.example.com\nsecrets {",
    ],
)
def test_host_that_is_no_name_or_address_is_refused(reject: Reject, value: str) -> None:
    error = reject("VPN_HOST", VPN_HOST=value)
    assert "without scheme or port" in error.fix


@pytest.mark.parametrize("value", ["127.0.0.1", "0.0.0.0", "::1", "::", "224.0.0.5"])  # noqa: S104
def test_host_clients_cannot_dial_is_refused(reject: Reject, value: str) -> None:
    error = reject("VPN_HOST", VPN_HOST=value)
    assert "cannot be dialled" in error.problem


@pytest.mark.parametrize("value", ["fe80::1%eth0", "fe80::1%x}\n{"])
def test_host_with_zone_index_is_refused(reject: Reject, value: str) -> None:
    """The zone index takes any text: accepted, it would land verbatim in swanctl.conf."""
    error = reject("VPN_HOST", VPN_HOST=value)
    assert "zone index" in error.problem


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("off", False),
        ("OFF", False),
        ("no", False),
        ("0", False),
        ("false", False),
        ("False", False),
        ("on", True),
        ("yes", True),
        ("1", True),
        ("true", True),
    ],
)
def test_host_detect_takes_the_usual_booleans(load: Load, value: str, expected: bool) -> None:
    assert load(VPN_HOST_DETECT=value).host_detect is expected


def test_host_detect_refuses_other_words(reject: Reject) -> None:
    error = reject("VPN_HOST_DETECT", VPN_HOST_DETECT="sometimes")
    assert "'sometimes'" in error.problem


# --- VPN_USER, VPN_PASSWORD, VPN_PASSWORD_FILE --------------------------------------------


def test_single_account(load: Load) -> None:
    settings = load(VPN_USER="alice", VPN_PASSWORD=SECRET)
    [account] = settings.accounts()
    assert (account.name, account.password.get_secret_value()) == ("alice", SECRET)
    assert account.source == "VPN_USER"


@pytest.mark.parametrize(
    "password",
    ["  leading and trailing spaces  ", "quo\"te's {brace} #hash ;semi \\back", "ünï €😀", "a"],
)
def test_password_is_used_verbatim(load: Load, password: str) -> None:
    assert passwords(load(VPN_USER="alice", VPN_PASSWORD=password)) == {"alice": password}


def test_user_without_password_is_refused(reject: Reject) -> None:
    error = reject("VPN_PASSWORD", VPN_USER="alice")
    assert "VPN_PASSWORD_FILE" in error.fix


def test_password_without_user_is_refused_without_echoing_it(reject: Reject) -> None:
    error = reject("VPN_USER", VPN_PASSWORD=SECRET)
    assert SECRET not in str(error)


@pytest.mark.parametrize("name", ["alice", "alice.b", "a@example.com", "a+b", "A_1-x", "a" * 64])
def test_user_names_allowed(load: Load, name: str) -> None:
    assert passwords(load(VPN_USER=name, VPN_PASSWORD=SECRET)) == {name: SECRET}


@pytest.mark.parametrize(
    "name", ["al ice", "alice:x", "-alice", ".alice", "a" * 65, "ålice", "a/b", 'a"b', "a{b}"]
)
def test_user_names_refused(reject: Reject, name: str) -> None:
    error = reject("VPN_USER", VPN_USER=name, VPN_PASSWORD=SECRET)
    assert "rename the user" in error.fix
    assert SECRET not in str(error)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("secret\n", "secret"),
        ("secret", "secret"),
        ("secret\r\n", "secret"),
        ("  spaced out \n", "  spaced out "),
        ("ünï €\n", "ünï €"),
    ],
)
def test_password_file_drops_one_trailing_newline(
    load: Load, write_file: Callable[[str, str], str], content: str, expected: str
) -> None:
    path = write_file("password", content)
    settings = load(VPN_USER="alice", VPN_PASSWORD_FILE=path)
    assert passwords(settings) == {"alice": expected}


@pytest.mark.parametrize("content", ["secret\n\n", "tab\tbed\n", "form\x0cfeed"])
def test_password_file_with_a_control_character_is_refused(
    reject: Reject, write_file: Callable[[str, str], str], content: str
) -> None:
    """A second line break, a tab, a form feed: no profile can carry them (issue 13)."""
    error = reject(
        "VPN_PASSWORD_FILE", VPN_USER="alice", VPN_PASSWORD_FILE=write_file("pw", content)
    )
    assert "control character" in error.problem
    assert content.strip() not in str(error)


def test_password_file_with_empty_password_variable_is_fine(
    load: Load, write_file: Callable[[str, str], str]
) -> None:
    path = write_file("password", SECRET + "\n")
    assert passwords(load(VPN_USER="alice", VPN_PASSWORD="", VPN_PASSWORD_FILE=path)) == {
        "alice": SECRET
    }


def test_password_and_password_file_together_are_refused(
    reject: Reject, write_file: Callable[[str, str], str]
) -> None:
    path = write_file("password", OTHER_SECRET)
    error = reject("VPN_PASSWORD_FILE", VPN_USER="a", VPN_PASSWORD=SECRET, VPN_PASSWORD_FILE=path)
    assert "VPN_PASSWORD and VPN_PASSWORD_FILE" in error.problem
    assert SECRET not in str(error)
    assert OTHER_SECRET not in str(error)


def test_missing_password_file_is_refused(reject: Reject, tmp_path: Path) -> None:
    error = reject("VPN_PASSWORD_FILE", VPN_USER="a", VPN_PASSWORD_FILE=str(tmp_path / "nope"))
    assert "does not exist" in error.problem


def test_password_file_that_is_a_directory_is_refused(reject: Reject, tmp_path: Path) -> None:
    error = reject("VPN_PASSWORD_FILE", VPN_USER="a", VPN_PASSWORD_FILE=str(tmp_path))
    assert "directory" in error.problem


def test_empty_password_file_is_refused(
    reject: Reject, write_file: Callable[[str, str], str]
) -> None:
    error = reject("VPN_PASSWORD", VPN_USER="a", VPN_PASSWORD_FILE=write_file("password", "\n"))
    assert "empty" in error.problem


# --- VPN_USERS -----------------------------------------------------------------------------


def test_users_are_whitespace_separated_pairs(load: Load) -> None:
    settings = load(VPN_USERS="  alice:one\tbob:two\n carol:three ")
    assert passwords(settings) == {"alice": "one", "bob": "two", "carol": "three"}
    assert {a.source for a in settings.accounts()} == {"VPN_USERS"}


def test_users_password_keeps_its_colons(load: Load) -> None:
    assert passwords(load(VPN_USERS="alice:a:b::c:")) == {"alice": "a:b::c:"}


def test_users_entry_without_colon_is_refused_without_echoing_it(reject: Reject) -> None:
    """The usual cause: a password with a space, whose second half becomes an entry."""
    error = reject("VPN_USERS", VPN_USERS=f"alice:first {SECRET}")
    assert "entry 2" in error.problem
    assert "VPN_USERS_FILE" in error.fix
    assert SECRET not in str(error)


def test_users_entry_with_empty_password_is_refused(reject: Reject) -> None:
    error = reject("VPN_USERS", VPN_USERS=f"alice:{SECRET} bob:")
    assert "'bob'" in error.problem
    assert SECRET not in str(error)


@pytest.mark.parametrize("entry", ["al!ce:pw", ":pw", "-x:pw", "a" * 65 + ":pw"])
def test_users_with_invalid_name_are_refused(reject: Reject, entry: str) -> None:
    error = reject("VPN_USERS", VPN_USERS=f"{entry} bob:{SECRET}")
    assert SECRET not in str(error)


def test_users_declared_twice_are_refused(reject: Reject) -> None:
    error = reject("VPN_USERS", VPN_USERS=f"alice:{SECRET} alice:{OTHER_SECRET}")
    assert "'alice' is declared twice" in error.problem
    assert SECRET not in str(error)
    assert OTHER_SECRET not in str(error)


# --- VPN_USERS_FILE ------------------------------------------------------------------------

TRICKY_USERS_FILE = (
    "# VPN accounts\n"
    "\n"
    "   \n"
    "  # indented comment\n"
    "alice:pass word with spaces \n"
    "bob:#not a comment\n"
    "carol:\"double\" and 'single'\n"
    "dave:{braces} [brackets] ;semicolon\n"
    "erin:back\\slash\\\n"
    "frank:ünïcødé €😀\n"
    "grace::leading:colons:\n"
    "heidi:\u3000ideographic spaces\u3000\n"
    "ivan:\u2028line separator\u2029paragraph\n"
    "judy:windows line end\r\n"
    "ken:no final newline"
)
TRICKY_PASSWORDS = {
    "alice": "pass word with spaces ",
    "bob": "#not a comment",
    "carol": "\"double\" and 'single'",
    "dave": "{braces} [brackets] ;semicolon",
    "erin": "back\\slash\\",
    "frank": "ünïcødé €😀",
    "grace": ":leading:colons:",
    "heidi": "\u3000ideographic spaces\u3000",
    "ivan": "\u2028line separator\u2029paragraph",
    "judy": "windows line end",
    "ken": "no final newline",
}


def test_users_file_password_is_everything_after_the_first_colon(
    load: Load, write_file: Callable[[str, str], str]
) -> None:
    settings = load(VPN_USERS_FILE=write_file("users", TRICKY_USERS_FILE))
    assert passwords(settings) == TRICKY_PASSWORDS
    sources = {a.name: a.source for a in settings.accounts()}
    assert sources["alice"] == "VPN_USERS_FILE line 5"
    assert sources["ken"] == "VPN_USERS_FILE line 15"


def test_users_file_line_without_colon_is_refused_by_number(
    reject: Reject, write_file: Callable[[str, str], str]
) -> None:
    path = write_file("users", f"# accounts\nalice:{SECRET}\n{OTHER_SECRET}\n")
    error = reject("VPN_USERS_FILE", VPN_USERS_FILE=path)
    assert "line 3 has no colon" in error.problem
    assert SECRET not in str(error)
    assert OTHER_SECRET not in str(error)


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n  # and another\n"])
def test_users_file_without_users_is_refused(
    reject: Reject, write_file: Callable[[str, str], str], content: str
) -> None:
    error = reject("VPN_USERS_FILE", VPN_USERS_FILE=write_file("users", content))
    assert "lists no users" in error.problem


@pytest.mark.parametrize("line", ["al ice:pw", ":pw", "bob:"])
def test_users_file_with_invalid_entry_is_refused(
    reject: Reject, write_file: Callable[[str, str], str], line: str
) -> None:
    path = write_file("users", f"alice:{SECRET}\n{line}\n")
    error = reject("VPN_USERS_FILE", VPN_USERS_FILE=path)
    assert SECRET not in str(error)


def test_missing_users_file_is_refused(reject: Reject, tmp_path: Path) -> None:
    error = reject("VPN_USERS_FILE", VPN_USERS_FILE=str(tmp_path / "users.txt"))
    assert "does not exist" in error.problem


def test_users_file_not_in_utf8_is_refused(
    reject: Reject, write_file: Callable[[str, bytes], str]
) -> None:
    path = write_file("users", "alice:caf\xe9\n".encode("latin-1"))
    error = reject("VPN_USERS_FILE", VPN_USERS_FILE=path)
    assert "UTF-8" in error.problem


def test_all_user_sources_add_up(load: Load, write_file: Callable[[str, str], str]) -> None:
    settings = load(
        VPN_USER="alice",
        VPN_PASSWORD="one",
        VPN_USERS="bob:two",
        VPN_USERS_FILE=write_file("users", "carol:three\n"),
    )
    assert passwords(settings) == {"alice": "one", "bob": "two", "carol": "three"}


@pytest.mark.parametrize(
    ("env", "first", "second"),
    [
        ({"VPN_USER": "alice", "VPN_PASSWORD": SECRET}, "VPN_USER", "VPN_USERS_FILE line 2"),
        ({"VPN_USERS": f"alice:{SECRET}"}, "VPN_USERS", "VPN_USERS_FILE line 2"),
    ],
)
def test_user_declared_in_two_sources_is_refused_naming_both(
    reject: Reject,
    write_file: Callable[[str, str], str],
    env: dict[str, str],
    first: str,
    second: str,
) -> None:
    path = write_file("users", f"bob:x\nalice:{OTHER_SECRET}\n")
    error = reject("VPN_USERS_FILE", VPN_USERS_FILE=path, **env)
    assert f"'alice' is declared twice ({first} and {second})" in error.problem
    assert SECRET not in str(error)
    assert OTHER_SECRET not in str(error)


def test_user_declared_twice_in_the_file_names_both_lines(
    reject: Reject, write_file: Callable[[str, str], str]
) -> None:
    path = write_file("users", "alice:a\nbob:b\nalice:c\n")
    error = reject("VPN_USERS_FILE", VPN_USERS_FILE=path)
    assert "(VPN_USERS_FILE line 1 and VPN_USERS_FILE line 3)" in error.problem


# --- VPN_POOL_V4 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["10.10.10.0/24", "192.168.77.0/24", "172.16.0.0/12", "10.0.0.0/8", "100.64.0.0/10"]
)
def test_pool_accepts_private_networks(load: Load, value: str) -> None:
    assert load(VPN_POOL_V4=value).pool_v4 == ipaddress.IPv4Network(value)


def test_pool_with_host_bits_is_refused_with_the_network_to_use(reject: Reject) -> None:
    error = reject("VPN_POOL_V4", VPN_POOL_V4="10.10.10.1/24")
    assert "host bits" in error.problem
    assert "10.10.10.0/24" in error.fix


@pytest.mark.parametrize("value", ["10.10.10.0/31", "10.10.10.0/32", "10.0.0.0/7"])
def test_pool_prefix_out_of_range_is_refused(reject: Reject, value: str) -> None:
    error = reject("VPN_POOL_V4", VPN_POOL_V4=value)
    assert "out of range" in error.problem


@pytest.mark.parametrize("value", ["8.8.8.0/24", "1.2.3.0/24", "100.128.0.0/16"])
def test_pool_in_public_space_is_refused(reject: Reject, value: str) -> None:
    error = reject("VPN_POOL_V4", VPN_POOL_V4=value)
    assert "public address space" in error.problem


@pytest.mark.parametrize("value", ["ten", "10.10.10.0/33", "fd00::/64", "10.10.10.0/24 x"])
def test_pool_that_is_no_network_is_refused(reject: Reject, value: str) -> None:
    error = reject("VPN_POOL_V4", VPN_POOL_V4=value)
    assert "CIDR" in error.fix


# --- VPN_DNS -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9.9.9.9", ["9.9.9.9"]),
        ("8.8.8.8,8.8.4.4", ["8.8.8.8", "8.8.4.4"]),
        ("8.8.8.8, 8.8.4.4", ["8.8.8.8", "8.8.4.4"]),
        ("8.8.8.8 8.8.4.4", ["8.8.8.8", "8.8.4.4"]),
        (" 10.0.0.53 ,, 2620:fe::fe ", ["10.0.0.53", "2620:fe::fe"]),
    ],
)
def test_dns_takes_lists_separated_by_commas_or_spaces(
    load: Load, value: str, expected: list[str]
) -> None:
    # IPv6 servers need IPv6 in the tunnel (test_dual_stack.py).
    settings = load(VPN_DNS=value, VPN_POOL_V6="fd00:10:10::/112")
    assert [str(server) for server in settings.dns] == expected


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("8.8.8.8;8.8.4.4", "8.8.8.8;8.8.4.4"),
        ("1.1.1.1,dns.google", "dns.google"),
        ("8.8.8", "8.8.8"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("fe80::1%}", "fe80::1%}"),
    ],
)
def test_dns_with_an_invalid_entry_names_it(reject: Reject, value: str, bad: str) -> None:
    error = reject("VPN_DNS", VPN_DNS=value)
    assert repr(bad) in error.problem


def test_dns_with_only_separators_is_refused(reject: Reject) -> None:
    error = reject("VPN_DNS", VPN_DNS=" , ")
    assert "no DNS server" in error.problem


# --- choices and numbers -------------------------------------------------------------------

CHOICES = [
    ("VPN_IPSEC_BACKEND", "ipsec_backend", Backend),
    ("VPN_PROPOSALS", "proposals", ProposalSet),
    ("VPN_CERT", "cert", CertSource),
]


@pytest.mark.parametrize(("variable", "field", "choices"), CHOICES)
def test_choices_are_case_insensitive(
    load: Load, monkeypatch: pytest.MonkeyPatch, variable: str, field: str, choices: type[StrEnum]
) -> None:
    monkeypatch.setenv("VPN_HOST", "vpn.example.com")  # VPN_CERT=letsencrypt needs a name
    for choice in choices:
        for spelling in (choice.value, choice.value.upper(), choice.value.title()):
            monkeypatch.setenv(variable, spelling)
            assert getattr(load(), field) is choice


@pytest.mark.parametrize(("variable", "field", "choices"), CHOICES)
def test_unknown_choice_lists_the_valid_ones(
    reject: Reject, variable: str, field: str, choices: type[StrEnum]
) -> None:
    error = reject(variable, **{variable: "fastest"})
    assert "'fastest'" in error.problem
    assert error.fix == "use one of: " + ", ".join(choice.value for choice in choices)


@pytest.mark.parametrize("level", ["0", "1", "2"])
def test_log_levels_in_range(load: Load, level: str) -> None:
    assert load(VPN_LOG_LEVEL=level).log_level == int(level)


@pytest.mark.parametrize("level", ["3", "-1", "4"])
def test_log_levels_that_would_log_keys_are_refused(reject: Reject, level: str) -> None:
    error = reject("VPN_LOG_LEVEL", VPN_LOG_LEVEL=level)
    assert "out of range" in error.problem


@pytest.mark.parametrize("level", ["debug", "1.5", " "])
def test_log_level_that_is_no_number_is_refused(reject: Reject, level: str) -> None:
    error = reject("VPN_LOG_LEVEL", VPN_LOG_LEVEL=level)
    assert "not a number" in error.problem


def test_chain_path_without_operator_files_is_refused(reject: Reject) -> None:
    error = reject("VPN_CHAIN_PATH", VPN_CHAIN_PATH="/certs/chain.pem")
    assert "VPN_CERT=files" in error.fix


def test_operator_files_take_their_paths(load: Load) -> None:
    settings = load(
        VPN_CERT="files",
        VPN_CERT_PATH="/c/cert.pem",
        VPN_KEY_PATH="/c/key.pem",
        VPN_CHAIN_PATH="/c/chain.pem",
    )
    assert (settings.cert_path, settings.key_path, settings.chain_path) == (
        Path("/c/cert.pem"),
        Path("/c/key.pem"),
        Path("/c/chain.pem"),
    )


# --- reporting -----------------------------------------------------------------------------


def test_every_problem_is_reported_on_its_own_line(load: Load) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(
            VPN_HOST="https://x",
            VPN_POOL_V4="8.8.8.0/24",
            VPN_DNS="bad",
            VPN_LOG_LEVEL="9",
            VPN_PROPOSALS="fast",
            VPN_USERS=f"alice:one {SECRET}",
        )
    lines = str(caught.value).splitlines()
    assert sorted(line.split(":", 1)[0] for line in lines) == [
        "VPN_DNS",
        "VPN_HOST",
        "VPN_LOG_LEVEL",
        "VPN_POOL_V4",
        "VPN_PROPOSALS",
        "VPN_USERS",
    ]
    assert lines == [error.line() for error in caught.value.errors]
    assert SECRET not in str(caught.value)


def test_describe_names_users_but_never_passwords(
    load: Load, write_file: Callable[[str, str], str]
) -> None:
    settings = load(
        VPN_HOST="vpn.example.com",
        VPN_USER="alice",
        VPN_PASSWORD=SECRET,
        VPN_USERS_FILE=write_file("users", f"bob:{OTHER_SECRET}\n"),
    )
    text = "\n".join(describe(settings))
    assert "alice" in text
    assert "bob" in text
    assert "vpn.example.com" in text
    assert SECRET not in text
    assert OTHER_SECRET not in text


def test_describe_says_when_the_user_will_be_generated(load: Load) -> None:
    assert "users: (generated)" in list(describe(load()))


def test_typo_in_a_variable_name_suggests_the_real_one() -> None:
    assert unknown_variables({"VPN_PASWORD": SECRET}) == [
        "VPN_PASWORD: not a setting of this image; did you mean VPN_PASSWORD?"
    ]


def test_unknown_variable_far_from_any_setting_is_reported_as_ignored() -> None:
    [warning] = unknown_variables({"VPN_COMPLETELY_DIFFERENT_THING": "1"})
    assert warning.startswith("VPN_COMPLETELY_DIFFERENT_THING: ")
    assert warning.endswith("it is ignored")


def test_known_and_foreign_variables_raise_no_warning() -> None:
    environ = {
        "VPN_HOST": "x",
        "VPN_PASSWORD_FILE": "/run/secrets/p",
        "VPN_USERS_FILE": "/u",
        "VPN_LOG_LEVEL": "1",
        "PATH": "/usr/bin",
        "HOSTNAME": "abc",
    }
    assert unknown_variables(environ) == []


# --- VPN_CERT=letsencrypt and ACME_* -------------------------------------------------------

LETSENCRYPT = {"VPN_CERT": "letsencrypt", "VPN_HOST": "vpn.example.com"}
PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
# Only the PEM armour is checked here; the TLS library reads the certificate itself.
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2E=\n-----END CERTIFICATE-----\n"


def test_letsencrypt_defaults_to_production_rsa_without_fallback(load: Load) -> None:
    settings = load(**LETSENCRYPT)
    assert settings.cert is CertSource.LETSENCRYPT
    assert settings.acme_directory == PRODUCTION
    assert settings.acme_email is None
    assert settings.acme_ca_bundle is None
    assert settings.acme_key_type is KeyType.RSA_3072
    assert settings.acme_fallback is AcmeFallback.NONE


def test_letsencrypt_takes_every_acme_setting(
    load: Load, write_file: Callable[[str, str], str]
) -> None:
    bundle = write_file("pebble.minica.pem", CA_PEM)
    settings = load(
        **LETSENCRYPT,
        ACME_EMAIL="admin@example.com",
        ACME_DIRECTORY="https://pebble:14000/dir",
        ACME_CA_BUNDLE=bundle,
        ACME_KEY_TYPE="ECDSA-P256",
        ACME_FALLBACK="Self-Signed",
    )
    assert settings.acme_email == "admin@example.com"
    assert settings.acme_directory == "https://pebble:14000/dir"
    assert settings.acme_ca_bundle == Path(bundle)
    assert settings.acme_key_type is KeyType.ECDSA_P256
    assert settings.acme_fallback is AcmeFallback.SELF_SIGNED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("production", PRODUCTION),
        ("staging", STAGING),
        ("Staging", STAGING),
        ("PRODUCTION", PRODUCTION),
    ],
)
def test_acme_directory_shortcuts(load: Load, value: str, expected: str) -> None:
    assert load(**LETSENCRYPT, ACME_DIRECTORY=value).acme_directory == expected


@pytest.mark.parametrize(
    "value",
    [
        "http://acme.example.com/directory",
        "acme.example.com/directory",
        "letsencrypt",
        "https://",
        "https:///directory",
        "https://acme.example.com/dir ectory",
        "ftp://acme.example.com/directory",
    ],
)
def test_acme_directory_that_is_no_https_url_is_refused(reject: Reject, value: str) -> None:
    error = reject("ACME_DIRECTORY", **LETSENCRYPT, ACME_DIRECTORY=value)
    assert repr(value) in error.problem
    assert "production, staging" in error.fix


@pytest.mark.parametrize(
    "value",
    ["admin", "admin@localhost", "@example.com", "admin@", "a b@example.com",
     "mailto:admin@example.com", "a@example.com,b@example.com"],
)  # fmt: skip
def test_acme_email_that_is_no_address_is_refused(reject: Reject, value: str) -> None:
    error = reject("ACME_EMAIL", **LETSENCRYPT, ACME_EMAIL=value)
    assert repr(value) in error.problem
    assert "admin@example.com" in error.fix


def test_missing_acme_ca_bundle_is_refused(reject: Reject, tmp_path: Path) -> None:
    error = reject("ACME_CA_BUNDLE", **LETSENCRYPT, ACME_CA_BUNDLE=str(tmp_path / "ca.pem"))
    assert "does not exist" in error.problem


def test_acme_ca_bundle_that_is_a_directory_is_refused(reject: Reject, tmp_path: Path) -> None:
    error = reject("ACME_CA_BUNDLE", **LETSENCRYPT, ACME_CA_BUNDLE=str(tmp_path))
    assert "directory" in error.problem


@pytest.mark.parametrize(
    "content", ["", "not a certificate\n", "-----BEGIN PRIVATE KEY-----\nMIIE\n"]
)
def test_acme_ca_bundle_without_pem_certificate_is_refused(
    reject: Reject, write_file: Callable[[str, str], str], content: str
) -> None:
    error = reject("ACME_CA_BUNDLE", **LETSENCRYPT, ACME_CA_BUNDLE=write_file("ca.pem", content))
    assert "no PEM certificate" in error.problem


@pytest.mark.parametrize(
    ("variable", "field", "choices"),
    [("ACME_KEY_TYPE", "acme_key_type", KeyType), ("ACME_FALLBACK", "acme_fallback", AcmeFallback)],
)
def test_acme_choices_are_case_insensitive_and_unknown_ones_listed(
    load: Load, reject: Reject, variable: str, field: str, choices: type[StrEnum]
) -> None:
    for choice in choices:
        assert getattr(load(**LETSENCRYPT, **{variable: choice.value.upper()}), field) is choice
    error = reject(variable, **LETSENCRYPT, **{variable: "rsa-1024"})
    assert "'rsa-1024'" in error.problem
    assert error.fix == "use one of: " + ", ".join(choice.value for choice in choices)


def test_letsencrypt_without_host_is_refused(reject: Reject) -> None:
    error = reject("VPN_HOST", VPN_CERT="letsencrypt")
    assert "DNS name" in error.problem
    assert "A/AAAA record" in error.fix


@pytest.mark.parametrize("host", ["203.0.113.5", "2001:db8::1"])
def test_letsencrypt_with_an_ip_address_host_is_refused(reject: Reject, host: str) -> None:
    error = reject("VPN_HOST", VPN_CERT="letsencrypt", VPN_HOST=host)
    assert host in error.problem
    assert "VPN_CERT=self-signed" in error.fix


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ACME_EMAIL", "admin@example.com"),
        ("ACME_DIRECTORY", "staging"),
        ("ACME_DIRECTORY", "https://pebble:14000/dir"),
        ("ACME_KEY_TYPE", "ecdsa-p384"),
        ("ACME_FALLBACK", "self-signed"),
    ],
)
@pytest.mark.parametrize("cert", ["self-signed", "files"])
def test_acme_setting_without_letsencrypt_is_refused(
    reject: Reject, variable: str, value: str, cert: str
) -> None:
    error = reject(variable, VPN_CERT=cert, **{variable: value})
    assert error.problem == "is only used with VPN_CERT=letsencrypt"
    assert error.fix == f"set VPN_CERT=letsencrypt or unset {variable}"


def test_acme_ca_bundle_without_letsencrypt_is_refused(
    reject: Reject, write_file: Callable[[str, str], str]
) -> None:
    error = reject("ACME_CA_BUNDLE", ACME_CA_BUNDLE=write_file("ca.pem", CA_PEM))
    assert "VPN_CERT=letsencrypt" in error.problem


def test_acme_settings_at_their_defaults_are_harmless_without_letsencrypt(load: Load) -> None:
    """Compose files often pass every variable; the documented defaults must not trip."""
    settings = load(ACME_DIRECTORY="production", ACME_KEY_TYPE="rsa-3072", ACME_FALLBACK="none")
    assert settings.cert is CertSource.SELF_SIGNED


def test_empty_acme_values_behave_as_unset(load: Load) -> None:
    names = ["ACME_EMAIL", "ACME_DIRECTORY", "ACME_CA_BUNDLE", "ACME_KEY_TYPE", "ACME_FALLBACK"]
    assert load(**dict.fromkeys(names, "")) == load()


def test_acme_problems_are_reported_together_without_secrets(load: Load) -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(
            **LETSENCRYPT,
            VPN_USER="alice",
            VPN_PASSWORD=SECRET,
            ACME_EMAIL="nobody",
            ACME_DIRECTORY="http://acme.example.com/dir",
            ACME_KEY_TYPE="dsa",
            ACME_FALLBACK="ignore",
        )
    lines = str(caught.value).splitlines()
    assert sorted(line.split(":", 1)[0] for line in lines) == [
        "ACME_DIRECTORY",
        "ACME_EMAIL",
        "ACME_FALLBACK",
        "ACME_KEY_TYPE",
    ]
    assert SECRET not in str(caught.value)


def test_misspelt_acme_variable_suggests_the_real_one() -> None:
    assert unknown_variables({"ACME_EMIAL": "admin@example.com", "ACME_DIRECTORY": "x"}) == [
        "ACME_EMIAL: not a setting of this image; did you mean ACME_EMAIL?"
    ]


def test_describe_shows_the_acme_settings_only_with_letsencrypt(
    load: Load, write_file: Callable[[str, str], str]
) -> None:
    assert not any("ACME_" in line for line in describe(load()))
    bundle = write_file("ca.pem", CA_PEM)
    settings = load(
        **LETSENCRYPT,
        VPN_USER="alice",
        VPN_PASSWORD=SECRET,
        ACME_EMAIL="admin@example.com",
        ACME_DIRECTORY="staging",
        ACME_CA_BUNDLE=bundle,
    )
    [line] = [line for line in describe(settings) if "ACME_" in line]
    assert f"ACME_DIRECTORY={STAGING}" in line
    assert "ACME_EMAIL=admin@example.com" in line
    assert "ACME_KEY_TYPE=rsa-3072" in line
    assert "ACME_FALLBACK=none" in line
    assert f"ACME_CA_BUNDLE={bundle}" in line
    assert SECRET not in "\n".join(describe(settings))


def test_describe_says_when_no_acme_email_is_given(load: Load) -> None:
    [line] = [line for line in describe(load(**LETSENCRYPT)) if "ACME_" in line]
    assert "ACME_EMAIL=(none)" in line
    assert "ACME_CA_BUNDLE" not in line


# --- client profiles and static addresses ------------------------------------------------


def test_profile_settings_default_to_passwords_included_and_not_always_on(load: Load) -> None:
    settings = load()
    assert settings.profile_passwords == "include"
    assert settings.profile_always_on is False
    assert settings.pool_v4_static is None


@pytest.mark.parametrize(("value", "expected"), [("omit", "omit"), ("INCLUDE", "include")])
def test_profile_passwords_choice(load: Load, value: str, expected: str) -> None:
    assert load(VPN_PROFILE_PASSWORDS=value).profile_passwords == expected


def test_unknown_profile_passwords_choice_lists_the_valid_ones(reject: Reject) -> None:
    error = reject("VPN_PROFILE_PASSWORDS", VPN_PROFILE_PASSWORDS="maybe")
    assert error.fix == "use one of: include, omit"


@pytest.mark.parametrize(("value", "expected"), [("on", True), ("off", False), ("1", True)])
def test_profile_always_on_takes_on_and_off(load: Load, value: str, expected: bool) -> None:
    assert load(VPN_PROFILE_ALWAYS_ON=value).profile_always_on is expected


def test_static_block_inside_the_pool_is_accepted(load: Load) -> None:
    settings = load(VPN_POOL_V4="10.10.10.0/24", VPN_POOL_V4_STATIC="10.10.10.192/26")
    assert settings.pool_v4_static == ipaddress.IPv4Network("10.10.10.192/26")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("10.10.11.0/26", "not inside VPN_POOL_V4"),
        ("10.10.10.0/24", "leaving no addresses"),
        ("10.10.10.193/26", "host bits"),
        ("10.10.10.192", "CIDR"),
        ("banana", "CIDR"),
    ],
)
def test_static_block_outside_the_pool_or_malformed_is_refused(
    reject: Reject, value: str, words: str
) -> None:
    error = reject("VPN_POOL_V4_STATIC", VPN_POOL_V4="10.10.10.0/24", VPN_POOL_V4_STATIC=value)
    assert words in error.line()


def test_describe_names_the_profile_and_static_settings(load: Load) -> None:
    lines = "\n".join(describe(load(VPN_POOL_V4_STATIC="10.10.10.192/26")))
    assert "VPN_POOL_V4_STATIC=10.10.10.192/26" in lines
    assert "VPN_PROFILE_PASSWORDS=include" in lines


# --- dead-peer detection, client access, login bans -------------------------------------


def test_access_and_ban_settings_default_to_the_safe_side(load: Load) -> None:
    settings = load()
    assert settings.dpd_delay == 30
    assert (settings.client_isolation, settings.allow_server_access) == (False, False)
    assert settings.allow_link_local is False
    assert (settings.ban_after, settings.ban_seconds) == (5, 600)


@pytest.mark.parametrize(("value", "expected"), [("5", 5), ("45s", 45), ("3600", 3600)])
def test_dpd_delay_takes_seconds(load: Load, value: str, expected: int) -> None:
    assert load(VPN_DPD_DELAY=value).dpd_delay == expected


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("VPN_DPD_DELAY", "4", "out of range; give 5 to 3600 seconds"),
        ("VPN_DPD_DELAY", "1m", "not a whole number"),
        ("VPN_BAN_AFTER", "-1", "out of range; give 0 to 1000"),
        ("VPN_BAN_AFTER", "5s", "not a whole number"),
        ("VPN_BAN_SECONDS", "9", "out of range; give 10 to 86400 seconds"),
    ],
)
def test_out_of_range_timers_are_refused(
    reject: Reject, setting: str, value: str, words: str
) -> None:
    assert words in reject(setting, **{setting: value}).line()


def test_ban_after_zero_turns_banning_off(load: Load) -> None:
    assert load(VPN_BAN_AFTER="0").ban_after == 0


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_are_off_unless_a_port_is_given(load: Load) -> None:
    assert load().metrics_port is None
    assert load(VPN_METRICS_PORT="").metrics_port is None  # compose passes unset as empty
    assert "VPN_METRICS_PORT=(off)" in "\n".join(describe(load()))


def test_metrics_port_is_a_tcp_port(load: Load) -> None:
    settings = load(VPN_METRICS_PORT="9814")
    assert settings.metrics_port == 9814
    assert "VPN_METRICS_PORT=9814" in "\n".join(describe(settings))


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("metrics", "'metrics' is not a port number; give a TCP port such as 9814"),
        ("9814/tcp", "is not a port number"),
        ("0", "0 is out of range; give a TCP port from 1 to 65535"),
        ("65536", "65536 is out of range"),
        ("80", "80 is the container's HTTP port (ACME challenges, profile sharing)"),
        ("443", "443 is the container's HTTPS port (profile sharing with a public certificate)"),
    ],
)
def test_bad_metrics_ports_are_refused(reject: Reject, value: str, words: str) -> None:
    assert words in reject("VPN_METRICS_PORT", VPN_METRICS_PORT=value).line()


def test_a_password_split_by_a_space_in_vpn_users_is_not_echoed(reject: Reject) -> None:
    """After a space, what looks like "name:password" may be the tail of a password."""
    error = reject("VPN_USERS", VPN_USERS="alice:Zq7 se#cret:Xy9")
    assert "entry 2" in error.line()
    assert "se#cret" not in error.line() and "Xy9" not in error.line()
