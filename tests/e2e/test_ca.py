"""Finding 5: a CA that signs nothing else, and its rotation (docs/security.md#the-servers-ca).

The attack: a copy of the volume gives ``/data/pki/ca.key``; with it an attacker runs a
server under another name whose certificate that key signed. Here the attacker's server is
this image itself, given the stolen key and a CA certificate of the same name and key without
constraints (what earlier versions made), so it issues itself a certificate for another name.
Clients are strongSwan with its ``constraints`` plugin, trusting only the real CA.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import docker
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
OTHER_HOST = "bank.example.test"  # a name the CA of HOST must not be able to vouch for
USER, PASSWORD = "alice", "Alice-ca-pw-1"
USERS = {"VPN_USERS": f"{USER}:{PASSWORD}", "VPN_DNS": "198.18.0.53"}


def start(
    lab: Lab,
    role: str,
    host: str,
    *,
    files: dict[str, bytes] | None = None,
    wait: bool = True,
    restart: str | None = "unless-stopped",
) -> Server:
    """A server named after its role, with that role's state volume."""
    return lab.start_server(
        {"VPN_HOST": host, **USERS},
        name=lab.name(role),
        volume=lab.name(f"{role}-data"),
        files=files,
        wait=wait,
        restart=restart,
    )


def logs(server: Server) -> str:
    return str(server.container.logs().decode(errors="replace"))


def unconstrained_twin(ca_pem: bytes, key_pem: bytes) -> bytes:
    """A CA certificate with the real one's name and key but no name constraints."""
    real = x509.load_pem_x509_certificate(ca_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(real.not_valid_before_utc)
        .not_valid_after(real.not_valid_after_utc)
    )
    for extension in real.extensions:
        if not isinstance(extension.value, x509.NameConstraints):
            builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def server(lab: Lab) -> Iterator[Server]:
    server = start(lab, "ca", HOST)
    yield server
    server.remove()


def test_a_client_trusting_the_new_ca_connects(lab: Lab, server: Server) -> None:
    ca = x509.load_pem_x509_certificate(server.ca_certificate())
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.DNSName(HOST)]
    client = lab.start_client(server)
    result = client.connect(USER, PASSWORD)
    assert result.connected, result.error
    client.remove()


def test_a_certificate_the_stolen_key_signs_for_another_name_is_refused(
    lab: Lab, server: Server
) -> None:
    ca_pem = server.ca_certificate()
    stolen_key = eng.read_file(server.container, "/data/pki/ca.key")
    twin = unconstrained_twin(ca_pem, stolen_key)
    rogue = start(
        lab, "rogue", OTHER_HOST, files={"/data/ca.crt": twin, "/data/pki/ca.key": stolen_key}
    )
    served = x509.load_pem_x509_certificate(eng.read_file(rogue.container, "/data/pki/server.crt"))
    assert served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == (
        x509.SubjectAlternativeName([x509.DNSName(OTHER_HOST)])
    )

    # A device that trusts the real CA, with strongSwan's name constraints checks loaded.
    victim = lab.start_client(rogue, ca_pem=ca_pem)
    plugins = eng.run_checked(victim.container, ["swanctl", "--stats"])
    assert " constraints " in f" {plugins.split('loaded plugins:')[1].split(chr(10))[0]} "
    refused = victim.connect(USER, PASSWORD)
    assert not refused.connected
    assert "name constraint" in victim.logs(200), victim.logs(40)

    # The same forgery against a CA without constraints, as earlier versions made it: the
    # attack works, so it is the constraints that stop it above.
    fooled = lab.start_client(rogue, ca_pem=twin)
    accepted = fooled.connect(USER, PASSWORD)
    assert accepted.connected, accepted.error
    for container in (victim, fooled, rogue):
        container.remove()


def data_files(server: Server) -> dict[str, str]:
    """Every file under /data but the PKI with its SHA-256, to show nothing else changed."""
    listing = eng.run_checked(
        server.container,
        [
            "sh",
            "-c",
            "find /data -type f ! -path '/data/pki/*' ! -path '/data/clients/*' "
            "! -name ca.crt -exec sha256sum {} +",
        ],
    )
    return {line.split()[1]: line.split()[0] for line in listing.splitlines()}


def test_rotation_refuses_old_ca_devices_after_the_restart_and_admits_new_ones(
    lab: Lab,
) -> None:
    server = start(lab, "rotate", HOST)
    old_ca = server.ca_certificate()
    old_device = lab.start_client(server)
    assert old_device.connect(USER, PASSWORD).connected
    added = eng.run_in(server.container, ["ikev2-vpn", "users", "add", "bob"])
    assert added.exit_code == 0, added.stderr
    before = data_files(server)
    assert "/data/users.json" in before

    rotated = eng.run_in(server.container, ["ikev2-vpn", "ca", "rotate"])
    assert rotated.exit_code == 0, rotated.stderr
    new_ca = server.ca_certificate()
    assert new_ca != old_ca
    fingerprint = x509.load_pem_x509_certificate(new_ca).fingerprint(hashes.SHA256())
    assert fingerprint.hex(":").upper() in rotated.stdout
    assert "restart the container" in rotated.stdout
    # Until the restart the server serves the old certificate: the tunnel stays up.
    assert old_device.tunnel() is not None
    for user in (USER, "bob"):
        assert eng.read_file(server.container, f"/data/clients/{user}/ca.crt") == new_ca
    retired = eng.run_checked(server.container, ["sh", "-c", "ls -d /data/pki/retired/*/"])
    kept = retired.split()[0]
    assert eng.read_file(server.container, f"{kept}ca.crt") == old_ca
    assert "CA rotated" in logs(server)  # the container's log records it

    server.restart()
    assert server.ca_certificate() == new_ca
    refused = old_device.connect(USER, PASSWORD, timeout_s=10)
    assert not refused.connected
    new_device = lab.start_client(server)  # imports the new ca.crt
    admitted = new_device.connect(USER, PASSWORD)
    assert admitted.connected, admitted.error
    assert data_files(server) == before  # users and everything else intact
    for container in (old_device, new_device, server):
        container.remove()


def test_a_new_vpn_host_stops_the_start_until_a_one_off_rotation(
    lab: Lab, engine: docker.DockerClient, image: str
) -> None:
    first = start(lab, "move", HOST)
    first.remove()
    moved = start(lab, "move", OTHER_HOST, wait=False, restart=None)
    assert moved.wait_exit() != 0
    assert (
        f"ikev2-vpn: error: VPN_HOST: {OTHER_HOST} is not a name the CA in /data/ca.crt may "
        f"sign for (only {HOST})"
    ) in logs(moved)
    moved.remove()

    # docker compose run --rm vpn ca rotate: a one-off container on the same volume.
    one_off = engine.containers.run(
        image,
        ["ca", "rotate"],
        environment={"VPN_HOST": OTHER_HOST, **USERS},
        volumes={lab.name("move-data"): {"bind": "/data", "mode": "rw"}},
        network_mode="none",
        labels=eng.labels(lab.run_id, "one-off"),
        detach=True,
    )
    try:
        assert one_off.wait(timeout=60)["StatusCode"] == 0, one_off.logs().decode()
        assert f"new CA for {OTHER_HOST}" in one_off.logs().decode()
    finally:
        one_off.remove(force=True)

    started = time.monotonic()
    again = start(lab, "move", OTHER_HOST)
    lab.log(f"restarted for {OTHER_HOST} in {time.monotonic() - started:.1f} s")
    result = lab.start_client(again).connect(USER, PASSWORD)
    assert result.connected, result.error
    again.remove()
