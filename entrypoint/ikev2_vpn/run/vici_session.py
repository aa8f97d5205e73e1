"""Talking to charon over its VICI socket (the ``vici`` package from strongSwan)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import vici

if TYPE_CHECKING:  # the health check imports this module and must stay light
    from ..render import ViciConfig

log = logging.getLogger(__name__)

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


def text(value: object) -> str:
    """A string of a VICI answer or event (they arrive as bytes); '' for a missing one."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


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


def load(session: vici.Session, config: ViciConfig) -> str:
    """Load credentials, pool and connection; the connection last, so it never runs without
    what it needs. Errors name what failed, never the secret data sent.

    Returns the identifier charon gave the private key (to unload it once replaced)."""
    key_id = _load_key(session, config)
    steps: list[tuple[str, Callable[[Any], Any], dict[str, Any]]] = [
        *(
            (
                "loading a CA certificate",
                session.load_cert,
                {"type": "X509", "flag": "CA", "data": pem},
            )
            for pem in config.authorities
        ),
        *(
            (f"loading secret {secret['id']}", session.load_shared, secret)
            for secret in config.shared
        ),
        ("loading the address pools", session.load_pool, config.pools),
        ("loading the connection", session.load_conn, config.connection),
    ]
    if config.static_connections:
        steps.append(
            ("loading the static IP connections", session.load_conn, config.static_connections)
        )
    _run(steps)
    return key_id


def replace_certificate(session: vici.Session, config: ViciConfig, old_key_id: str) -> str:
    """Swap in a new server certificate and key while clients stay connected.

    The chain and the key are loaded first, then the connection is replaced: IKE_SAs that
    are up keep the configuration they were authenticated with, new ones get the new
    certificate. The old key is unloaded last. Returns the new key's identifier.
    """
    authorities = [{"type": "X509", "flag": "CA", "data": pem} for pem in config.authorities]
    _run([("loading a CA certificate", session.load_cert, cert) for cert in authorities])
    key_id = _load_key(session, config)
    _run([("replacing the connection", session.load_conn, config.connection)])
    if old_key_id and old_key_id != key_id:
        try:
            session.unload_key({"id": old_key_id})
        except vici.exception.CommandException as exc:
            # Harmless: the new certificate is in use; the old key just stays in memory.
            log.warning("could not unload the replaced private key from charon: %s", exc)
    return key_id


def _load_key(session: vici.Session, config: ViciConfig) -> str:
    try:
        answer = session.load_key(config.key)
    except vici.exception.CommandException as exc:
        raise ViciError(f"loading the private key failed: {exc}") from None
    key_id = answer.get("id", b"") if isinstance(answer, dict) else b""
    return key_id.decode() if isinstance(key_id, bytes) else str(key_id)


def _run(steps: list[tuple[str, Callable[[Any], Any], dict[str, Any]]]) -> None:
    for action, command, message in steps:
        try:
            command(message)
        except vici.exception.CommandException as exc:
            raise ViciError(f"{action} failed: {exc}") from None
