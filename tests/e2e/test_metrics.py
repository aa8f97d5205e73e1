"""The Prometheus endpoint (VPN_METRICS_PORT) of a real server, scraped the way Prometheus
would: over HTTP from a container on the server's egress network, never from the host.

A client connects and pings the target with a known number of bytes; the scrape after
shows one connected client, alice's SA, and traffic counters grown by at least that much
and not absurdly more. A wrong password raises the failed-login counter, the certificate
expiry is that of the certificate charon holds, the backend is userspace (no ESP in this
kernel). VPN clients cannot reach the endpoint through the tunnel, and a server without
the setting listens on no such port.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from docker.models.containers import Container
from prometheus_client.parser import text_string_to_metric_families

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.vpnclient import VpnClient
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
PASSWORD = b"metrics pw 7"
PORT = 9814
PINGS, PAYLOAD = 200, 1000  # each echo is an IPv4 packet of PAYLOAD + 28 bytes, each way
KNOWN_BYTES = PINGS * (PAYLOAD + 28)
# Besides the pings: the target's TCP report (a handful of packets, well under 2 KB).
SLACK_BYTES, SLACK_PACKETS = 4096, 20

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Runs in a container with the image's python3: fetch a URL, print status and body as JSON.
FETCH = """
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as answer:
        print(json.dumps({"status": answer.status, "body": answer.read().decode()}))
except OSError as error:
    print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
"""

# Runs in the server: the certificate charon holds with its private key (the one it serves).
SERVED_CERTIFICATE = """
import base64, socket, vici
sock = socket.socket(socket.AF_UNIX)
sock.connect("/var/run/charon.vici")
for cert in vici.Session(sock).list_certs({"type": "X509", "flag": "NONE"}):
    if cert.get("has_privkey") == b"yes":
        print(base64.b64encode(cert["data"]).decode())
"""


@dataclass(frozen=True)
class Setup:
    server: Server
    url: str
    scraper: Container  # on the server's egress network
    alice: VpnClient  # connected for the whole module


def fetch(container: Container, url: str, timeout_s: float = 10.0) -> dict[str, object]:
    result = eng.run_in(container, ["python3", "-c", FETCH, url, str(timeout_s)])
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(setup: Setup) -> Samples:
    answer = fetch(setup.scraper, setup.url)
    assert answer.get("status") == 200, answer
    return parse(str(answer["body"]))


def alice_says(samples: Samples, name: str) -> float:
    return samples[(f"ikev2_vpn_user_{name}", (("user", "alice"),))]


@pytest.fixture(scope="module")
def setup(lab: Lab) -> Iterator[Setup]:
    server = lab.start_server(
        {"VPN_HOST": HOST, "VPN_USER": "alice", "VPN_METRICS_PORT": str(PORT)},
        name=lab.name("metrics"),
        volume=lab.name("metrics-data"),
        secret_files={"VPN_PASSWORD_FILE": PASSWORD},
    )
    scraper = lab.target(server).container
    alice = lab.start_client(server)
    connected = alice.connect("alice", PASSWORD.decode())
    assert connected.connected, connected.error
    yield Setup(server, f"http://{server.egress().address}:{PORT}/metrics", scraper, alice)
    alice.remove()
    server.remove()


def test_known_traffic_shows_in_the_counters(lab: Lab, setup: Setup) -> None:
    before = scrape(setup)
    traffic = setup.alice.send_traffic(
        lab.target(setup.server), count=PINGS, timeout_s=2.0, size=PAYLOAD
    )
    assert traffic.icmp_received == PINGS, traffic
    after = scrape(setup)

    assert after[("ikev2_vpn_charon_up", ())] == 1
    assert after[("ikev2_vpn_connected_clients", ())] == 1
    assert alice_says(after, "ike_sas") == 1
    for direction in ("received", "sent"):  # from alice, to alice
        grown = alice_says(after, f"{direction}_bytes_total") - alice_says(
            before, f"{direction}_bytes_total"
        )
        assert KNOWN_BYTES <= grown <= KNOWN_BYTES + SLACK_BYTES, (direction, grown)
        packets = alice_says(after, f"{direction}_packets_total") - alice_says(
            before, f"{direction}_packets_total"
        )
        assert PINGS <= packets <= PINGS + SLACK_PACKETS, (direction, packets)
        total = after[(f"ikev2_vpn_{direction}_bytes_total", ())]
        assert total == alice_says(after, f"{direction}_bytes_total")  # alice is the only user
    print(f"alice: {KNOWN_BYTES} bytes pinged each way; counters: {after}")


def test_rekeys_neither_lose_nor_double_traffic(lab: Lab, setup: Setup) -> None:
    """A CHILD_SA rekey starts new counters, an IKE_SA rekey moves the CHILD_SA to a new
    IKE_SA: the user's counters go on from where they were, and alice stays one client."""
    target = lab.target(setup.server)
    before = scrape(setup)
    for ike in (False, True):
        assert setup.alice.rekey(ike=ike), setup.alice.logs(20)
        traffic = setup.alice.send_traffic(target, count=PINGS, timeout_s=2.0, size=PAYLOAD)
        assert traffic.icmp_received == PINGS, traffic
        samples = scrape(setup)
        assert samples[("ikev2_vpn_connected_clients", ())] == 1
        assert alice_says(samples, "ike_sas") == 1
    for direction in ("received", "sent"):
        name = f"{direction}_bytes_total"
        grown = alice_says(samples, name) - alice_says(before, name)
        assert 2 * KNOWN_BYTES <= grown <= 2 * (KNOWN_BYTES + SLACK_BYTES), (direction, grown)


def test_a_wrong_password_raises_the_failed_login_counter(lab: Lab, setup: Setup) -> None:
    before = scrape(setup)[("ikev2_vpn_failed_logins_total", ())]
    intruder = lab.start_client(setup.server)
    refused = intruder.connect("alice", "not the password")
    assert not refused.connected
    intruder.remove()
    deadline = time.monotonic() + 20  # the login watch follows charon's log by itself
    while True:
        samples = scrape(setup)
        failed = samples[("ikev2_vpn_failed_logins_total", ())]
        if failed == before + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert failed == before + 1
    assert samples[("ikev2_vpn_connected_clients", ())] == 1  # the refused login is no client


def test_certificate_expiry_and_backend_are_those_in_use(setup: Setup) -> None:
    served = eng.run_checked(setup.server.container, ["python3", "-c", SERVED_CERTIFICATE])
    [leaf] = [x509.load_der_x509_certificate(base64.b64decode(b64)) for b64 in served.split()]
    samples = scrape(setup)
    expiry = samples[("ikev2_vpn_certificate_expiry_timestamp_seconds", ())]
    assert expiry == leaf.not_valid_after_utc.timestamp()
    assert samples[("ikev2_vpn_backend_info", (("backend", "userspace"),))] == 1
    assert not any(
        name == "ikev2_vpn_backend_info" and labels != (("backend", "userspace"),)
        for name, labels in samples
    )


def test_vpn_clients_cannot_reach_the_endpoint_through_the_tunnel(lab: Lab, setup: Setup) -> None:
    # The tunnel works (the target answers) and the endpoint answers from the egress
    # network: only the client-access rules stand between the client and the endpoint.
    target = lab.target(setup.server)
    assert setup.alice.send_traffic(target, count=1).tcp_source == setup.server.egress().address
    assert fetch(setup.scraper, setup.url).get("status") == 200
    answer = fetch(setup.alice.container, setup.url, timeout_s=3.0)
    assert "status" not in answer, answer
    assert "timed out" in str(answer.get("error")), answer  # dropped, not refused


def test_a_server_without_the_setting_has_no_metrics_port(lab: Lab, setup: Setup) -> None:
    plain = lab.start_server(
        {"VPN_HOST": HOST, "VPN_USER": "alice"},
        name=lab.name("no-metrics"),
        volume=lab.name("no-metrics-data"),
        secret_files={"VPN_PASSWORD_FILE": PASSWORD},
    )
    try:
        answer = fetch(setup.scraper, f"http://{plain.egress().address}:{PORT}/metrics")
        assert "Connection refused" in str(answer.get("error")), answer
        assert "metrics" not in plain.logs(200).replace("VPN_METRICS_PORT=(off)", "")
    finally:
        plain.remove()


def test_the_start_up_log_names_the_endpoint(setup: Setup) -> None:
    assert f"metrics: Prometheus endpoint on TCP port {PORT}, path /metrics" in setup.server.logs(
        200
    )
