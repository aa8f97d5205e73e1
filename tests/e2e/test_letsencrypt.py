"""VPN_CERT=letsencrypt against Pebble, Let's Encrypt's test ACME server, in real containers.

The server obtains its certificate over HTTP-01 (Pebble connects to port 80 of the server's
name on the lab network), keeps it across restarts, renews it while clients stay connected,
and stops with one clear line when its first certificate cannot be had. Clients trust only
Pebble's root, so every connection also proves that the server sends Pebble's intermediate.
Every name used resolves on the lab network (Docker aliases); none reaches public DNS.
"""

from __future__ import annotations

import base64
import io
import json
import plistlib
import re
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.vpnclient import VpnClient
from ikev2_vpn_lab.lab import Lab
from ikev2_vpn_lab.pebble import Pebble

CmsVerify = Callable[[bytes, bytes], subprocess.CompletedProcess[bytes]]  # conftest's

HOST = "vpn.example.test"
CA_BUNDLE = "/run/acme/ca.pem"  # where the server finds the CA of Pebble's HTTPS certificate
SERVED_CERT = "/etc/swanctl/x509/server.crt"  # the certificate charon serves right now
USER, PASSWORD = "alice", "Acme-pw-1"
EXIT_TIMEOUT_S = 60.0  # a failed first issuance includes the ACME client's own timeouts
SHORT_LIFETIME_S = 39  # renewed at a third left: 26 s after issuance, 13 s before expiry


def logs(container: docker.models.containers.Container) -> str:
    return str(container.logs(stdout=True, stderr=True).decode(errors="replace"))


def start_acme(
    lab: Lab,
    pebble: Pebble,
    role: str,
    host: str,
    env: dict[str, str] | None = None,
    *,
    volume: str | None = None,
    named: bool = True,
    wait: bool = True,
    restart: str | None = "unless-stopped",
) -> Server:
    """A letsencrypt server for ``host``, named after its role, with its own volume by
    default; ``named``: the lab network resolves ``host`` to it (what HTTP-01 needs)."""
    return lab.start_server(
        {
            "VPN_HOST": host,
            "VPN_CERT": "letsencrypt",
            "ACME_DIRECTORY": pebble.directory_url,
            "ACME_CA_BUNDLE": CA_BUNDLE,
            "VPN_USERS": f"{USER}:{PASSWORD}",
            **(env or {}),
        },
        name=lab.name(role),
        volume=volume or lab.name(f"{role}-data"),
        files={CA_BUNDLE: pebble.tls_ca_pem},
        aliases={lab.topology.egress: [host]} if named else None,
        wait=wait,
        restart=restart,
    )


def served_certificate(server: Server) -> x509.Certificate:
    return x509.load_pem_x509_certificate(eng.read_file(server.container, SERVED_CERT))


def connect(lab: Lab, pebble: Pebble, server: Server) -> VpnClient:
    """A client that trusts nothing but Pebble's root, connected."""
    client = lab.start_client(server, ca_pem=pebble.root_pem(), server_id=server.vpn_host)
    result = client.connect(USER, PASSWORD)
    assert result.connected, f"{result.error}\n{server.logs(20)}"
    return client


def assert_traffic_is_masqueraded(lab: Lab, server: Server, client: VpnClient) -> None:
    traffic = client.send_traffic(lab.target(server))
    assert traffic.tcp_source == server.egress().address, traffic
    assert traffic.icmp_received == traffic.icmp_sent > 0, traffic


@dataclass(frozen=True)
class IkeSa:
    unique_id: int
    established_s: int  # seconds since it was established


def ike_sa(client: VpnClient) -> IkeSa:
    listed = eng.run_checked(client.container, ["swanctl", "--list-sas", "--ike", "vpn", "--raw"])
    unique_id = re.search(r"\buniqueid=(\d+)", listed)
    established = re.search(r"\bestablished=(\d+)", listed)
    assert "state=ESTABLISHED" in listed and unique_id and established, listed
    return IkeSa(int(unique_id.group(1)), int(established.group(1)))


def wait_for_log(server: Server, text: str, deadline: datetime) -> None:
    while text not in logs(server.container):
        if server.state().get("Status") != "running":
            pytest.fail(f"{server.name} stopped before logging {text!r}:\n{server.logs(20)}")
        if datetime.now(UTC) > deadline:
            pytest.fail(
                f"{server.name} did not log {text!r} by {deadline:%H:%M:%S}:\n{server.logs(20)}"
            )
        time.sleep(0.5)


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def data_files(container: docker.models.containers.Container) -> dict[str, bytes]:
    """The regular files under /data of a (stopped) container, by path."""
    chunks, _ = container.get_archive("/data")
    found = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        for member in archive:
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is not None:
                found["/" + member.name] = handle.read()
    return found


def looks_half_written(path: str, content: bytes) -> bool:
    name = path.rsplit("/", 1)[-1]
    temporary = name.startswith((".", "tmp")) or name.endswith(("~", ".tmp", ".part", ".new"))
    return temporary or not content


def assert_refused(server: Server, expected: str, *also: str) -> None:
    """Exit status 2, and the last line names the setting, the problem and the fix; nothing
    in /data is half-written and no certificate was kept."""
    assert server.wait_exit(EXIT_TIMEOUT_S) == 2
    output = logs(server.container)
    last = output.rstrip().splitlines()[-1]
    assert last.startswith(f"ikev2-vpn: error: {expected}"), output
    for word in also:
        assert word in last, last
    assert PASSWORD not in output
    left = data_files(server.container)
    assert not [path for path, content in left.items() if looks_half_written(path, content)], left
    kept = [p for p, data in left.items() if p.startswith("/data/acme/") and b"CERTIFICATE" in data]
    assert not kept


# --- issuance and restart ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pebble(lab: Lab, pebble_image: str) -> Pebble:
    return lab.start_pebble(image=pebble_image)


@pytest.fixture(scope="module")
def issued(lab: Lab, pebble: Pebble) -> Server:
    """A server that obtained its certificate from Pebble at its first start."""
    return start_acme(lab, pebble, "issued", HOST, {"ACME_EMAIL": "admin@example.test"})


def test_first_start_obtains_a_certificate_over_http_01(
    lab: Lab, pebble: Pebble, issued: Server
) -> None:
    assert f"ACME: obtained a certificate for {HOST}" in logs(issued.container)
    # Pebble validated the challenge on port 80 of the server's name, as a real CA would.
    assert f"Attempting to validate w/ HTTP: http://{HOST}:80/" in pebble.logs()
    served = served_certificate(issued)
    # Pebble prints serials as even-length hex (a leading zero kept): compare numbers.
    assert served.serial_number in [int(serial, 16) for serial in pebble.issued_serials()]
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [HOST]
    client = connect(lab, pebble, issued)
    assert_traffic_is_masqueraded(lab, issued, client)


def test_restart_reuses_the_certificate_without_a_new_order(
    lab: Lab, pebble: Pebble, issued: Server
) -> None:
    served = served_certificate(issued)
    orders = pebble.order_count()
    issued.restart()
    output = logs(issued.container)
    assert output.count("ACME: reusing the certificate in /data/acme") == 1, output
    assert output.count(f"ACME: obtained a certificate for {HOST}") == 1
    assert pebble.order_count() == orders
    assert served_certificate(issued).serial_number == served.serial_number
    connect(lab, pebble, issued)


def test_the_apple_profile_is_signed_by_the_public_certificate(
    pebble: Pebble, issued: Server, cms_verify: CmsVerify
) -> None:
    """A device that trusts only the public CA (Pebble's root) verifies the profile, and
    notices a change to it: no CA payload is needed to trust it."""
    chunks, _ = issued.container.get_archive(f"/data/clients/{USER}/apple.mobileconfig")
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        handle = archive.extractfile(archive.getmembers()[0])
        assert handle is not None
        signed = handle.read()
    verified = cms_verify(signed, pebble.root_pem())
    assert verified.returncode == 0, verified.stderr
    profile = plistlib.loads(verified.stdout)
    assert not [p for p in profile["PayloadContent"] if p["PayloadType"].endswith(".root")]
    tampered = signed.replace(HOST.encode(), b"x" + HOST.encode()[1:], 1)
    assert tampered != signed
    assert cms_verify(tampered, pebble.root_pem()).returncode != 0


# Runs on the lab network, where HOST resolves to the server: what a phone that trusts only
# Pebble's root (argv[2]) does with a share link (argv[1]). Status, type and body, or the error.
PHONE_FETCH = """
import base64, json, ssl, sys, urllib.request
context = ssl.create_default_context(cadata=sys.argv[2])
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
)
try:
    with opener.open(sys.argv[1], timeout=20) as answer:
        out = {"status": answer.status, "type": answer.headers.get_content_type(),
               "body": base64.b64encode(answer.read()).decode()}
except Exception as error:
    out = {"error": f"{type(error).__name__}: {error}"}
print(json.dumps(out))
"""


def test_share_links_are_https_with_the_public_certificate(
    lab: Lab, pebble: Pebble, issued: Server, cms_verify: CmsVerify
) -> None:
    """With a certificate phones trust, `ikev2-vpn share` serves HTTPS on port 443 with it:
    a phone that trusts only Pebble's root downloads the signed profile over a verified
    connection, and nothing of the share is served in clear text on port 80."""
    api = issued.container.client.api
    run = api.exec_create(
        issued.container.id, ["ikev2-vpn", "share", USER, "--minutes", "1"], tty=False
    )
    printed = ""
    for chunk in api.exec_start(run["Id"], stream=True):
        printed += chunk.decode(errors="replace")
        if "android.sswan" in printed and re.search(r"https://\S+/\n", printed):
            break
    links = {name: url for url, name in re.findall(r"(https://\S+/([\w.]*))\n", printed)}
    assert {"apple.mobileconfig", "android.sswan", ""} <= set(links), printed
    assert "ca.crt" not in links  # nothing to install first: phones trust the certificate
    assert links["apple.mobileconfig"].startswith(f"https://{HOST}/"), printed
    assert "HTTPS with the server's certificate" in printed
    phone = lab.target(issued).container  # on the lab network where HOST is the server

    def fetch(url: str, root_pem: bytes) -> dict[str, Any]:
        result = eng.run_in(phone, ["python3", "-c", PHONE_FETCH, url, root_pem.decode()])
        assert result.exit_code == 0, result.stderr
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    answer = fetch(links["apple.mobileconfig"], pebble.root_pem())
    assert answer.get("status") == 200, answer
    assert answer["type"] == "application/x-apple-aspen-config"
    signed = base64.b64decode(answer["body"])
    verified = cms_verify(signed, pebble.root_pem())
    assert verified.returncode == 0, verified.stderr
    page = fetch(links[""], pebble.root_pem())
    assert page.get("status") == 200 and b"plain HTTP" not in base64.b64decode(page["body"])

    # A phone that trusts another root refuses the server: a swapped server would fail so.
    refused = fetch(links["apple.mobileconfig"], other_root_pem())
    assert "CERTIFICATE_VERIFY_FAILED" in refused.get("error", ""), refused
    # Port 80 serves nothing of it: no clear-text copy for someone on the phone's Wi-Fi.
    plain = fetch(links["apple.mobileconfig"].replace("https://", "http://"), pebble.root_pem())
    assert "Connection refused" in plain.get("error", ""), plain
    stop_share(issued)


def other_root_pem() -> bytes:
    """A CA certificate nobody issued this server's certificate with."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not Pebble")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


def stop_share(server: Server) -> None:
    """Ctrl-C for the share started above (its process, found by its command line)."""
    eng.run_checked(
        server.container,
        [
            "python3",
            "-c",
            "import os, signal\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n"
            "        argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n"
            "    except OSError:\n"
            "        continue\n"
            "    if b'share' in argv and int(pid) != os.getpid():\n"
            "        os.kill(int(pid), signal.SIGINT)\n",
        ],
    )


# --- renewal -----------------------------------------------------------------------------------


def test_renewal_keeps_clients_connected_and_serves_the_new_certificate(
    lab: Lab, pebble_image: str
) -> None:
    """With a 39 s lifetime the server renews after about 26 s, loads the new certificate
    into charon without touching the tunnels, and new clients get the new certificate
    once the first one has expired."""
    short = lab.start_pebble(
        alias="acme-short.example.test", validity_s=SHORT_LIFETIME_S, image=pebble_image
    )
    host = "renew.example.test"
    server = start_acme(lab, short, "renew", host)
    first = served_certificate(server)
    assert first.not_valid_after_utc - first.not_valid_before_utc <= timedelta(
        seconds=SHORT_LIFETIME_S
    )
    phone = connect(lab, short, server)
    tunnel = ike_sa(phone)
    watched_from = time.monotonic()

    # Renewed before the first certificate expires, or it was too late.
    wait_for_log(server, "ACME: new certificate loaded into charon", first.not_valid_after_utc)
    assert f"ACME: renewed the certificate for {host}" in logs(server.container)
    second = served_certificate(server)
    assert second.serial_number != first.serial_number
    assert second.not_valid_after_utc > first.not_valid_after_utc

    sleep_until(first.not_valid_after_utc + timedelta(seconds=1))
    # The phone's tunnel is the one it opened with the first certificate: never rebuilt.
    now = ike_sa(phone)
    assert now.unique_id == tunnel.unique_id
    assert now.established_s >= tunnel.established_s + int(time.monotonic() - watched_from) - 2
    assert_traffic_is_masqueraded(lab, server, phone)
    # Only the renewed certificate is valid now: a new client accepting it proves it is served.
    connect(lab, short, server)
    assert (server.state().get("Health") or {}).get("Status") == "healthy"
    server.remove()  # it would renew every 26 s for the rest of the module
    short.remove()


# --- failures at the first start ----------------------------------------------------------------


def test_unreachable_acme_server_stops_the_server_and_leaves_a_usable_volume(
    lab: Lab, pebble: Pebble
) -> None:
    host = "unreachable.example.test"
    volume = lab.name("unreachable-data")
    # Pebble's own name, a port nothing listens on: refused at once, and never public DNS.
    closed = {"ACME_DIRECTORY": f"https://{pebble.alias}:14999/dir"}
    server = start_acme(
        lab, pebble, "unreachable", host, closed, volume=volume, wait=False, restart=None
    )
    assert_refused(server, "ACME_DIRECTORY: cannot reach")
    server.remove()
    # The operator fixes the setting: the same volume works.
    fixed = start_acme(lab, pebble, "unreachable-fixed", host, volume=volume)
    assert f"ACME: obtained a certificate for {host}" in logs(fixed.container)
    fixed.remove()


def test_failed_http_01_validation_stops_the_server_and_leaves_a_usable_volume(
    lab: Lab, pebble: Pebble
) -> None:
    volume = lab.name("unvalidated-data")
    # On the lab network Pebble's own name points at Pebble, which has nothing on port 80:
    # a DNS record pointing elsewhere, or a port 80 that is not forwarded.
    server = start_acme(
        lab,
        pebble,
        "unvalidated",
        pebble.alias,
        volume=volume,
        named=False,
        wait=False,
        restart=None,
    )
    assert_refused(server, "VPN_HOST: the CA could not validate", "80")
    server.remove()
    host = "unvalidated.example.test"
    fixed = start_acme(lab, pebble, "unvalidated-fixed", host, volume=volume)
    assert f"ACME: obtained a certificate for {host}" in logs(fixed.container)
    fixed.remove()


def test_ip_address_as_host_is_refused_before_any_order(lab: Lab, pebble: Pebble) -> None:
    orders = pebble.order_count()
    server = start_acme(
        lab, pebble, "ip-host", "203.0.113.10", named=False, wait=False, restart=None
    )
    assert_refused(server, "VPN_HOST:", "IP address")
    assert pebble.order_count() == orders


# --- options -----------------------------------------------------------------------------------


def test_ecdsa_key_type_gives_an_ecdsa_certificate_clients_accept(lab: Lab, pebble: Pebble) -> None:
    server = start_acme(lab, pebble, "ecdsa", "ecdsa.example.test", {"ACME_KEY_TYPE": "ecdsa-p256"})
    key = served_certificate(server).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    connect(lab, pebble, server)
    server.remove()


def test_self_signed_fallback_serves_while_the_ca_refuses(lab: Lab, pebble: Pebble) -> None:
    """ACME_FALLBACK=self-signed: the failed order is logged, the server starts anyway with its
    own CA (so clients that imported it can connect) and keeps asking the CA."""
    server = start_acme(
        lab, pebble, "fallback", pebble.alias, {"ACME_FALLBACK": "self-signed"}, named=False
    )
    output = logs(server.container)
    assert "ACME: VPN_HOST: the CA could not validate" in output
    assert "serving a self-signed certificate meanwhile" in output
    own_ca = x509.load_pem_x509_certificate(server.ca_certificate())
    assert served_certificate(server).issuer == own_ca.subject  # not Pebble's
    client = lab.start_client(server, server_id=pebble.alias)  # trusts the server's own CA
    result = client.connect(USER, PASSWORD)
    assert result.connected, result.error
    server.remove()
