"""Commands run by background threads while the supervisor reaps children (PID 1).

The supervisor reaps orphans that the kernel hands to PID 1. A command started by another
thread is also its child: reaped by the supervisor first, ``subprocess`` would lose its exit
status (it reports 0). So commands run under LOCK, and the supervisor takes LOCK before it
reaps anything that is not charon: by then the command has reaped its own process.
"""

from __future__ import annotations

import subprocess
import threading

from ..settings import child_environment

LOCK = threading.Lock()


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, check=True)``, output captured, safe from the supervisor."""
    with LOCK:
        return subprocess.run(
            argv, capture_output=True, text=True, check=True, env=child_environment()
        )
