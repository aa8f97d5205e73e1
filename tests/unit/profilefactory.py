"""Profile inputs for the client profile tests, and a check that a client's proposal is one
the server accepts.

:func:`accepted` compares algorithm by algorithm, the way strongSwan as responder does: a
client proposal is accepted when one server proposal contains each of its algorithms.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from functools import cache
from typing import Any

import certfactory
from cryptography import x509
from pydantic import SecretStr

from ikev2_vpn.profiles import ProfileInput

HOST = "vpn.example.com"
USER = "alice"
PASSWORD = 'pä$$ <w&rd> "quoted"'  # XML and JSON metacharacters, and not ASCII
CA_NAME = "ikev2-vpn CA 1a2b3c4d"


@cache
def ca() -> x509.Certificate:
    """The server's own CA, as VPN_CERT=self-signed makes it (one per test run: keys are slow)."""
    return certfactory.make_ca(CA_NAME, key="p256").cert


def make_profile(*, self_signed: bool = True, **changes: Any) -> ProfileInput:
    base = ProfileInput(
        host=HOST,
        user=USER,
        password=SecretStr(PASSWORD),
        ca=ca() if self_signed else None,
        esp_gcm=True,
        dns=(ipaddress.IPv4Address("192.0.2.53"),),
        pool_v4=ipaddress.IPv4Network("10.10.10.0/24"),
    )
    return dataclasses.replace(base, **changes)


_ENCRYPTION = ("aes", "3des", "des", "chacha20poly1305", "camellia", "null")
_INTEGRITY = ("sha", "md5", "aesxcbc", "aescmac")  # checked before encryption: "aes..."
_KEY_EXCHANGE = ("modp", "ecp", "curve", "x25519", "x448", "none", "mlkem")


def algorithms(proposal: str, *, ike: bool) -> dict[str, set[str]]:
    """A strongSwan proposal's algorithms by kind (encryption, integrity, prf, ke)."""
    kinds: dict[str, set[str]] = {
        "encryption": set(),
        "integrity": set(),
        "prf": set(),
        "ke": set(),
    }
    for token in proposal.split("-"):
        if token.startswith("prf"):
            kinds["prf"].add(token.removeprefix("prf"))
        elif token.startswith(_INTEGRITY):
            kinds["integrity"].add(token)
        elif token.startswith(_ENCRYPTION):
            kinds["encryption"].add(token)
        elif token.startswith(_KEY_EXCHANGE):
            kinds["ke"].add(token)
        else:
            raise ValueError(f"unknown algorithm {token!r} in {proposal!r}")
    if ike and not kinds["prf"]:
        # Without explicit PRFs, strongSwan uses the PRFs matching the integrity algorithms.
        kinds["prf"] = set(kinds["integrity"])
    return kinds


def accepted(client: str, server: Iterable[str], *, ike: bool) -> bool:
    """Whether one of the ``server`` proposals contains every algorithm of ``client``."""
    wanted = algorithms(client, ike=ike)
    aead = any("gcm" in name or "poly1305" in name for name in wanted["encryption"])
    if aead and wanted["integrity"]:
        return False  # strongSwan refuses to mix AEAD and integrity algorithms
    return any(
        all(wanted[kind] <= offered[kind] for kind in wanted)
        for offered in (algorithms(proposal, ike=ike) for proposal in server)
    )
