"""VPN_CERT=files with a broken file: the container stops at once (exit status 2) with one
line naming the setting of the file to fix, before charon starts."""

from __future__ import annotations

import pytest

from ikev2_vpn.defaults import SYSCTLS
from ikev2_vpn.state import pki
from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import CAPABILITIES, DEVICES, Server
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
CERT, KEY = "/certs/fullchain.pem", "/certs/privkey.pem"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A working certificate (with its CA) and key for HOST."""
    directory = tmp_path_factory.mktemp("pki")
    pki.ensure_self_signed(directory, HOST)
    cert = (directory / "pki" / "server.crt").read_bytes() + (directory / "ca.crt").read_bytes()
    return cert, (directory / "pki" / "server.key").read_bytes()


def start_with_files(lab: Lab, role: str, files: list[eng.FileSpec]) -> Server:
    """A server whose files keep the modes given (the lab's servers get 0600 files)."""
    container = lab.engine.containers.create(
        lab.image,
        name=lab.name(role),
        environment={"VPN_HOST": HOST, "VPN_CERT": "files", "VPN_USERS": "f:Files-pw"},
        cap_add=list(CAPABILITIES),
        devices=list(DEVICES),
        sysctls=dict(SYSCTLS),
        labels=eng.labels(lab.run_id, "server"),
        network=lab.topology.egress,
        detach=True,
    )
    eng.put_files(container, files)
    container.start()
    return Server(container)


CASES = {
    "truncated certificate": ("cert", 0o600, "VPN_CERT_PATH: /certs/fullchain.pem is cut off"),
    "truncated key": ("key", 0o600, "VPN_KEY_PATH: /certs/privkey.pem is cut off"),
    "world-readable key": (None, 0o644, "VPN_KEY_PATH: /certs/privkey.pem is readable by every"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_broken_file_stops_the_server_with_one_line(
    lab: Lab, made: tuple[bytes, bytes], case: str
) -> None:
    cut, key_mode, expected = CASES[case]
    cert, key = made
    # Three quarters: inside the CA's block, whatever the two certificates' sizes.
    files = [
        eng.FileSpec(CERT, cert[: len(cert) * 3 // 4] if cut == "cert" else cert, 0o644),
        eng.FileSpec(KEY, key[: len(key) // 2] if cut == "key" else key, key_mode),
    ]
    server = start_with_files(lab, "cert-" + case.replace(" ", "-"), files)
    try:
        assert server.wait_exit() == 2
        output = server.container.logs(stdout=True, stderr=True).decode(errors="replace")
        errors = [line for line in output.splitlines() if "error:" in line]
        assert len(errors) == 1, output
        assert expected in errors[0]
        assert "charon started" not in output
        assert "PRIVATE KEY" not in output
    finally:
        server.container.remove(force=True, v=True)


def test_the_same_files_intact_are_accepted(lab: Lab, made: tuple[bytes, bytes]) -> None:
    """The control: the refusals above are about the damage, not the files."""
    cert, key = made
    server = start_with_files(
        lab, "cert-intact", [eng.FileSpec(CERT, cert, 0o644), eng.FileSpec(KEY, key, 0o600)]
    )
    try:
        server.wait_healthy()
    finally:
        server.container.remove(force=True, v=True)
