"""The bare strongSwan server: the same image, charon started by a short shell script with
a hand-written ``swanctl.conf`` and Debian's stock ``strongswan.conf``; no entrypoint.

Its certificate comes from a CA made on the host for the run, the same kind (RSA 3072) the
entrypoint makes, so both servers do the same public-key work per connection.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ikev2_vpn.state.pki import ensure_self_signed
from ikev2_vpn_helper.server import CA_PATH

HOST = "vpn.bench.test"  # both servers' identity (VPN_HOST for ikev2-vpn)
READY_MARKER = "bare: config loaded"
START_SCRIPT = "/etc/bare/start.sh"
ENTRYPOINT = ("/bin/sh", START_SCRIPT)

# Where each hand-written file goes in the container.
_FILES = {
    "swanctl.conf": "/etc/swanctl/swanctl.conf",
    "kernel-libipsec.conf": "/etc/strongswan.d/charon/kernel-libipsec.conf",
    "charon-logging.conf": "/etc/strongswan.d/charon-logging.conf",
    "nat.nft": "/etc/bare/nat.nft",
    "start.sh": START_SCRIPT,
}
USERS_PATH = "/etc/swanctl/conf.d/users.conf"
CERT_PATH = "/etc/swanctl/x509/server.pem"
KEY_PATH = "/etc/swanctl/private/server.pem"


def config_file(name: str) -> bytes:
    return resources.files(__package__).joinpath("bare", name).read_bytes()


def users_conf(users: Sequence[str], password: str) -> str:
    """The EAP secrets of ``users``, all with ``password``, as swanctl.conf text."""
    lines = ["secrets {"]
    for index, user in enumerate(users, 1):
        lines += [
            f"    eap-{index} {{",
            f"        id = {user}",
            f"        secret = 0x{password.encode().hex()}",
            "    }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def files(users: Sequence[str], password: str) -> dict[str, bytes]:
    """Every file the bare server needs, by path: configuration, users, certificate, key and
    the CA certificate where clients of the lab look for it (``/data/ca.crt``)."""
    with tempfile.TemporaryDirectory() as scratch:
        credentials = ensure_self_signed(Path(scratch), HOST)
    if credentials.ca is None:  # self-signed mode always makes a CA
        raise RuntimeError("ensure_self_signed returned no CA")
    placed = {path: config_file(name) for name, path in _FILES.items()}
    placed[USERS_PATH] = users_conf(users, password).encode()
    placed[CERT_PATH] = credentials.leaf.public_bytes(serialization.Encoding.PEM)
    placed[KEY_PATH] = credentials.key_pem
    placed[CA_PATH] = credentials.ca.public_bytes(serialization.Encoding.PEM)
    return placed
