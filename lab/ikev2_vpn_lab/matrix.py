"""The compatibility table in docs/clients.md, generated from what the end-to-end suite measured.

tests/e2e/test_compat.py connects a client replaying each platform (and each generated
profile) to a server under each ``VPN_PROPOSALS`` set, and tests/e2e/test_split_tunnel.py
does the same against a server with a split tunnel (rows ``split-*``); each writes what it
saw to a results file
(``$VPN_COMPAT_RESULTS``, else ``.pytest_cache/ikev2-vpn-compat.json``), and fails when the
table in docs/clients.md says something else. This module turns results into the table::

    python -m ikev2_vpn_lab.matrix                  # print the table
    python -m ikev2_vpn_lab.matrix --check          # exit 1 if the README differs
    python -m ikev2_vpn_lab.matrix --update-readme  # rewrite the README's table

The table sits in docs/clients.md between ``<!-- compat-matrix:start -->`` and
``<!-- compat-matrix:end -->``; nothing outside the markers is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from ikev2_vpn_helper.errors import HelperError

from .platforms import GENERATED_PROFILES, PLATFORMS, SPLIT_PREFIX, SPLIT_SETTING, split_platforms

START: Final = "<!-- compat-matrix:start -->"
END: Final = "<!-- compat-matrix:end -->"
RESULTS_ENV: Final = "VPN_COMPAT_RESULTS"
DEFAULT_RESULTS: Final = Path(".pytest_cache") / "ikev2-vpn-compat.json"
PROPOSAL_SETS: Final = ("compatible", "modern")

# What the server logs when it refuses a client's proposals (strongSwan's charon).
IKE_REFUSED_LOG: Final = "received proposals unacceptable"
CHILD_REFUSED_LOG: Final = "no acceptable proposal found"


class Outcome(StrEnum):
    """One cell of the table: what a user of that platform sees."""

    CONNECTS = "connects"
    REFUSED_IKE = "refused (IKE proposals)"
    REFUSED_ESP = "refused (ESP proposals)"
    NO_TRAFFIC = "connects, no traffic"  # a bug: the tunnel is up but carries nothing
    # A split tunnel (VPN_SPLIT_NETS): the split networks through the tunnel, the rest direct.
    SPLIT = "connects, split"
    NOT_SPLIT = "connects, not split"  # a bug: the rest went through the tunnel, or nowhere
    FAILS = "fails"  # a bug: refused for another reason

    @property
    def refused(self) -> bool:
        return self in {Outcome.REFUSED_IKE, Outcome.REFUSED_ESP}


def judge(connected: bool, traffic_ok: bool, server_log: str) -> Outcome:
    """The outcome of one attempt, from the client's view and the server's log of it."""
    if connected:
        return Outcome.CONNECTS if traffic_ok else Outcome.NO_TRAFFIC
    if IKE_REFUSED_LOG in server_log:
        return Outcome.REFUSED_IKE
    if CHILD_REFUSED_LOG in server_log:
        return Outcome.REFUSED_ESP
    return Outcome.FAILS


def judge_split(connected: bool, inside_ok: bool, outside_direct: bool, server_log: str) -> Outcome:
    """The outcome of one attempt against a split tunnel: ``inside_ok`` when a target in the
    split networks saw the server's address, ``outside_direct`` when one outside them saw
    the client's own."""
    if connected and inside_ok:
        return Outcome.SPLIT if outside_direct else Outcome.NOT_SPLIT
    return judge(connected, False, server_log)


@dataclass(frozen=True)
class Row:
    key: str
    platform: str
    setting: str


ROWS: Final[tuple[Row, ...]] = (
    *(Row(entry.key, entry.platform, entry.setting) for entry in PLATFORMS),
    *(Row(entry.key, entry.platform, entry.setting) for entry in GENERATED_PROFILES),
    *(
        Row(SPLIT_PREFIX + entry.key, entry.platform, entry.setting + SPLIT_SETTING)
        for entry in split_platforms()
    ),
    *(
        Row(SPLIT_PREFIX + entry.key, entry.platform, entry.setting + SPLIT_SETTING)
        for entry in GENERATED_PROFILES
    ),
)

# row key -> proposal set -> outcome
Results = dict[str, dict[str, str]]


def missing(results: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Cells the results lack, as ``key/set``."""
    return [
        f"{row.key}/{choice}"
        for row in ROWS
        for choice in PROPOSAL_SETS
        if choice not in results.get(row.key, {})
    ]


def render_table(results: Mapping[str, Mapping[str, str]]) -> str:
    """The Markdown table of every row with results, in the order of :data:`ROWS`."""
    lines = [
        "| Platform | Setting | " + " | ".join(f"`{c}`" for c in PROPOSAL_SETS) + " |",
        "|---|---|" + "---|" * len(PROPOSAL_SETS),
    ]
    for row in ROWS:
        if row.key in results:
            cells = [results[row.key].get(choice, "not measured") for choice in PROPOSAL_SETS]
            lines.append(f"| {row.platform} | {row.setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _block(readme: str) -> tuple[int, int]:
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise HelperError(f"the README has no {START} ... {END} section")
    return start + len(START), end


def readme_table(readme: str) -> str:
    """The text between the README's markers, without surrounding blank lines."""
    start, end = _block(readme)
    return readme[start:end].strip("\n") + "\n"


def replace_table(readme: str, table: str) -> str:
    start, end = _block(readme)
    return readme[:start] + "\n" + table + readme[end:]


def parse_table(table: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """(platform, setting) -> cells, from a table :func:`render_table` wrote."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 + len(PROPOSAL_SETS):
            rows[(cells[0], cells[1])] = tuple(cells[2:])
    return rows


def disagreements(readme: str, results: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Where the README's table says something other than the results; with results for
    every cell, any difference at all (extra rows, order, wording) counts."""
    table = readme_table(readme)
    if not missing(results):
        return [] if table == render_table(results) else ["the table differs from the results"]
    written = parse_table(table)
    found = []
    for row in ROWS:
        for index, choice in enumerate(PROPOSAL_SETS):
            measured = results.get(row.key, {}).get(choice)
            if measured is None:
                continue
            cells = written.get((row.platform, row.setting))
            if cells is None:
                found.append(f"{row.platform} / {row.setting}: no row in the README")
                break
            if cells[index] != measured:
                found.append(
                    f"{row.platform} / {row.setting} / {choice}: README says {cells[index]!r}, "
                    f"measured {measured!r}"
                )
    return found


def results_path() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


def save_results(path: Path, results: Mapping[str, Mapping[str, str]]) -> None:
    """Add ``results`` to the file: test_compat.py and test_split_tunnel.py each write
    their own rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        merged = load_results(path)
        for key, row in results.items():
            merged.setdefault(key, {}).update(row)
        results = merged
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_results(path: Path) -> Results:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HelperError(
            f"no results in {path}; run `tests/run tests/e2e/test_compat.py` first"
        ) from None
    except ValueError as error:
        raise HelperError(f"{path} is not a results file: {error}") from None
    return {str(key): {str(k): str(v) for k, v in row.items()} for key, row in loaded.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ikev2_vpn_lab.matrix",
        description="Print the compatibility table measured by tests/e2e/test_compat.py, "
        "or check or rewrite the README's copy.",
    )
    parser.add_argument(
        "--results", type=Path, help=f"default: ${RESULTS_ENV}, else {DEFAULT_RESULTS}"
    )
    parser.add_argument("--readme", type=Path, default=Path("docs/clients.md"))
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1 if the README differs")
    action.add_argument("--update-readme", action="store_true", help="rewrite the README table")
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results or results_path())
        if not args.check and not args.update_readme:
            print(render_table(results), end="")
            return 0
        readme = args.readme.read_text(encoding="utf-8")
        if args.check:
            problems = disagreements(readme, results)
            for problem in problems:
                print(f"{args.readme}: {problem}", file=sys.stderr)
            return 1 if problems else 0
        gaps = missing(results)
        if gaps:
            raise HelperError(
                f"the results lack {len(gaps)} cells ({', '.join(gaps[:3])}...); "
                "run all of tests/e2e/test_compat.py before updating the README"
            )
        args.readme.write_text(replace_table(readme, render_table(results)), encoding="utf-8")
        print(f"updated the compatibility table in {args.readme}")
        return 0
    except HelperError as error:
        print(f"matrix: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
