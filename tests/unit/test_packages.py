"""The packages point one way (server <- helper <- lab <- bench) and the image gets only
the server: an operator installing the helper never pulls in the test lab, and nothing the
tests need ships in the container."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "ikev2_vpn": ROOT / "entrypoint" / "ikev2_vpn",
    "ikev2_vpn_helper": ROOT / "helper" / "ikev2_vpn_helper",
    "ikev2_vpn_lab": ROOT / "lab" / "ikev2_vpn_lab",
    "ikev2_vpn_bench": ROOT / "bench" / "ikev2_vpn_bench",
}
# What each package may import of the others.
ALLOWED = {
    "ikev2_vpn": set(),
    "ikev2_vpn_helper": {"ikev2_vpn"},
    "ikev2_vpn_lab": {"ikev2_vpn", "ikev2_vpn_helper"},
    "ikev2_vpn_bench": {"ikev2_vpn", "ikev2_vpn_helper", "ikev2_vpn_lab"},
}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", list(PACKAGES))
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package] - {package})
        for path in PACKAGES[package].rglob("*.py")
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_image_copies_and_installs_only_the_server() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    sources = {
        source
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    }
    assert sources == {"pyproject.toml", "README.md", "entrypoint", "config"}
    assert "rm -rf /opt/ikev2-vpn/lib" not in dockerfile  # nothing installed to be deleted


def test_the_root_distribution_is_the_server_alone() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["name"] == "ikev2-vpn"
    assert project["tool"]["setuptools"]["packages"]["find"]["where"] == ["entrypoint"]
    assert list(project["project"]["scripts"]) == ["ikev2-vpn"]
    for directory, name in (("helper", "helper"), ("lab", "lab"), ("bench", "bench")):
        own = tomllib.loads((ROOT / directory / "pyproject.toml").read_text(encoding="utf-8"))
        assert own["project"]["name"] == f"ikev2-vpn-{name}"
