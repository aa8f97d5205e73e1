"""Android: a ``.sswan`` profile for the strongSwan VPN Client app, and the fields to type
into the built-in client (Android 11 and later, "IKEv2/IPSec MSCHAPv2").

The ``.sswan`` format (JSON, docs/clients.md, Profile formats) has no field for a
password: the app asks for it when the profile is imported or first used.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any, Final

from cryptography.hazmat.primitives.serialization import Encoding

from . import ProfileInput, ca_fingerprint, proposals
from .templating import render_profile

SSWAN_FILE_NAME: Final = "android.sswan"
SSWAN_CONTENT_TYPE: Final = "application/vnd.strongswan.profile"  # the app's import type
BUILTIN_FILE_NAME: Final = "android-builtin.txt"

_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_DNS, "android.profiles.ikev2-vpn")


def sswan(profile: ProfileInput) -> bytes:
    """The strongSwan app profile as UTF-8 JSON.

    Its ``uuid`` depends on host and user only, so importing a regenerated profile updates
    the existing one in the app instead of adding another.
    """
    suites = proposals.client_suites(profile.esp_gcm)
    remote: dict[str, Any] = {"addr": profile.host, "id": profile.host}
    if profile.ca is not None:
        # The app then trusts exactly this CA for the server, no import into Android needed.
        remote["cert"] = base64.b64encode(profile.ca.public_bytes(Encoding.DER)).decode("ascii")
    document = {
        "uuid": str(uuid.uuid5(_NAMESPACE, f"{profile.host}\n{profile.user}")),
        "name": profile.display_name,
        "type": "ikev2-eap",
        "remote": remote,
        "local": {"eap_id": profile.user},
        "ike-proposal": suites.ike.strongswan(),
        "esp-proposal": suites.esp.strongswan(),
        "split-tunneling": _split_tunneling(profile),
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _split_tunneling(profile: ProfileInput) -> dict[str, Any]:
    """The app's split-tunnelling keys.

    With VPN_SPLIT_NETS, ``subnets`` lists what the server's traffic selector covers: the
    app then routes only those into the tunnel (VpnProfileImportActivity reads an array or
    a space-separated string). No ``block-ipv6`` then: IPv6 outside the split networks is
    meant to leave the phone directly, like everything else outside them.
    """
    if profile.split:
        return {"subnets": [str(network) for network in profile.split]}
    return {
        # The app asks for an IPv4 and an IPv6 address; the server has an IPv6 pool only with
        # VPN_POOL_V6. With "block-ipv6" the app (CharonVpnService's BuilderCache.applyData)
        # routes ::/0 into the tunnel when it got an IPv6 address, and otherwise lets no IPv6
        # leave the phone, where it would by default go around the tunnel. So the same key
        # is right with and without VPN_POOL_V6 (and when a full v6 pool gives none).
        "block-ipv6": True,
    }


# The built-in dialog as AOSP's Settings app draws it (vpn2/ConfigDialog.java, strings.xml):
# the "IPSec CA certificate" spinner lists "(don't verify server)" (vpn_no_ca_cert) and then
# the CA certificates the user installed; there is no "Use system certificates" entry. For
# IKEv2 types that first entry stores no CA, and the platform then verifies the server
# against the system trust store (Ikev2VpnProfile: a null server root CA "uses the system
# trust store"; IkeSessionParams.setAuthEap with no CA uses all trusted CAs). The server
# certificate spinner starts with "(received from server)" (vpn_no_server_cert).
def builtin_instructions(profile: ProfileInput) -> str:
    """What to type into Android's own VPN settings, field by field (no password inside)."""
    fingerprint = ca_fingerprint(profile.ca) if profile.ca is not None else None
    return render_profile(
        "android-builtin.txt.j2",
        name=profile.display_name,
        host=profile.host,
        user=profile.user,
        ca=profile.ca is not None,
        ca_fingerprint=fingerprint,
    )
