"""The server package is one pipeline: settings -> probe -> state -> render -> apply -> run.

Data flows forward only, so a module may import its own layer and the layers before it,
never a later one (that is how apply<->render and health<->run cycles crept in). Imports
inside functions count too: they are the same dependency, only later.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "entrypoint" / "ikev2_vpn"

# Lower number = earlier. Shared pieces that every step may use sit below the pipeline;
# the commands that run the pipeline sit above it.
LAYERS = ("base", "settings", "probe", "state", "render", "apply", "run", "top")

# Every module is listed here or under a listed package. A new module must pick its layer.
MODULE_LAYERS = {
    "ikev2_vpn": "base",  # the package's __init__
    "ikev2_vpn.defaults": "base",
    "ikev2_vpn.errors": "base",
    "ikev2_vpn.fence": "base",  # the client fence, pure: probe checks VPN_DNS, render the rules
    "ikev2_vpn.httpd": "base",  # HTTP server: ACME HTTP-01 (state), profile sharing, metrics (run)
    "ikev2_vpn.sysctl": "base",  # reading and setting sysctls: probe checks them, apply sets them
    "ikev2_vpn.settings": "settings",
    "ikev2_vpn.probe": "probe",
    "ikev2_vpn.state": "state",
    "ikev2_vpn.render": "render",
    # Pure renderers of client profiles (text and bytes from a ProfileInput).
    "ikev2_vpn.profiles": "render",
    "ikev2_vpn.apply": "apply",
    "ikev2_vpn.run": "run",
    "ikev2_vpn.start": "top",
    "ikev2_vpn.cli": "top",
    "ikev2_vpn.__main__": "top",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer of ``module``: its own entry, else its closest listed package's."""
    name = module
    while name not in MODULE_LAYERS or (name == "ikev2_vpn" != module):
        if "." not in name:
            raise KeyError(f"{module} has no layer: add it to MODULE_LAYERS in {__file__}")
        name = name.rsplit(".", 1)[0]
    return MODULE_LAYERS[name]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import of ``ikev2_vpn`` in the file, at any depth.
    ``from . import x`` counts as importing the submodule ``x`` when it is one."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("ikev2_vpn")]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(package, node.module, node.level)
            if not base.startswith("ikev2_vpn"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if _exists(candidate) else base))
    return found


def _resolve(package: str, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


def _exists(module: str) -> bool:
    relative = Path(*module.split("."))
    root = PACKAGE.parent
    return (root / relative).with_suffix(".py").is_file() or (root / relative).is_dir()


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "templates" not in p.parts)


def backward_imports(path: Path) -> list[str]:
    here = module_name(path)
    rank = LAYERS.index(layer_of(here))
    return [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} "
        f"({layer_of(here)} must not import {layer_of(target)})"
        for line, target in imported_modules(path)
        if LAYERS.index(layer_of(target)) > rank
    ]


@pytest.mark.parametrize("path", modules(), ids=module_name)
def test_no_module_imports_a_later_layer(path: Path) -> None:
    assert backward_imports(path) == []


def test_every_module_has_a_layer() -> None:
    for path in modules():
        layer_of(module_name(path))  # raises, naming the module, when it has none


def test_an_import_from_a_later_layer_is_named() -> None:
    """The check itself: a state module importing apply (as state/http01.py once imported
    apply/httpd.py) is reported with its file, line and layers."""
    source = PACKAGE / "state" / "example.py"
    tree = (
        "from __future__ import annotations\n\n\ndef f() -> None:\n    from ..apply import files\n"
    )
    assert imported_modules_of_text(source, tree) == [
        "ikev2_vpn/state/example.py:5 imports ikev2_vpn.apply.files (state must not import apply)"
    ]


def imported_modules_of_text(path: Path, text: str) -> list[str]:
    """backward_imports() for a file that does not exist on disk."""
    original = Path.read_text

    def read(self: Path, *args: object, **kwargs: object) -> str:
        return text if self == path else original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "read_text", read)
        return backward_imports(path)
