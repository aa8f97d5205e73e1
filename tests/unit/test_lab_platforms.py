"""The replayed platforms: valid proposals that match the lines of docs/clients.md they quote."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from ikev2_vpn.profiles import ProfileInput, windows
from ikev2_vpn_helper.vpnclient import proposal_list
from ikev2_vpn_lab.platforms import GENERATED_PROFILES, PLATFORMS, Platform, by_key
from ikev2_vpn_lab.profile_replay import PARSERS, parse_powershell

README = Path(__file__).parents[2] / "docs" / "clients.md"  # shows the PowerShell commands
_QUOTED_PROPOSAL = re.compile(r"`([a-z0-9]+(?:-[a-z0-9]+)+)`")


def test_keys_are_unique() -> None:
    keys = [entry.key for entry in PLATFORMS] + [entry.key for entry in GENERATED_PROFILES]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("platform", PLATFORMS, ids=[p.key for p in PLATFORMS])
def test_proposals_are_strongswan_proposal_lists(platform: Platform) -> None:
    for value in (platform.ike_proposals, platform.esp_proposals):
        assert proposal_list(value) == value


@pytest.mark.parametrize("platform", PLATFORMS, ids=[p.key for p in PLATFORMS])
def test_proposals_quoted_from_clients_md_are_replayed_verbatim(platform: Platform) -> None:
    """Where the quoted line of docs/clients.md gives a strongSwan proposal, the replay offers it
    as written: nothing dropped, nothing reordered."""
    assert platform.source
    for quoted in _QUOTED_PROPOSAL.findall(platform.source):
        assert quoted in platform.ike + platform.esp, quoted


def test_windows_keeps_des_and_null_which_strongswan_can_send() -> None:
    for key in ("windows10", "windows11", "windows-dh2048"):
        assert by_key(key).esp == ("aes256-aes128-3des-des-null-sha1",)
    with pytest.raises(KeyError):
        by_key("windows95")


def test_only_the_legacy_windows_setups_are_expected_to_need_compatible() -> None:
    legacy = {platform.key for platform in PLATFORMS if not platform.strong}
    assert legacy == {"windows10", "windows11", "windows-dh2048"}
    assert all(profile.strong for profile in GENERATED_PROFILES)


def test_platforms_with_defaults_offer_no_proposals_of_their_own() -> None:
    for key in ("android-strongswan", "linux"):
        assert (by_key(key).ike_proposals, by_key(key).esp_proposals) == (None, None)


def test_every_generated_profile_has_a_parser() -> None:
    suffixes = {suffix for suffix, _ in PARSERS}
    for profile in GENERATED_PROFILES:
        assert profile.file_suffix in suffixes


def _powershell_block(readme: str) -> str:
    found = re.search(r"```powershell\n(.*?)```", readme, re.DOTALL)
    assert found, "the README shows no PowerShell commands"
    return found.group(1)


def test_the_readmes_powershell_settings_are_the_replayed_ones() -> None:
    replayed = parse_powershell(_powershell_block(README.read_text(encoding="utf-8")))
    powershell = by_key("windows-powershell")
    assert (replayed.ike, replayed.esp) == (powershell.ike, powershell.esp)


def test_the_generated_script_sets_what_the_readme_shows() -> None:
    profile = ProfileInput(
        host="vpn.example.test",
        user="alice",
        password=None,
        ca=None,
        esp_gcm=True,
        dns=(),
        pool_v4=ipaddress.IPv4Network("10.10.10.0/24"),
    )
    replayed = parse_powershell(windows.windows_script(profile))
    powershell = by_key("windows-powershell")
    assert (replayed.ike, replayed.esp) == (powershell.ike, powershell.esp)
