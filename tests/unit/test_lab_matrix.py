"""The README's compatibility table: judging attempts, rendering, checking, rewriting."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_lab import matrix
from ikev2_vpn_lab.matrix import Outcome
from ikev2_vpn_lab.platforms import GENERATED_PROFILES, SPLIT_PREFIX

README = Path(__file__).parents[2] / "docs" / "clients.md"  # holds the compat-matrix block


def full_results(outcome: str = "connects") -> matrix.Results:
    return {row.key: dict.fromkeys(matrix.PROPOSAL_SETS, outcome) for row in matrix.ROWS}


def readme_with(table: str) -> str:
    return f"# Title\n\nBefore.\n\n{matrix.START}\n{table}{matrix.END}\n\nAfter.\n"


@pytest.mark.parametrize(
    ("connected", "traffic_ok", "log", "outcome"),
    [
        (True, True, "", Outcome.CONNECTS),
        (True, False, "", Outcome.NO_TRAFFIC),
        (False, False, "[IKE] <1> received proposals unacceptable", Outcome.REFUSED_IKE),
        (False, False, "[IKE] <x|2> no acceptable proposal found", Outcome.REFUSED_ESP),
        (False, False, "EAP method EAP_MSCHAPV2 failed", Outcome.FAILS),
    ],
)
def test_judge(connected: bool, traffic_ok: bool, log: str, outcome: Outcome) -> None:
    assert matrix.judge(connected, traffic_ok, log) is outcome
    assert outcome.refused == (outcome in {Outcome.REFUSED_IKE, Outcome.REFUSED_ESP})


def test_table_has_a_row_per_platform_in_order() -> None:
    results = full_results()
    results["windows10"]["modern"] = Outcome.REFUSED_IKE.value
    table = matrix.render_table(results)
    lines = table.splitlines()
    assert lines[0] == "| Platform | Setting | `compatible` | `modern` |"
    assert len(lines) == 2 + len(matrix.ROWS)
    assert (
        lines[2]
        == "| Windows 10 | built-in, added in Settings | connects | refused (IKE proposals) |"
    )
    parsed = matrix.parse_table(table)
    assert list(parsed) == [(row.platform, row.setting) for row in matrix.ROWS]
    assert parsed[("Windows 10", "built-in, added in Settings")] == (
        "connects",
        "refused (IKE proposals)",
    )


def test_partial_results_render_what_was_measured() -> None:
    table = matrix.render_table({"linux": {"modern": "connects"}})
    assert table.splitlines()[2:] == [
        "| Linux | strongSwan or NetworkManager-strongswan, added by hand "
        "| not measured | connects |"
    ]
    assert "linux/compatible" in matrix.missing({"linux": {"modern": "connects"}})
    assert matrix.missing(full_results()) == []


def test_replacing_the_table_keeps_the_rest_of_the_readme() -> None:
    readme = readme_with("| old |\n")
    table = matrix.render_table(full_results())
    updated = matrix.replace_table(readme, table)
    assert updated.startswith("# Title\n\nBefore.\n\n")
    assert updated.endswith(f"{matrix.END}\n\nAfter.\n")
    assert matrix.readme_table(updated) == table
    assert matrix.replace_table(updated, table) == updated
    with pytest.raises(HelperError, match="compat-matrix"):
        matrix.readme_table("# no markers\n")


def test_disagreements_with_full_and_partial_results() -> None:
    results = full_results()
    readme = readme_with(matrix.render_table(results))
    assert matrix.disagreements(readme, results) == []
    changed = {**results, "macos": {"compatible": "connects", "modern": "fails"}}
    assert matrix.disagreements(readme, changed) == ["the table differs from the results"]
    # A partial run (pytest -k) compares only the cells it measured.
    assert matrix.disagreements(readme, {"macos": {"modern": "connects"}}) == []
    assert matrix.disagreements(readme, {"macos": {"modern": "fails"}}) == [
        "macOS 13.4 / built-in, added by hand / modern: README says 'connects', measured 'fails'"
    ]
    assert matrix.disagreements(readme_with("|a|b|\n|-|-|\n"), {"macos": {"modern": "x"}}) == [
        "macOS 13.4 / built-in, added by hand: no row in the README"
    ]


def test_the_readme_has_one_complete_row_per_platform() -> None:
    """Whatever the last run measured, the README's table lists exactly these rows."""
    written = matrix.parse_table(matrix.readme_table(README.read_text(encoding="utf-8")))
    assert list(written) == [(row.platform, row.setting) for row in matrix.ROWS]
    outcomes = {outcome.value for outcome in Outcome}
    assert all(set(cells) <= outcomes for cells in written.values())


def test_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(readme_with("| stale |\n"), encoding="utf-8")
    results = tmp_path / "results.json"
    monkeypatch.setenv(matrix.RESULTS_ENV, str(results))
    assert matrix.results_path() == results

    assert matrix.main(["--readme", str(readme), "--check"]) == 2  # no results yet
    assert "run `tests/run tests/e2e/test_compat.py` first" in capsys.readouterr().err

    matrix.save_results(results, {"linux": {"modern": "connects"}})
    assert matrix.main(["--readme", str(readme), "--update-readme"]) == 2
    assert "lack" in capsys.readouterr().err
    assert matrix.main(["--readme", str(readme), "--check"]) == 1

    matrix.save_results(results, full_results())
    assert matrix.main([]) == 0
    assert capsys.readouterr().out == matrix.render_table(full_results())
    assert matrix.main(["--readme", str(readme), "--update-readme"]) == 0
    assert matrix.main(["--readme", str(readme), "--check"]) == 0
    assert matrix.readme_table(readme.read_text()) == matrix.render_table(full_results())

    results.write_text("{not json", encoding="utf-8")
    assert matrix.main(["--results", str(results)]) == 2


@pytest.mark.parametrize(
    ("connected", "inside_ok", "outside_direct", "log", "outcome"),
    [
        (True, True, True, "", Outcome.SPLIT),
        (True, True, False, "", Outcome.NOT_SPLIT),  # the rest went through the tunnel
        (True, False, True, "", Outcome.NO_TRAFFIC),
        (False, False, False, "received proposals unacceptable", Outcome.REFUSED_IKE),
    ],
)
def test_judge_split(
    connected: bool, inside_ok: bool, outside_direct: bool, log: str, outcome: Outcome
) -> None:
    assert matrix.judge_split(connected, inside_ok, outside_direct, log) is outcome


def test_split_rows_follow_the_others_without_windows_defaults() -> None:
    """Windows' built-in client routes by its own list, not by the server's selector: only
    its generated script has a split row (docs/clients.md, Split tunnels)."""
    split = [row for row in matrix.ROWS if row.key.startswith(SPLIT_PREFIX)]
    assert [row.key for row in matrix.ROWS[-len(split) :]] == [row.key for row in split]
    keys = {row.key.removeprefix(SPLIT_PREFIX) for row in split}
    assert keys == {"ios", "macos", "android-builtin", "android-strongswan", "linux"} | {
        profile.key for profile in GENERATED_PROFILES
    }
    assert all(row.setting.endswith("; server sets `VPN_SPLIT_NETS`") for row in split)


def test_results_of_the_two_suites_are_merged(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    matrix.save_results(results, {"linux": {"modern": "connects"}})
    matrix.save_results(results, {"split-linux": {"modern": "connects, split"}})
    matrix.save_results(results, {"linux": {"compatible": "connects"}})
    assert matrix.load_results(results) == {
        "linux": {"modern": "connects", "compatible": "connects"},
        "split-linux": {"modern": "connects, split"},
    }
