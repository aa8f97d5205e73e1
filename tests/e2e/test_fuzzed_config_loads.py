"""What the settings accept, charon accepts: generated users, passwords and a host name
(hypothesis, fixed seed) that pass validation are loaded by a real server, which becomes
healthy, and `swanctl --load-all` reads the written files without a complaint."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from ikev2_vpn.errors import ConfigErrors
from ikev2_vpn.settings import load_settings
from ikev2_vpn_helper import engine as eng
from ikev2_vpn_lab.lab import Lab

USERS = 20
_ODD = [*" \t\x0b\x0c\x1c\x85\u2028:.@+-_{}#;\"'\\%,/=[]$`", "0", "x", "é", "€", "日", "\U0001f511"]
_CHARS = st.sampled_from(_ODD) | st.characters(
    blacklist_categories=["Cs", "Cc"], blacklist_characters="\n"
)
NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,30}", fullmatch=True)
PASSWORDS = st.text(_CHARS, min_size=1, max_size=40)
HOSTS = st.from_regex(
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?\.[Ee]xample\.test\.?", fullmatch=True
)


def generated() -> tuple[str, dict[str, str]]:
    """A host name and USERS accounts, the same at every run (derandomized)."""
    hosts: list[str] = []
    accounts: dict[str, str] = {}

    @settings(database=None, derandomize=True, max_examples=300, phases=[Phase.generate])
    @given(st.tuples(HOSTS, NAMES, PASSWORDS))
    def collect(drawn: tuple[str, str, str]) -> None:
        host, name, password = drawn
        hosts.append(host)
        if len(accounts) < USERS and name.lower() not in {n.lower() for n in accounts}:
            accounts[name] = password

    collect()
    assert len(accounts) == USERS
    return max(hosts, key=len), accounts


def accepted(host: str, users_file: Path) -> None:
    """The sample really is accepted input (else it would test the refusal instead)."""
    env = {"VPN_HOST": host, "VPN_USERS_FILE": str(users_file)}
    with mock.patch.dict(os.environ, env, clear=True):
        try:
            load_settings()
        except ConfigErrors as errors:
            raise AssertionError(f"generated input refused: {errors}") from None


def test_generated_accepted_input_loads_into_charon(lab: Lab, tmp_path: Path) -> None:
    host, accounts = generated()
    text = "".join(f"{name}:{password}\n" for name, password in accounts.items())
    users_file = tmp_path / "users"
    users_file.write_text(text, encoding="utf-8")
    accepted(host, users_file)

    server = lab.start_server(
        {"VPN_HOST": host, "VPN_DNS": "198.51.100.53", "VPN_POOL_V4_STATIC": "10.10.10.192/26"},
        name=lab.name("fuzzed"),
        volume=lab.name("fuzzed-data"),
        secret_files={"VPN_USERS_FILE": text.encode()},
    )
    loaded = eng.run_in(server.container, ["swanctl", "--load-all", "--noprompt"])
    output = loaded.stdout + loaded.stderr
    assert loaded.exit_code == 0, output
    for complaint in ("error", "failed", "invalid", "unknown"):
        assert complaint not in output.lower(), output
    assert output.count("loaded ntlm secret") == USERS, output
    conns = eng.run_checked(server.container, ["swanctl", "--list-conns"])
    assert host.lower().rstrip(".") in conns

    # Two of the accounts log in with their generated passwords.
    for name in list(accounts)[:2]:
        result = lab.start_client(server).connect(name, accounts[name])
        assert result.connected, f"{name!r}: {result.error}"
