"""Talking to charon over its VICI socket (the ``vici`` package from strongSwan)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import vici

if TYPE_CHECKING:  # the health check imports this module and must stay light
    from ..render import ViciConfig

SOCKET = Path("/var/run/charon.vici")


class ViciError(Exception):
    """charon refused a command; the message is charon's own."""


def connect(timeout: float = 3.0) -> vici.Session:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(SOCKET))
    except OSError:
        sock.close()
        raise
    return vici.Session(sock)


def wait_for_charon(alive: Callable[[], bool], timeout: float = 15.0) -> vici.Session:
    """Connect once charon's socket answers; give up if charon dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            session = connect()
            session.version()
            return session
        except OSError:
            if not alive():
                raise ViciError("charon exited during start-up (see its log above)") from None
            if time.monotonic() > deadline:
                raise ViciError(
                    f"charon's VICI socket did not answer within {timeout:.0f} s"
                ) from None
            time.sleep(0.05)


def load(session: vici.Session, config: ViciConfig) -> None:
    """Load credentials, pool and connection; the connection last, so it never runs without
    what it needs. Errors name what failed, never the secret data sent."""
    steps: list[tuple[str, Callable[[Any], Any], dict[str, Any]]] = [
        *(
            (
                "loading a CA certificate",
                session.load_cert,
                {"type": "X509", "flag": "CA", "data": pem},
            )
            for pem in config.authorities
        ),
        ("loading the private key", session.load_key, config.key),
        *(
            (f"loading secret {secret['id']}", session.load_shared, secret)
            for secret in config.shared
        ),
        ("loading the address pool", session.load_pool, config.pools),
        ("loading the connection", session.load_conn, config.connection),
    ]
    for action, command, message in steps:
        try:
            command(message)
        except vici.exception.CommandException as exc:
            raise ViciError(f"{action} failed: {exc}") from None
