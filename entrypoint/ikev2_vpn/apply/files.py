"""Writing the rendered configuration where charon and swanctl look for it."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from .. import defaults
from ..render import KEY_FILE, LEAF_FILE, SWANCTL_DIR, USERS_FILE
from ..state.credentials import ServerCredentials
from ..state.files import atomic_write

STRONGSWAN_CONF = Path("/etc/strongswan.conf")
# What the health check reads about the certificate charon serves (no crypto import there).
CERTIFICATE_STATUS = Path("/run/ikev2-vpn/certificate.json")


def write_configuration(
    strongswan_conf: str,
    swanctl_conf: str,
    credentials: ServerCredentials,
    root: Path = Path("/"),
) -> None:
    """strongswan.conf for charon; swanctl.conf and its files for people (and swanctl)."""
    atomic_write(root / STRONGSWAN_CONF.relative_to("/"), strongswan_conf.encode(), mode=0o644)
    swanctl = root / SWANCTL_DIR.relative_to("/")
    swanctl.mkdir(parents=True, exist_ok=True)
    atomic_write(swanctl / "swanctl.conf", swanctl_conf.encode(), mode=0o600)
    write_credentials(credentials, root)


def write_users_configuration(users_conf: str, root: Path = Path("/")) -> None:
    """conf.d/users.conf (accounts and static IPs), included by swanctl.conf: written at
    start and again by every ``ikev2-vpn users`` change."""
    path = root / SWANCTL_DIR.relative_to("/") / USERS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, users_conf.encode(), mode=0o600)


def write_radius_secrets(text: str, root: Path = Path("/")) -> None:
    """The RADIUS shared secret, readable by root only (strongswan.conf includes it)."""
    path = root / defaults.RADIUS_SECRETS_FILE.relative_to("/")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, text.encode(), mode=0o600)


def write_credentials(credentials: ServerCredentials, root: Path = Path("/")) -> None:
    """The server certificate, its chain and a link to its key, where swanctl.conf expects
    them; called again whenever a renewed certificate is loaded into charon."""
    swanctl = root / SWANCTL_DIR.relative_to("/")
    for folder in ("x509", "x509ca", "private"):
        (swanctl / folder).mkdir(parents=True, exist_ok=True)
    for old in (swanctl / "x509ca").iterdir():
        old.unlink()
    atomic_write(swanctl / "x509" / LEAF_FILE, credentials.leaf_pem(), mode=0o644)
    for number, cert in enumerate(
        (*credentials.intermediates, *([credentials.ca] if credentials.ca else [])), start=1
    ):
        atomic_write(
            swanctl / "x509ca" / f"ca-{number}.crt", cert.public_bytes(Encoding.PEM), mode=0o644
        )
    # The key stays where it is (in /data or the operator's mount); swanctl follows the link.
    link = swanctl / "private" / KEY_FILE
    link.unlink(missing_ok=True)
    link.symlink_to(credentials.key_path)
    leaf = credentials.leaf
    status = root / CERTIFICATE_STATUS.relative_to("/")
    status.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        status,
        json.dumps(
            {
                "subject": leaf.subject.rfc4514_string(),
                "serial": f"{leaf.serial_number:x}",
                "not_before": leaf.not_valid_before_utc.timestamp(),
                "not_after": leaf.not_valid_after_utc.timestamp(),
            }
        ).encode(),
        mode=0o644,
    )
