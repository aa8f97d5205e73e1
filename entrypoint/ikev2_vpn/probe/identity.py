"""The name or address clients dial: VPN_HOST, else detected, else the container's own."""

from __future__ import annotations

import ipaddress
import logging
import urllib.request
from dataclasses import dataclass

from .. import defaults
from ..settings import Settings
from .network import Egress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerIdentity:
    host: str  # what clients dial; also the IKE identity and the certificate's SAN
    reason: str

    @property
    def is_address(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def resolve_identity(settings: Settings, egress: Egress) -> ServerIdentity:
    if settings.host:
        return ServerIdentity(settings.host, "from VPN_HOST")
    if settings.host_detect:
        for url in defaults.HOST_DETECT_URLS:
            address = _ask(url)
            if address:
                return ServerIdentity(address, f"VPN_HOST unset; public address reported by {url}")
        why = "public address detection failed"
    else:
        why = "VPN_HOST_DETECT=off"
    return ServerIdentity(
        str(egress.address),
        f"VPN_HOST unset and {why}; using the container's address on {egress.interface} "
        "(set VPN_HOST to the address or name clients dial)",
    )


def _ask(url: str) -> str | None:
    """One bounded request; any failure or implausible answer counts as no answer."""
    try:
        with urllib.request.urlopen(url, timeout=defaults.HOST_DETECT_TIMEOUT_S) as response:  # noqa: S310 (fixed https URLs)
            text = response.read(64).decode("ascii").strip()
        address = ipaddress.ip_address(text)
    except (OSError, ValueError) as exc:
        log.info("public address detection via %s failed: %s", url, exc)
        return None
    return str(address) if address.is_global else None
