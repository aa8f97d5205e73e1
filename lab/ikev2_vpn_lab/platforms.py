"""What each platform's built-in VPN client offers, as strongSwan proposals a test client replays.

Every entry follows docs/clients.md ("Default proposals"), the one
source for these facts; ``source`` quotes the line it comes from. The end-to-end suite
(tests/e2e/test_compat.py) connects a strongSwan client offering exactly these proposals,
in this order, to a server under each ``VPN_PROPOSALS`` set, and the README's
compatibility table is generated from what it measured (:mod:`ikev2_vpn_lab.matrix`).

Nothing is dropped from the lists: strongSwan as a client parses and sends every algorithm
in them, DES and NULL included (the server's log shows ``DES_CBC`` and ``NULL`` in the
received ESP proposals). Where docs/clients.md leaves a detail open, ``note`` says what the
replay assumes.

In strongSwan's syntax an integrity algorithm in an IKE proposal also sets the PRF
(``sha256`` is HMAC_SHA2_256_128 with PRF_HMAC_SHA2_256), which is what these clients pair;
with AES-GCM only the PRF is left (``prfsha256``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Platform:
    """One row of the compatibility table: a client as it comes, with one setting."""

    key: str  # short id for tests and the results file
    platform: str
    setting: str
    ike: tuple[str, ...]  # proposals in the client's order; () = strongSwan's defaults
    esp: tuple[str, ...]
    strong: bool  # expected to connect under VPN_PROPOSALS=modern too
    source: str  # what docs/clients.md says the proposals are
    note: str = ""
    # Routes what the server's traffic selector covers, so a split tunnel set by the server
    # (VPN_SPLIT_NETS) needs nothing on the device. Windows routes by its own route list
    # instead (docs/clients.md, Split tunnels): only its generated script is replayed there.
    follows_server_split: bool = True

    @property
    def ike_proposals(self) -> str | None:
        """For swanctl's ``proposals`` (None: the client's defaults)."""
        return ",".join(self.ike) or None

    @property
    def esp_proposals(self) -> str | None:
        """For swanctl's ``esp_proposals`` (None: the client's defaults)."""
        return ",".join(self.esp) or None


_WINDOWS_IKE: Final = "3des-aes128-aes192-aes256-sha1-sha256-sha384-modp1024"
_WINDOWS_ESP: Final = "aes256-aes128-3des-des-null-sha1"
_WINDOWS_SOURCE: Final = (
    "Windows 7 to 11 (GUI-created connection, registry untouched): IKE "
    "`3des-aes128-aes192-aes256-sha1-sha256-sha384-modp1024`; ... Only DH group 2 (modp1024). "
    "ESP `aes256-aes128-3des-des-null-sha1` (no PFS)."
)
_WINDOWS_11_SOURCE: Final = (
    "Windows 7 to 11 (GUI-created connection, registry untouched): IKE "
    "`3des-aes128-aes192-aes256-sha1-sha256-sha384-modp1024`; Windows 11 additionally "
    "`aes128gcm16-aes256gcm16-sha1-sha256-sha384-modp1024`. Only DH group 2 (modp1024). "
    "ESP `aes256-aes128-3des-des-null-sha1` (no PFS)."
)
_IOS_SOURCE: Final = (
    "iOS (as of 16.5), manual configuration: IKE proposals in order "
    "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048, same with ECP_256, same with "
    "MODP_1536 (broken in practice), AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024, "
    "3DES_CBC/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024. ESP: AES_CBC_256/HMAC_SHA2_256_128 "
    "(offered with and without a DH group), AES_CBC_128/HMAC_SHA1_96, 3DES_CBC/HMAC_SHA1_96."
)
_STRONGSWAN_SOURCE: Final = "strongSwan's default proposals"
# Android's IKE library: "AES-CBC/AES-GCM with SHA2 and DH groups 14/15/16 and ECP 19/20/21".
_ANDROID_GROUPS: Final = "modp2048-modp3072-modp4096-ecp256-ecp384-ecp521"

PLATFORMS: Final[tuple[Platform, ...]] = (
    Platform(
        key="windows10",
        follows_server_split=False,
        platform="Windows 10",
        setting="built-in, added in Settings",
        ike=(_WINDOWS_IKE,),
        esp=(_WINDOWS_ESP,),
        strong=False,
        source=_WINDOWS_SOURCE,
        note="IKE offers only MODP-1024, ESP only SHA-1",
    ),
    Platform(
        key="windows11",
        follows_server_split=False,
        platform="Windows 11",
        setting="built-in, added in Settings",
        ike=(_WINDOWS_IKE, "aes128gcm16-aes256gcm16-sha1-sha256-sha384-modp1024"),
        esp=(_WINDOWS_ESP,),
        strong=False,
        source=_WINDOWS_11_SOURCE,
        note="with GCM, strongSwan takes sha1/sha256/sha384 as PRFs only, as Windows means them",
    ),
    Platform(
        key="windows-dh2048",
        follows_server_split=False,
        platform="Windows 10/11",
        setting="added in Settings, registry `NegotiateDH2048_AES256=2`",
        ike=("aes256-sha1-sha256-sha384-modp2048",),
        esp=(_WINDOWS_ESP,),
        strong=False,
        source=(
            "Windows with registry HKLM\\SYSTEM\\CurrentControlSet\\Services\\RasMan\\Parameters"
            "\\NegotiateDH2048_AES256 (DWORD): 0 default; 1 adds AES-256-CBC + MODP-2048; 2 "
            "enforces them: IKE `aes256-sha1-sha256-sha384-modp2048`."
        ),
        note="the key changes IKE only: ESP keeps the default list, which has only SHA-1",
    ),
    Platform(
        key="windows-powershell",
        follows_server_split=False,
        platform="Windows 10/11",
        setting="PowerShell `Set-VpnConnectionIPsecConfiguration` shown above",
        ike=("aes256-sha256-ecp384",),
        esp=("aes256gcm16-ecp384",),
        strong=True,
        source=(
            "Windows via PowerShell: ... Set-VpnConnectionIPsecConfiguration "
            "-AuthenticationTransformConstants GCMAES256 -CipherTransformConstants GCMAES256 "
            "-EncryptionMethod AES256 -IntegrityCheckMethod SHA256 -DHGroup ECP384 "
            "-PfsGroup ECP384 -Force"
        ),
        note="one proposal each; the PFS group is used at rekeying only",
    ),
    Platform(
        key="ios",
        platform="iOS / iPadOS 16.5",
        setting="built-in, added by hand",
        ike=(
            "aes256-sha256-modp2048",
            "aes256-sha256-ecp256",
            "aes256-sha256-modp1536",
            "aes128-sha1-modp1024",
            "3des-sha1-modp1024",
        ),
        esp=("aes256-sha256-modp2048", "aes256-sha256", "aes128-sha1", "3des-sha1"),
        strong=True,
        source=_IOS_SOURCE,
        note="docs/clients.md names no ESP DH group; the replay assumes the first IKE group",
    ),
    Platform(
        key="macos",
        platform="macOS 13.4",
        setting="built-in, added by hand",
        ike=(
            "aes256-sha256-modp2048",
            "aes256-sha256-modp1536",
            "aes128-sha1-modp1024",
            "3des-sha1-modp1024",
        ),
        esp=("aes256-sha256", "aes128-sha1", "3des-sha1"),
        strong=True,
        source=(
            "macOS (as of 13.4): like iOS but no ECP_256 proposal, and ESP rekeying without a "
            "DH group"
        ),
    ),
    Platform(
        key="android-builtin",
        platform="Android 11+",
        setting="built-in *IKEv2/IPSec MSCHAPv2*, added by hand",
        ike=(
            f"aes256gcm16-aes192gcm16-aes128gcm16-prfsha256-prfsha384-prfsha512-{_ANDROID_GROUPS}",
            f"aes256-aes192-aes128-sha256-sha384-sha512-{_ANDROID_GROUPS}",
        ),
        esp=("aes256gcm16-aes192gcm16-aes128gcm16", "aes256-aes192-aes128-sha256-sha384-sha512"),
        strong=True,
        source=(
            "Android 11 and later: ... Its IKE library (android.net.ipsec.ike) offers "
            "AES-CBC/AES-GCM with SHA2 and DH groups 14/15/16 and ECP 19/20/21, curve25519 on "
            "newer releases; no modp1024."
        ),
        note="without curve25519, as the oldest releases in the range",
    ),
    Platform(
        key="android-strongswan",
        platform="Android",
        setting="strongSwan VPN Client app, added by hand",
        ike=(),
        esp=(),
        strong=True,
        source=(
            "The strongSwan VPN Client app (the seed's route, and the only one before "
            "Android 11) imports `.sswan` files and uses strongSwan's default proposals."
        ),
        note=(
            "the app's own ESP list (android_service.c) adds SHA-1 and PFS groups to "
            "strongSwan's defaults; either way its first CHILD_SA carries no DH group"
        ),
    ),
    Platform(
        key="linux",
        platform="Linux",
        setting="strongSwan or NetworkManager-strongswan, added by hand",
        ike=(),
        esp=(),
        strong=True,
        source="Linux: strongSwan (swanctl or NetworkManager-strongswan) with strongSwan defaults.",
    ),
)


@dataclass(frozen=True)
class GeneratedProfile:
    """One row of the compatibility table for a profile file the server writes per user."""

    key: str
    platform: str
    setting: str
    file_suffix: str  # how the file's name ends in /data/clients/<user>/
    strong: bool = True  # profiles carry only strong proposals: they connect under both sets


GENERATED_PROFILES: Final[tuple[GeneratedProfile, ...]] = (
    GeneratedProfile(
        "apple-profile", "iOS / iPadOS / macOS", "generated `.mobileconfig`", ".mobileconfig"
    ),
    GeneratedProfile("android-profile", "Android", "generated `.sswan` (strongSwan app)", ".sswan"),
    GeneratedProfile("windows-profile", "Windows 10/11", "generated PowerShell script", ".ps1"),
    GeneratedProfile("linux-swanctl", "Linux", "generated `swanctl.conf`", ".swanctl.conf"),
    GeneratedProfile("linux-nm", "Linux", "generated NetworkManager profile", ".nmconnection"),
)


SPLIT_PREFIX: Final = "split-"
SPLIT_SETTING: Final = "; server sets `VPN_SPLIT_NETS`"


def split_platforms() -> tuple[Platform, ...]:
    """The platforms replayed against a split tunnel: those that follow the server's."""
    return tuple(platform for platform in PLATFORMS if platform.follows_server_split)


def by_key(key: str) -> Platform:
    for platform in PLATFORMS:
        if platform.key == key:
            return platform
    raise KeyError(key)
