"""The compatibility matrix, measured: each platform's client against each proposal set.

A strongSwan client replays what each platform's built-in client offers (the proposals in
ikev2_vpn_lab/platforms.py, each quoting docs/clients.md), and then what each profile
file the server generates makes a device offer (read back by ikev2_vpn_lab.profile_replay).
Under VPN_PROPOSALS=compatible everything connects; under modern, the platforms that offer
only legacy algorithms are refused, and the server's log says it was about proposals.

What was measured goes to a results file (ikev2_vpn_lab.matrix), and the last test fails
when the table in docs/clients.md says otherwise:
`python -m ikev2_vpn_lab.matrix --update-readme` rewrites it from the results.

One server per proposal set and one client per server, reused for every attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ikev2_vpn_helper.profiles import fetch_profiles
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.vpnclient import Target, VpnClient
from ikev2_vpn_lab import matrix
from ikev2_vpn_lab.lab import Lab
from ikev2_vpn_lab.matrix import Outcome
from ikev2_vpn_lab.platforms import (
    GENERATED_PROFILES,
    PLATFORMS,
    GeneratedProfile,
    Platform,
    by_key,
)
from ikev2_vpn_lab.profile_replay import parse_profile

HOST = "vpn.example.test"
DNS = "198.51.100.53"  # documentation address: pushed, never queried
USER, PASSWORD = "compat", "Compat-pw-1"
# Refusals come back within a second (NO_PROPOSAL_CHOSEN); this only bounds a hang.
TIMEOUT_S = 15


@dataclass
class Site:
    """A server under one proposal set, with the client and target reused for every attempt."""

    server: Server
    client: VpnClient
    target: Target
    egress_address: str  # the source address the target sees for tunnelled traffic


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    client_error: str | None
    server_log: str  # what the server logged during the attempt


@pytest.fixture(scope="module")
def site(lab: Lab) -> Iterator[Callable[[str], Site]]:
    """The site for a proposal set, started on first use."""
    sites: dict[str, Site] = {}

    def get(proposal_set: str) -> Site:
        if proposal_set not in sites:
            server = lab.start_server(
                {"VPN_HOST": HOST, "VPN_DNS": DNS, "VPN_PROPOSALS": proposal_set},
                name=lab.name(f"compat-{proposal_set}"),
                volume=lab.name(f"compat-{proposal_set}-data"),
                secret_files={"VPN_USERS_FILE": f"{USER}:{PASSWORD}\n".encode()},
            )
            sites[proposal_set] = Site(
                server, lab.start_client(server), lab.target(server), server.egress().address
            )
        return sites[proposal_set]

    yield get


@pytest.fixture(scope="module")
def measured() -> Iterator[matrix.Results]:
    """What this module measured; written to the results file when the module ends."""
    results: matrix.Results = {}
    yield results
    if results:
        matrix.save_results(matrix.results_path(), results)


def attempt(
    site: Site,
    *,
    ike: str | None,
    esp: str | None,
    user: str = USER,
    server_id: str | None = None,
) -> Attempt:
    """Connect, send traffic through the tunnel, disconnect; judge what happened."""
    before = len(site.server.container.logs())
    result = site.client.connect(
        user,
        PASSWORD,
        ike_proposals=ike,
        esp_proposals=esp,
        server_id=server_id,
        timeout_s=TIMEOUT_S,
    )
    traffic_ok = False
    if result.connected:
        traffic = site.client.send_traffic(site.target, count=1)
        traffic_ok = traffic.tcp_source == site.egress_address
        site.client.disconnect()
    server_log = site.server.container.logs()[before:].decode(errors="replace")
    return Attempt(matrix.judge(result.connected, traffic_ok, server_log), result.error, server_log)


def expect(attempt: Attempt, *, connects: bool) -> None:
    if connects:
        assert attempt.outcome is Outcome.CONNECTS, (attempt.client_error, attempt.server_log)
        return
    # Refused because of proposals: the client hears NO_PROPOSAL_CHOSEN and the server's log
    # says which proposals it could not accept.
    assert attempt.outcome.refused, (attempt.outcome, attempt.client_error, attempt.server_log)
    assert "NO_PROPOSAL_CHOSEN" in (attempt.client_error or ""), attempt.client_error
    assert "received proposals:" in attempt.server_log


@pytest.mark.parametrize("proposal_set", matrix.PROPOSAL_SETS)
@pytest.mark.parametrize("platform", PLATFORMS, ids=[p.key for p in PLATFORMS])
def test_platform_defaults(
    site: Callable[[str], Site],
    measured: matrix.Results,
    platform: Platform,
    proposal_set: str,
) -> None:
    """A client offering what the platform offers out of the box (docs/clients.md,
    quoted in platform.source)."""
    result = attempt(site(proposal_set), ike=platform.ike_proposals, esp=platform.esp_proposals)
    measured.setdefault(platform.key, {})[proposal_set] = result.outcome.value
    expect(result, connects=proposal_set == "compatible" or platform.strong)


@pytest.fixture(scope="module")
def profile_files(
    site: Callable[[str], Site], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], list[Path]]:
    """The profiles each server wrote for USER, copied out once per server."""
    fetched: dict[str, list[Path]] = {}

    def get(proposal_set: str) -> list[Path]:
        if proposal_set not in fetched:
            out = tmp_path_factory.mktemp(f"profiles-{proposal_set}")
            fetched[proposal_set] = fetch_profiles(site(proposal_set).server.container, USER, out)
        return fetched[proposal_set]

    return get


@pytest.mark.parametrize("proposal_set", matrix.PROPOSAL_SETS)
@pytest.mark.parametrize("profile", GENERATED_PROFILES, ids=[p.key for p in GENERATED_PROFILES])
def test_generated_profile(
    site: Callable[[str], Site],
    profile_files: Callable[[str], list[Path]],
    measured: matrix.Results,
    profile: GeneratedProfile,
    proposal_set: str,
) -> None:
    """A device set up from the profile file offers exactly the profile's proposals; they
    are strong ones, so the profile works under both proposal sets."""
    here = site(proposal_set)
    files = [
        path for path in profile_files(proposal_set) if path.name.endswith(profile.file_suffix)
    ]
    assert len(files) == 1, [path.name for path in profile_files(proposal_set)]
    replayed = parse_profile(files[0].name, files[0].read_bytes())
    # The profile dials the server by the name in its certificate and expects that identity.
    assert replayed.remote_address == HOST
    assert replayed.remote_id == here.server.identity()
    assert replayed.user in {USER, None}  # None: typed by the user (Windows)
    if replayed.ca_der is not None:
        ca = x509.load_pem_x509_certificate(here.server.ca_certificate())
        assert replayed.ca_der == ca.public_bytes(Encoding.DER)
    assert replayed.ike and replayed.esp, "a profile pins its proposals"

    result = attempt(
        here,
        ike=replayed.ike_proposals,
        esp=replayed.esp_proposals,
        user=replayed.user or USER,
        server_id=replayed.remote_id,
    )
    measured.setdefault(profile.key, {})[proposal_set] = result.outcome.value
    expect(result, connects=True)


REKEY_WAIT_S = 20.0
# What charon calls the groups profiles and platforms use for PFS, in its log lines.
_LOGGED_GROUPS = {"modp2048": "MODP_2048", "ecp256": "ECP_256", "ecp384": "ECP_384"}


@pytest.mark.parametrize("replay", ["ios", "macos", "apple-profile"])
def test_apple_devices_rekey_their_tunnel_under_modern(
    site: Callable[[str], Site],
    profile_files: Callable[[str], list[Path]],
    replay: str,
) -> None:
    """Apple devices rekey ESP with a DH group (iOS, a profile with EnablePFS) or without one
    (macOS: "rekeys ESP without a DH group", docs/clients.md). A server that refused
    either would drop the tunnel at every rekey; it must accept both and keep carrying
    traffic."""
    here = site("modern")
    if replay == "apple-profile":
        (path,) = [p for p in profile_files("modern") if p.name.endswith(".mobileconfig")]
        replayed = parse_profile(path.name, path.read_bytes())
        ike, esp = replayed.ike_proposals, replayed.esp_proposals
    else:
        ike, esp = by_key(replay).ike_proposals, by_key(replay).esp_proposals
    assert esp is not None
    connected = here.client.connect(
        USER, PASSWORD, ike_proposals=ike, esp_proposals=esp, timeout_s=TIMEOUT_S
    )
    assert connected.connected, connected.error
    before = len(here.server.container.logs())
    assert here.client.rekey(), here.client.logs(20)
    # swanctl --rekey returns once charon has queued the rekey, not when it is done.
    deadline = time.monotonic() + REKEY_WAIT_S
    while True:
        rekeyed = here.server.container.logs()[before:].decode(errors="replace")
        selected = [line for line in rekeyed.splitlines() if "selected proposal: ESP:" in line]
        if selected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert selected, rekeyed
    group = esp.split(",")[0].split("-")[-1]  # what the device's first ESP proposal offers
    if group in _LOGGED_GROUPS:
        assert _LOGGED_GROUPS[group] in selected[0]
    else:
        assert not any(name in selected[0] for name in ("MODP_", "ECP_", "CURVE_")), selected
    traffic = here.client.send_traffic(here.target, count=1)
    assert traffic.tcp_source == here.egress_address, traffic
    here.client.disconnect()


def test_readme_table_matches_what_was_measured(measured: matrix.Results) -> None:
    """Runs last in this module: the table in docs/clients.md must say what the tests above saw."""
    assert measured, "no compatibility test ran before this one"
    readme = (Path(__file__).parents[2] / "docs" / "clients.md").read_text(encoding="utf-8")
    problems = matrix.disagreements(readme, measured)
    assert not problems, (
        "the compatibility table in docs/clients.md disagrees with this run; update it with "
        "`python -m ikev2_vpn_lab.matrix --update-readme`:\n" + "\n".join(problems)
    )
