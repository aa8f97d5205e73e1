"""Reading swanctl.conf and strongswan.conf back: a small parser of their syntax, the oracle the
tests compare rendered files and VICI messages with."""

from __future__ import annotations

import re
from typing import Any

from ikev2_vpn import render

Section = dict[str, Any]
# Section names: what strongSwan accepts and can look up ("." separates lookup paths).
# Values: anything but what would end the value or open/close a section ("#" starts a comment).
_SYNTAX = re.compile(
    r"(?P<open>[A-Za-z0-9_-]+) \{|(?P<close>\})|(?P<key>[a-z_]+) = (?P<value>[^{}#\"\n]*)"
)


_INCLUDE = re.compile(r"include (?P<file>\S+)")


def parse_conf(text: str, includes: dict[str, str] | None = None) -> Section:
    """strongswan.conf/swanctl.conf as nested dicts; any line outside the grammar fails.

    ``include FILE`` lines are replaced by the text ``includes[FILE]``, whose sections merge
    with the including file's, as strongSwan does."""
    root: Section = {}
    stack = [root]
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        included = _INCLUDE.fullmatch(line)
        if included and includes is not None:
            merge(stack[-1], parse_conf(includes[included["file"]]))
            continue
        match = _SYNTAX.fullmatch(line)
        assert match, f"line {number} is not plain key = value or section syntax: {raw!r}"
        if match["open"]:
            assert match["open"] not in stack[-1], f"line {number}: section repeated"
            section: Section = {}
            stack[-1][match["open"]] = section
            stack.append(section)
        elif match["close"]:
            stack.pop()
            assert stack, f"line {number}: unbalanced closing brace"
        else:
            assert match["key"] not in stack[-1], f"line {number}: key repeated"
            stack[-1][match["key"]] = match["value"]
    assert len(stack) == 1, "unclosed section"
    return root


def merge(into: Section, extra: Section) -> None:
    for key, value in extra.items():
        if key in into:
            assert isinstance(value, dict) and isinstance(into[key], dict), f"{key} repeated"
            merge(into[key], value)
        else:
            into[key] = value


def swanctl(plan: render.Plan) -> Section:
    """What swanctl reads: swanctl.conf with the users' file it includes."""
    return parse_conf(
        render.swanctl_conf(plan), {render.USERS_FILE: render.users_conf(plan.users())}
    )


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def as_conf_value(value: str | list[str]) -> str:
    return ", ".join(value) if isinstance(value, list) else value
