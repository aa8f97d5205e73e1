"""Reading and setting kernel parameters under /proc/sys (read-only in a container started
without --sysctl): the probe checks the IPv6 ones, apply sets forwarding."""

from __future__ import annotations

import errno
from pathlib import Path

PROC_SYS = Path("/proc/sys")


def set_sysctl(name: str, wanted: str) -> bool:
    """Whether ``name`` is ``wanted`` (writing it when /proc/sys allows)."""
    path = PROC_SYS / name.replace(".", "/")
    try:
        if path.read_text().strip() == wanted:
            return True
        path.write_text(wanted + "\n")
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT):
            raise
        return False
    return True
