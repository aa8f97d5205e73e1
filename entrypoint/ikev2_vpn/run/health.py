"""Container health check: is charon answering with the server's configuration loaded, and
is the certificate it serves still good?

Runs every few seconds (HEALTHCHECK), so it imports only what it needs (the certificate's
dates come from a small JSON file written next to the configuration, not from parsing it).
Exit status 0 = healthy, 1 = unhealthy, with one line saying why.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from vici.exception import CommandException, SessionException

from ..defaults import (
    CERT_WARN_FRACTION,
    CERT_WARN_MAX_S,
    CONNECTION_NAME,
    IKE_PORT,
    NATT_PORT,
    POOL_V4_NAME,
)
from .vici_session import connect

# Same path as apply.files.CERTIFICATE_STATUS (not imported: that pulls in cryptography).
CERTIFICATE_STATUS = Path("/run/ikev2-vpn/certificate.json")


def served_certificate_dates(status_file: Path | None = None) -> tuple[float, float] | None:
    """(not_before, not_after) of the certificate charon serves, as Unix times; None while
    nothing is written yet (or the file is damaged)."""
    status_file = CERTIFICATE_STATUS if status_file is None else status_file
    try:
        status = json.loads(status_file.read_text())
        return float(status["not_before"]), float(status["not_after"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def certificate_problem(status_file: Path | None = None, now: float | None = None) -> str:
    """Why the served certificate is a problem (expired, or close to it), or ''."""
    dates = served_certificate_dates(status_file)
    if dates is None:
        return "the server certificate's status is unknown (not loaded yet)"
    not_before, not_after = dates
    now = time.time() if now is None else now
    left = not_after - now
    if left <= 0:
        return f"the server certificate expired {_duration(abs(left))} ago; clients refuse it"
    if left < min((not_after - not_before) * CERT_WARN_FRACTION, CERT_WARN_MAX_S):
        return f"the server certificate expires in {_duration(left)} and has not been renewed"
    return ""


# The kernel's UDP socket tables of this network namespace.
UDP_TABLES = (Path("/proc/net/udp"), Path("/proc/net/udp6"))


def unbound_ike_ports(tables: Sequence[Path] | None = None) -> list[int]:
    """The IKE ports no socket is bound to. charon starts, loads its configuration and
    answers VICI even when it could not bind them (it logs nothing at level 1), as happens
    without CAP_NET_BIND_SERVICE where ports below 1024 are privileged (Kubernetes)."""
    bound = set()
    for table in UDP_TABLES if tables is None else tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1 and ":" in fields[1]:
                bound.add(int(fields[1].rsplit(":", 1)[1], 16))  # local_address: "ADDR:PORT"
    return [port for port in (IKE_PORT, NATT_PORT) if port not in bound]


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} s"


def check(certificate: bool = True) -> str | None:
    """None when healthy, else the reason. ``certificate=False`` leaves the certificate out."""
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
    if unbound := unbound_ike_ports():
        ports = " and ".join(str(port) for port in unbound)
        return (
            f"charon does not listen on UDP {ports}; ports below 1024 need CAP_NET_BIND_SERVICE "
            "where they are privileged (add it to the container's capabilities)"
        )
    return (certificate_problem() if certificate else "") or None


def main(argv: Sequence[str] | None = None) -> int:
    """``--alive``: only whether charon serves the configuration. For restart decisions
    (Kubernetes' liveness probe): a restart cannot fix a certificate the CA will not renew,
    and with ACME_FALLBACK=none it would stop a server whose certificate is still valid."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in ([], ["--alive"]):
        print("usage: python3 -m ikev2_vpn.run.health [--alive]")
        return 2
    alive_only = args == ["--alive"]
    problem = check(certificate=not alive_only)
    if problem is None:
        print(
            "alive: charon answers and the VPN configuration is loaded"
            if alive_only
            else "healthy: charon answers, the VPN configuration is loaded, "
            "the certificate is valid"
        )
        return 0
    print(f"unhealthy: {problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
