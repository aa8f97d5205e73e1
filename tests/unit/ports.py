"""Loopback TCP ports for tests of the container's small HTTP servers."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nobody listens on (port 80 would need root)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def refused(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a connection to ``port`` is refused (nothing listens any more)."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False
