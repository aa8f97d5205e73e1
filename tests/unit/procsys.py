"""A stand-in for the container's /proc/sys, read and set through ikev2_vpn.sysctl."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from pathlib import Path

import pytest

from ikev2_vpn import sysctl


def fake_proc_sys(
    monkeypatch: pytest.MonkeyPatch,
    root: Path,
    start: Mapping[str, str],
    values: Mapping[str, str],
    *,
    read_only: bool = False,
) -> Path:
    """Sysctl files under ``root`` with the ``start`` values, changed by ``values`` (keyword
    names with ``__`` for dots), used by network as /proc/sys. ``read_only`` makes every
    write fail as Docker's read-only /proc/sys does without --sysctl (root ignores chmod)."""
    current = dict(start)
    current.update({name.replace("__", "."): value for name, value in values.items()})
    for name, value in current.items():
        path = root / name.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    monkeypatch.setattr(sysctl, "PROC_SYS", root)
    if read_only:
        monkeypatch.setattr(Path, "write_text", _refuse)
    return root


def _refuse(self: Path, *args: object, **kwargs: object) -> int:
    raise OSError(errno.EROFS, "Read-only file system", str(self))
