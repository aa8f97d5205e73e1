"""Crash-safe file writes: a reader sees the old content or the new, never half of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with permissions ``mode``.

    The temporary file is created with ``mode`` already applied, flushed to disk, renamed
    over the target, and the directory is synced so the rename survives a power cut.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_dir(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` (and parents) if missing and set its permissions."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporaries left by a write that was killed before its rename."""
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
