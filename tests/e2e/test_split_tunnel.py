"""Split tunnels set by the server (VPN_SPLIT_NETS), measured end to end.

The server tunnels only the lab's egress network (where the "inside" target lives) and its
DNS server. A client on the wan network then reaches the inside target through the tunnel
(the target sees the server's address) and a target next to it on the wan network, outside
the split networks, directly (that target sees the client's own address).

Each platform whose client routes what the server's traffic selector covers is replayed by a
strongSwan client offering that platform's proposals and proposing everything, as those
clients do; each generated profile is read back (ikev2_vpn_lab.profile_replay) and replayed
with the networks it routes. Windows' built-in client routes by its own route list instead
(docs/clients.md, "Split tunnels"): its generated script is replayed, not its defaults.

What was measured goes to the compatibility table's results (rows ``split-*``), and the last
test fails when the table in docs/clients.md says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ikev2_vpn_helper.profiles import fetch_profiles
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.vpnclient import Target, VpnClient
from ikev2_vpn_lab import matrix
from ikev2_vpn_lab.lab import Lab
from ikev2_vpn_lab.matrix import Outcome
from ikev2_vpn_lab.platforms import (
    GENERATED_PROFILES,
    SPLIT_PREFIX,
    GeneratedProfile,
    Platform,
    by_key,
    split_platforms,
)
from ikev2_vpn_lab.profile_replay import parse_profile

HOST = "vpn.example.test"
DNS = "198.51.100.53"  # documentation address: pushed and tunnelled, never queried
USER, PASSWORD = "split", "Split-pw-1"
TIMEOUT_S = 15
# Profiles that carry the split networks themselves; the others leave them to the server.
ROUTING_PROFILES = {".sswan", ".ps1", ".swanctl.conf", ".nmconnection"}


@dataclass
class Site:
    """A server with a split tunnel, and the client and targets reused for every attempt."""

    server: Server
    client: VpnClient
    inside: Target  # on the egress network, inside VPN_SPLIT_NETS
    outside: Target  # on the wan network, next to the client, outside VPN_SPLIT_NETS
    egress_address: str  # the source address the inside target sees for tunnelled traffic
    split: set[str]  # what the server tunnels: the egress network and the DNS server


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    client_error: str | None
    server_log: str
    inside_source: str | None  # the address the inside target saw
    outside_source: str | None


@pytest.fixture(scope="module")
def outside(lab: Lab) -> Target:
    """A target on the wan network: a client reaches it without the tunnel."""
    return Target.start(
        lab.engine,
        image=lab.image,
        network=lab.topology.wan,
        name=lab.name("target-outside"),
        run_id=lab.run_id,
    )


def start_site(lab: Lab, outside: Target, proposal_set: str, split: bool = True) -> Site:
    egress = str(lab.topology.egress_subnet)
    env = {"VPN_HOST": HOST, "VPN_DNS": DNS, "VPN_PROPOSALS": proposal_set}
    if split:
        env["VPN_SPLIT_NETS"] = egress
    role = f"split-{proposal_set}" if split else "full"
    server = lab.start_server(
        env,
        name=lab.name(role),
        volume=lab.name(f"{role}-data"),
        secret_files={"VPN_USERS_FILE": f"{USER}:{PASSWORD}\n".encode()},
    )
    return Site(
        server,
        lab.start_client(server),
        lab.target(server),
        outside,
        server.egress().address,
        {egress, f"{DNS}/32"},
    )


@pytest.fixture(scope="module")
def site(lab: Lab, outside: Target) -> Iterator[Callable[[str], Site]]:
    """The split-tunnel site for a proposal set, started on first use."""
    sites: dict[str, Site] = {}

    def get(proposal_set: str) -> Site:
        if proposal_set not in sites:
            sites[proposal_set] = start_site(lab, outside, proposal_set)
        return sites[proposal_set]

    yield get


@pytest.fixture(scope="module")
def measured() -> Iterator[matrix.Results]:
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
    remote_ts: tuple[str, ...] = (),
) -> Attempt:
    """Connect, reach both targets, disconnect; judge what happened."""
    before = len(site.server.container.logs())
    result = site.client.connect(
        user,
        PASSWORD,
        ike_proposals=ike,
        esp_proposals=esp,
        server_id=server_id,
        timeout_s=TIMEOUT_S,
        remote_ts=remote_ts,
    )
    inside = outside = None
    if result.connected:
        inside = site.client.send_traffic(site.inside, count=1).tcp_source
        outside = site.client.send_traffic(site.outside, count=1).tcp_source
        site.client.disconnect()
    server_log = site.server.container.logs()[before:].decode(errors="replace")
    outcome = matrix.judge_split(
        result.connected,
        inside == site.egress_address,
        outside == site.client.address,
        server_log,
    )
    return Attempt(outcome, result.error, server_log, inside, outside)


def expect_split(attempt: Attempt) -> None:
    assert attempt.outcome is Outcome.SPLIT, (
        attempt.outcome,
        attempt.inside_source,
        attempt.outside_source,
        attempt.client_error,
        attempt.server_log,
    )


def test_the_server_narrows_a_full_tunnel_request_to_the_split_networks_and_dns(
    site: Callable[[str], Site],
) -> None:
    """A client asking for everything (0.0.0.0/0) gets a CHILD_SA for exactly the split
    network and the DNS server, which it routes through the tunnel."""
    here = site("compatible")
    connected = here.client.connect(USER, PASSWORD, timeout_s=TIMEOUT_S)
    assert connected.connected, connected.error
    try:
        listed = here.client.container.exec_run(["swanctl", "--list-sas", "--raw"])
        found = re.search(r"remote-ts=\[([^\]]*)\]", listed.output.decode())
        assert found, listed.output
        assert set(found.group(1).split()) == here.split
        assert connected.dns == [DNS]
    finally:
        here.client.disconnect()


def test_the_helpers_check_passes_against_a_split_server(
    lab: Lab, site: Callable[[str], Site]
) -> None:
    """`ikev2-vpn-helper check` sends its traffic to a target on the server's egress network,
    here inside the split: every finding holds."""
    report = lab.check(site("compatible").server, USER, PASSWORD)
    assert all(finding.ok for finding in report.findings), report.findings


@pytest.mark.parametrize("proposal_set", matrix.PROPOSAL_SETS)
@pytest.mark.parametrize("platform", split_platforms(), ids=[p.key for p in split_platforms()])
def test_platform_defaults_split(
    site: Callable[[str], Site],
    measured: matrix.Results,
    platform: Platform,
    proposal_set: str,
) -> None:
    """A device set up by hand, offering its platform's proposals (docs/clients.md) and
    asking to tunnel everything: the server's split decides what it routes."""
    result = attempt(site(proposal_set), ike=platform.ike_proposals, esp=platform.esp_proposals)
    measured.setdefault(SPLIT_PREFIX + platform.key, {})[proposal_set] = result.outcome.value
    expect_split(result)


@pytest.fixture(scope="module")
def profile_files(
    site: Callable[[str], Site], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], list[Path]]:
    fetched: dict[str, list[Path]] = {}

    def get(proposal_set: str) -> list[Path]:
        if proposal_set not in fetched:
            out = tmp_path_factory.mktemp(f"split-profiles-{proposal_set}")
            fetched[proposal_set] = fetch_profiles(site(proposal_set).server.container, USER, out)
        return fetched[proposal_set]

    return get


@pytest.mark.parametrize("proposal_set", matrix.PROPOSAL_SETS)
@pytest.mark.parametrize("profile", GENERATED_PROFILES, ids=[p.key for p in GENERATED_PROFILES])
def test_generated_profile_split(
    site: Callable[[str], Site],
    profile_files: Callable[[str], list[Path]],
    measured: matrix.Results,
    profile: GeneratedProfile,
    proposal_set: str,
) -> None:
    """A device set up from the profile routes exactly what the server tunnels: profiles
    with routes list the split network and the DNS server, the Apple profile leaves them to
    the server's traffic selector."""
    here = site(proposal_set)
    files = [p for p in profile_files(proposal_set) if p.name.endswith(profile.file_suffix)]
    assert len(files) == 1, [p.name for p in profile_files(proposal_set)]
    replayed = parse_profile(files[0].name, files[0].read_bytes())
    if profile.file_suffix in ROUTING_PROFILES:
        assert set(replayed.remote_ts) == here.split
    else:
        assert replayed.remote_ts == ()

    result = attempt(
        here,
        ike=replayed.ike_proposals,
        esp=replayed.esp_proposals,
        user=replayed.user or USER,
        server_id=replayed.remote_id,
        remote_ts=replayed.remote_ts,
    )
    measured.setdefault(SPLIT_PREFIX + profile.key, {})[proposal_set] = result.outcome.value
    expect_split(result)


def test_a_full_tunnel_sends_the_outside_target_through_the_server_too(
    lab: Lab, outside: Target
) -> None:
    """The control: without VPN_SPLIT_NETS the same client and targets are not split, so
    the check above can tell the two apart."""
    here = start_site(lab, outside, "compatible", split=False)
    linux = by_key("linux")
    result = attempt(here, ike=linux.ike_proposals, esp=linux.esp_proposals)
    assert result.inside_source == here.egress_address, result
    assert result.outcome is Outcome.NOT_SPLIT, result
    assert result.outside_source != here.client.address


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"VPN_SPLIT_NETS": "10.20.0.1/16"},
            "VPN_SPLIT_NETS: '10.20.0.1/16' has host bits set; use 10.20.0.0/16",
        ),
        (
            {"VPN_SPLIT_NETS": "192.168.1.0/24", "VPN_CLIENT_DENY": "192.168.0.0/16"},
            "VPN_SPLIT_NETS: 192.168.1.0/24 is fenced off from VPN clients (192.168.0.0/16: "
            "VPN_CLIENT_DENY); add it to VPN_CLIENT_ALLOW or leave it out of VPN_SPLIT_NETS",
        ),
    ],
    ids=["host-bits", "fenced"],
)
def test_a_bad_split_stops_the_server_with_one_line(
    lab: Lab, env: dict[str, str], expected: str
) -> None:
    """Checked by the settings, and against the fence by the probe, before charon starts."""
    server = lab.start_server(
        {"VPN_HOST": HOST, "VPN_DNS": DNS, **env},
        name=lab.name(f"bad-split-{len(env)}"),
        volume=lab.name(f"bad-split-{len(env)}-data"),
        secret_files={"VPN_USERS_FILE": f"{USER}:{PASSWORD}\n".encode()},
        wait=False,
        restart=None,
    )
    assert server.wait_exit() == 2
    output = server.container.logs().decode(errors="replace")
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1, output
    assert expected in errors[0]
    assert "charon started" not in output
    assert PASSWORD not in output
    server.remove()


def test_readme_table_matches_what_was_measured(measured: matrix.Results) -> None:
    """Runs last in this module: the table in docs/clients.md must say what the tests above saw."""
    assert measured, "no split-tunnel test ran before this one"
    readme = (Path(__file__).parents[2] / "docs" / "clients.md").read_text(encoding="utf-8")
    problems = matrix.disagreements(readme, measured)
    assert not problems, (
        "the compatibility table in docs/clients.md disagrees with this run; update it with "
        "`python -m ikev2_vpn_lab.matrix --update-readme`:\n" + "\n".join(problems)
    )
