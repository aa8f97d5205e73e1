"""Writing the rendered configuration where charon and swanctl look for it."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from ..render import KEY_FILE, LEAF_FILE, SWANCTL_DIR
from ..state.credentials import ServerCredentials
from ..state.files import atomic_write

STRONGSWAN_CONF = Path("/etc/strongswan.conf")


def write_configuration(
    strongswan_conf: str,
    swanctl_conf: str,
    credentials: ServerCredentials,
    root: Path = Path("/"),
) -> None:
    """strongswan.conf for charon; swanctl.conf and its files for people (and swanctl)."""
    swanctl = root / SWANCTL_DIR.relative_to("/")
    for folder in ("x509", "x509ca", "private"):
        (swanctl / folder).mkdir(parents=True, exist_ok=True)
        for old in (swanctl / folder).iterdir():
            old.unlink()
    atomic_write(root / STRONGSWAN_CONF.relative_to("/"), strongswan_conf.encode(), mode=0o644)
    atomic_write(swanctl / "swanctl.conf", swanctl_conf.encode(), mode=0o600)
    atomic_write(swanctl / "x509" / LEAF_FILE, credentials.leaf_pem(), mode=0o644)
    for number, cert in enumerate(
        (*credentials.intermediates, *([credentials.ca] if credentials.ca else [])), start=1
    ):
        atomic_write(
            swanctl / "x509ca" / f"ca-{number}.crt", cert.public_bytes(Encoding.PEM), mode=0o644
        )
    # The key stays where it is (in /data or the operator's mount); swanctl follows the link.
    (swanctl / "private" / KEY_FILE).symlink_to(credentials.key_path)
