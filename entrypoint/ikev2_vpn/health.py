"""Container health check: is charon answering with the server's configuration loaded?

Runs every few seconds (HEALTHCHECK), so it imports only what it needs.
Exit status 0 = healthy, 1 = unhealthy, with one line saying why.
"""

from __future__ import annotations

import sys

from vici.exception import CommandException, SessionException

from .defaults import CONNECTION_NAME, POOL_V4_NAME
from .run.vici_session import connect


def check() -> str | None:
    """None when healthy, else the reason."""
    try:
        session = connect(timeout=3.0)
        session.version()
        connections = [name for conn in session.list_conns() for name in conn]
        pools = session.get_pools()
    except OSError as exc:
        return f"charon does not answer on its VICI socket ({exc})"
    except (SessionException, CommandException) as exc:  # a garbled or refused answer
        return f"charon answered its VICI socket with an error ({exc})"
    if CONNECTION_NAME not in connections:
        return "charon runs but the VPN configuration is not loaded yet"
    if POOL_V4_NAME not in pools:
        return "charon runs but the address pool is not loaded"
    return None


def main() -> int:
    problem = check()
    if problem is None:
        print("healthy: charon answers and the VPN configuration is loaded")
        return 0
    print(f"unhealthy: {problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
