"""The documentation: a short README, links that lead somewhere, every setting listed, and
facts cited from docs/ rather than from notes outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ikev2_vpn.settings import known_variables

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 300

_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_TABLE_NAMES = re.compile(r"^\| ((?:`[A-Z0-9_]+`(?:, )?)+) \|", re.MULTILINE)
# Built from parts so that this file does not cite what it forbids.
_OUTSIDE_NOTES = re.compile("shared" + "/|" + "lab" + "-notes")


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> str:
    """The text without fenced code blocks, where brackets are code, not links."""
    return _FENCE.sub("", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_prose(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file or heading does not exist."""
    broken = []
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.name}")
    return broken


def test_the_readme_fits_on_a_few_screens() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("page", _pages(), ids=lambda page: page.name)
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A part\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md#a-part) [ok](#page) [web](https://example.com/x)\n"
        "[gone](missing.md) [no anchor](other.md#nothing)\n"
        "```\n[code](not-a-link.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "other.md#nothing: no heading with that anchor in other.md",
    ]


def test_anchors_follow_githubs_rules() -> None:
    assert slug("Let's Encrypt (`VPN_CERT=letsencrypt`)") == "lets-encrypt-vpn_certletsencrypt"
    assert slug("What is in `/data`") == "what-is-in-data"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for target in _LINK.findall(_prose(README.read_text(encoding="utf-8")))
    }
    assert [page.name for page in DOCS.glob("*.md") if page.resolve() not in linked] == []


@pytest.mark.parametrize("page", [README, DOCS / "settings.md"], ids=lambda page: page.name)
def test_every_setting_has_a_row_in_the_settings_table(page: Path) -> None:
    listed: set[str] = set()
    for names in _TABLE_NAMES.findall(page.read_text(encoding="utf-8")):
        listed.update(name.strip("`") for name in names.split(", "))
    assert sorted(known_variables() - listed) == []


def _project_files() -> list[Path]:
    """Tracked files and new ones not ignored: what a commit would carry."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def test_no_file_cites_notes_outside_the_repository() -> None:
    """Facts the code relies on are cited from docs/ (for example "docs/clients.md, What
    each native client does"), never from notes that are not in this repository."""
    citing = [
        str(path.relative_to(ROOT))
        for path in _project_files()
        if _OUTSIDE_NOTES.search(path.read_bytes().decode("utf-8", errors="replace"))
    ]
    assert citing == []
