"""Linux: a swanctl.conf for strongSwan and a keyfile for NetworkManager's strongSwan plugin.

Both dial ``host``, expect it as the server's identity, sign in with EAP-MSCHAPv2 and offer
one strong suite from :mod:`.proposals` (accepted with either ``VPN_PROPOSALS``). In
self-signed mode both trust only the server's own CA, installed at
:func:`ca_install_path`; the profile's first lines say how.

NetworkManager keys are the ones the plugin reads (strongSwan's ``charon-nm`` and the
plugin's editor, NetworkManager-strongswan 1.4 and later): ``address``, ``certificate``,
``remote-identity``, ``method``, ``user``, ``virtual``, ``encap``, ``ipcomp``,
``proposal``, ``ike``, ``esp`` (several proposals separated by ``;``), ``remote-ts``
(traffic selectors separated by ``;``; without it charon-nm proposes 0.0.0.0/0 and ::/0
and routes what the server narrows them to) and the secret ``password`` with its
``password-flags``.
"""

from __future__ import annotations

import re
import uuid
from pathlib import PurePosixPath

from ..state.users import nt_hash
from . import ProfileInput, proposals
from .templating import render_profile

SWANCTL_SUFFIX = ".swanctl.conf"
NMCONNECTION_SUFFIX = ".nmconnection"
CA_DIR = PurePosixPath("/etc/ikev2-vpn")  # where the profiles expect ca.crt on the device
_UUID_NAMESPACE = uuid.UUID("6f1c3c52-4b0e-5d1a-9a57-2b7d0c1e8a10")  # ikev2-vpn profiles


def connection_name(host: str) -> str:
    """The swanctl connection and child name: ``ikev2-`` and the host, in section-name
    characters, so profiles for two servers can be loaded side by side."""
    return "ikev2-" + re.sub(r"[^A-Za-z0-9]+", "-", host).strip("-")


def ca_install_path(host: str) -> PurePosixPath:
    """Where both profiles expect the server's CA certificate on the Linux device."""
    return CA_DIR / host / "ca.crt"


def swanctl_name(profile: ProfileInput) -> str:
    return profile.user + SWANCTL_SUFFIX


def nmconnection_name(profile: ProfileInput) -> str:
    return profile.user + NMCONNECTION_SUFFIX


def client_proposals(esp_gcm: bool) -> tuple[str, str]:
    """The IKE and ESP proposal strongSwan clients offer (:mod:`.proposals`: one strong
    suite, which the server accepts under either VPN_PROPOSALS)."""
    suites = proposals.client_suites(esp_gcm)
    return suites.ike.strongswan(), suites.esp.strongswan()


# --- swanctl.conf --------------------------------------------------------------------------

_BARE_VALUE = re.compile(r"[A-Za-z0-9._@+:/=%-]+")


def swanctl_value(text: str) -> str:
    """``text`` as one swanctl.conf value: bare when safe, else double-quoted with escapes."""
    if not text or any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise ValueError(f"{text!r} is empty or contains a control character")
    if _BARE_VALUE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def swanctl_conf(profile: ProfileInput) -> bytes:
    """``<user>.swanctl.conf``: the connection, and the password's NT hash when included."""
    ike, esp = client_proposals(profile.esp_gcm)
    secret = nt_hash(profile.password).hex() if profile.password is not None else None
    return render_profile(
        "swanctl.conf.j2",
        connection=connection_name(profile.host),
        host=swanctl_value(profile.host),
        user=swanctl_value(profile.user),
        file_name=swanctl_name(profile),
        ca_path=swanctl_value(str(ca_install_path(profile.host))) if profile.ca else None,
        ike=ike,
        esp=esp,
        secret=secret,
        ipv6=profile.ipv6,
        split=[str(network) for network in profile.split],
    ).encode()


# --- NetworkManager keyfile ------------------------------------------------------------------

_KEYFILE_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def keyfile_value(text: str) -> str:
    """``text`` as a GLib key file string value (what NetworkManager's keyfiles are).

    Backslash, line breaks and tabs are escaped; spaces at either end become ``\\s``, which
    the reader would otherwise drop.
    """
    escaped = "".join(_KEYFILE_ESCAPES.get(char, char) for char in text)
    stripped = escaped.lstrip(" ")
    leading = len(escaped) - len(stripped)
    core = stripped.rstrip(" ")
    trailing = len(stripped) - len(core)
    return "\\s" * leading + core + "\\s" * trailing


def connection_uuid(profile: ProfileInput) -> uuid.UUID:
    """Stable per server and user: importing a newer profile replaces the older one."""
    return uuid.uuid5(_UUID_NAMESPACE, f"{profile.host}\n{profile.user}")


def nmconnection(profile: ProfileInput) -> bytes:
    """``<user>.nmconnection``: a NetworkManager connection; the password when included."""
    ike, esp = client_proposals(profile.esp_gcm)
    password = profile.password.get_secret_value() if profile.password is not None else None
    return render_profile(
        "nmconnection.j2",
        name=keyfile_value(profile.display_name),
        connection=connection_name(profile.host),
        uuid=connection_uuid(profile),
        host=keyfile_value(profile.host),
        user=keyfile_value(profile.user),
        file_name=nmconnection_name(profile),
        ca_path=keyfile_value(str(ca_install_path(profile.host))) if profile.ca else None,
        ike=ike,
        esp=esp,
        password=keyfile_value(password) if password is not None else None,
        split=[str(network) for network in profile.split],
    ).encode()
