"""Every cipher, lifetime, port and path in one place.

The proposal sets follow docs/clients.md, "What each native client does". As responder,
charon takes the client's first proposal that one of these lists accepts
(``prefer_configured_proposals = no`` in strongswan.conf), so the order here only says what
is accepted, not what is preferred.
"""

import ipaddress
from pathlib import Path
from typing import Final

DATA_DIR: Final = Path("/data")
CA_CERT_NAME: Final = "ca.crt"  # in DATA_DIR: the file users give their devices
CLIENTS_DIR_NAME: Final = "clients"  # in DATA_DIR: one directory of profiles per user
CHARON: Final = Path("/usr/lib/ipsec/charon")
CONNECTION_NAME: Final = "ikev2-vpn"
POOL_V4_NAME: Final = "pool-v4"  # with VPN_POOL_V4_STATIC: the ranges beside it, "pool-v4-2"
POOL_V6_NAME: Final = "pool-v6"
# With static IPs: the connection that asks every client for its EAP identity and accepts
# none, so charon moves on to the user's own connection (see ikev2_vpn/render.py). It
# requires a group that EAP-MSCHAPv2 users never have.
IDENTIFY_CONNECTION: Final = "identify"
IDENTIFY_GROUP: Final = "ikev2-vpn-identify-only"
POOL_V4: Final = ipaddress.IPv4Network("10.10.10.0/24")
IKE_PORT: Final = 500
NATT_PORT: Final = 4500

# --- Proposals -------------------------------------------------------------------------
# Key exchange groups accepted everywhere; MODP-2048 stays because iOS and macOS offer it
# first when set up by hand, and RFC 8247 lists it as MUST.
_STRONG_KE: Final = "curve25519-ecp384-ecp256-modp3072-modp2048"

IKE_STRONG: Final = (
    f"aes256gcm16-aes128gcm16-prfsha384-prfsha256-prfsha512-{_STRONG_KE}",
    f"aes256-aes128-sha384-sha256-sha512-{_STRONG_KE}",
)
# ESP: "none" makes PFS optional, so a CHILD_SA rekey is accepted with or without a key
# exchange. Without: macOS, and a Windows connection made by hand in Settings (it offers ESP
# without PFS). With one of the groups above: iOS, strongSwan clients, and Windows set up by
# windows.ps1 (Set-VpnConnectionIPsecConfiguration -PfsGroup ECP384, profiles/proposals.py).
# The first CHILD_SA rides on IKE_AUTH and never has a key exchange of its own.
ESP_STRONG_AEAD: Final = f"aes256gcm16-aes128gcm16-{_STRONG_KE}-none"
ESP_STRONG_CBC: Final = f"aes256-aes128-sha384-sha256-sha512-{_STRONG_KE}-none"

# Exactly what a hand-made connection on stock Windows needs (it only offers MODP-1024 for
# IKE and SHA-1 for ESP, without PFS). iOS and macOS also offer legacy suites, but always
# after strong ones the server accepts, so nothing else is added.
IKE_LEGACY: Final = ("aes256-sha256-modp1024",)
ESP_LEGACY: Final = ("aes256-sha1",)

# --- Timers ----------------------------------------------------------------------------
# DPD: probe a silent client after 30 s; with 3 retransmits (4 s base, 1.8 back-off) a dead
# client is cleared about 80 s after it went silent and its pool address is returned.
DPD_DELAY: Final = "30s"  # VPN_DPD_DELAY's default
RETRANSMIT_TRIES: Final = 3
# The server never starts a rekey: clients do, on their own schedules. A server-initiated
# CHILD_SA rekey carries a DH group, which macOS and hand-made Windows connections (both
# rekey without PFS) refuse, dropping the tunnel (Algo runs with rekey=no for the same
# reason). Dead clients are cleared by DPD instead of by lifetimes.
SERVER_REKEY_TIME: Final = "0"

# --- IKE_SA_INIT flood protection (charon's DoS settings) ---------------------------------
# Half-open IKE_SAs (IKE_SA_INIT answered, IKE_AUTH not finished) cost state and DH work.
# Cookies (RFC 7296 2.6) are stateless: a flood from addresses that never see the answers
# costs only a hash per packet once they are on. Honest clients answer a cookie with one
# extra round trip, so cookies may come on early; hard per-address limits must not, or a
# carrier-NAT address with many users stalls (docs/development.md, "Facts measured in the
# lab": strongSwan's per-IP limit of 5 made 100 clients behind one address take minutes).
DOS_CONFIG: Final = {
    # Global half-open count from which every IKE_SA_INIT must carry a cookie (strongSwan's
    # default): a flood of spoofed or cookie-ignoring packets creates at most this much state.
    "cookie_threshold": 30,
    # Half-open count from one address from which that address must answer cookies
    # (strongSwan's default): a single-source flood meets cookies before the global count.
    "cookie_threshold_ip": 3,
    # Half-open IKE_SAs one address may hold; further IKE_SA_INITs from it are dropped. Only
    # peers that answer cookies get this far, so this limits a real (non-spoofing) attacker,
    # not a flood. 200 lets a burst of 100-200 users behind one carrier NAT in at once
    # (strongSwan's 5 drops the rest, who retry after 4, 7, 13 s of back-off).
    "block_threshold": 200,
    # Global hard limit on half-open IKE_SAs (0, strongSwan's default, is unlimited): bounds
    # the memory and DH work cookie-answering attackers on many addresses can cause, at five
    # times the largest single-address burst.
    "init_limit_half_open": 1000,
    # Drop new IKE_SA_INITs while more than this many jobs wait for a worker (0: no limit):
    # keeps DPD, rekeys and logins already under way from starving behind a flood's queue.
    # A burst of 200 honest clients queues a few hundred jobs at most.
    "init_limit_job_load": 2000,
    # Seconds a half-open IKE_SA may live (strongSwan: 30). An honest EAP login here takes
    # well under a second; 20 s still covers two retransmits (4 + 7.2 s) of a lost packet,
    # and frees what an attacker holds sooner.
    "half_open_timeout": 20,
    # Hash table for IKE_SAs (strongSwan 6: 1 bucket, 1 lock, i.e. a list): thousands of
    # half-open and established SAs need constant-time lookups, and segments let the
    # worker threads look up different SAs without waiting on one lock. Powers of two.
    "ikesa_table_size": 1024,
    "ikesa_table_segments": 16,
}

# --- Worker threads ------------------------------------------------------------------------
# A failed EAP-MSCHAPv2 password holds the charon worker that checked it for 2 s
# (strongSwan's eap-mschapv2 waits before answering, fixed in its code), and a RADIUS login
# holds one until the server answers. With strongSwan's 16 workers a handful of failures
# per second would queue every other login behind them. Idle threads cost little memory
# (docs/security.md, "Failed logins and bans", has the figures), so there are many, and a few
# are kept for the jobs a login flood must not delay: IKE_AUTH (every login step) runs at
# charon's LOW priority, IKE_SA_INIT at MEDIUM, DPD and deletes (INFORMATIONAL) at HIGH.
CHARON_THREADS: Final = 128
PRIORITY_THREADS: Final = {
    "high": 4,  # only HIGH and CRITICAL jobs: DPD, deletes, ... always get a worker
    "medium": 8,  # only MEDIUM and above: new IKE_SA_INITs are answered while logins queue
}

# --- Network ---------------------------------------------------------------------------
# Largest TCP MSS that fits through NAT-T encapsulation on a 1500-byte path (and through
# kernel-libipsec's 1400-byte ipsec0 device).
TCP_MSS: Final = 1360
# The same segments over IPv6: MTU 1400 minus 40 bytes of IPv6 and 20 of TCP header.
TCP_MSS_V6: Final = 1340
SYSCTLS: Final = {
    "net.ipv4.ip_forward": "1",
    # Redirects make no sense on a tunnel endpoint and leak the topology.
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
}
# With VPN_POOL_V6. Docker turns IPv6 off in "all" and "default" (so also on ipsec0, which
# charon creates later) and leaves it on only for interfaces of IPv6 networks; setting
# "all" sets "default" too. Both must come from --sysctl: /proc/sys is read-only otherwise.
SYSCTLS_V6: Final = {
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.all.forwarding": "1",
}

# --- RADIUS (VPN_RADIUS_SERVERS) -----------------------------------------------------------
RADIUS_AUTH_PORT: Final = 1812  # accounting: this + 1 (1813) unless VPN_RADIUS_ACCOUNTING_PORT
RADIUS_SECRET_MAX: Final = 128  # what common RADIUS servers accept
# Interim accounting updates (bytes and packets so far) for each session; an
# Acct-Interim-Interval in the RADIUS server's Access-Accept overrides it.
RADIUS_INTERIM_INTERVAL_S: Final = 300
# A RADIUS server that does not answer: charon waits 2 s, retransmits once and waits 2.8 s
# more (strongSwan counts the first send as an attempt), then refuses the login: about 5 s,
# within the client's own IKE_AUTH retransmits (strongSwan 4 s, 7.2 s, ...; Windows and Apple
# similar), so the client hears "refused" instead of timing out itself (measured: refused
# after 5.2 s). Later logins go to the other servers of the list while that one is silent.
RADIUS_RETRANSMIT_TIMEOUT_S: Final = 2.0
RADIUS_RETRANSMIT_BASE: Final = 1.4
RADIUS_RETRANSMIT_TRIES: Final = 2
# The file holding the shared secret (0600), included by strongswan.conf: strongswan.conf
# itself stays readable by everyone.
RADIUS_SECRETS_FILE: Final = Path("/etc/ikev2-vpn/radius-secrets.conf")

# --- Generated credentials --------------------------------------------------------------
GENERATED_USER: Final = "vpnuser"
# No look-alike characters: the password gets typed on phones.
PASSWORD_ALPHABET: Final = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # noqa: S105
PASSWORD_LENGTH: Final = 20

# --- ACME (VPN_CERT=letsencrypt) ------------------------------------------------------------
ACME_DIRECTORIES: Final = {
    "production": "https://acme-v02.api.letsencrypt.org/directory",
    "staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
ACME_DIR_NAME: Final = "acme"  # in DATA_DIR
ACME_HTTP_PORT: Final = 80  # HTTP-01: the CA always connects to port 80 of VPN_HOST
SHARE_HTTPS_PORT: Final = 443  # `ikev2-vpn share` with a public certificate
ACME_ACCOUNT_KEY_BITS: Final = 2048
ACME_TIMEOUT_S: Final = 30  # one HTTP request to the CA
ACME_ORDER_TIMEOUT_S: Final = 120  # validation and finalisation of one order
# Renew when a third of the lifetime is left: 30 days of a 90-day certificate, 2 of a
# 6-day one. Retries back off from RETRY_MIN doubling to RETRY_MAX (both shortened for
# very short-lived certificates, see run/renewal.py).
ACME_RENEW_FRACTION: Final = 1 / 3
ACME_RETRY_MIN_S: Final = 60.0
ACME_RETRY_MAX_S: Final = 6 * 3600.0
# After failed first issuances (a restart loop), wait this long before asking the CA again,
# doubling per failure: Let's Encrypt allows 5 failed validations per name and hour.
ACME_RESTART_BACKOFF_S: Final = 30.0
ACME_RESTART_BACKOFF_MAX_S: Final = 1800.0
# The health check calls a certificate "about to expire" when less than this share of
# its lifetime (at most a week) is left: renewal has then failed for a long while.
CERT_WARN_FRACTION: Final = 1 / 10
CERT_WARN_MAX_S: Final = 7 * 86400.0

# Public address detection (only when VPN_HOST is unset and VPN_HOST_DETECT is on).
HOST_DETECT_URLS: Final = ("https://api.ipify.org", "https://ipv4.icanhazip.com")
HOST_DETECT_TIMEOUT_S: Final = 3.0
