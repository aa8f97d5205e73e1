"""`docker compose up -d` with the repository's compose.yaml starts a working server.

Runs the real compose tool (v2 `docker compose` when present, else Debian's v1
`docker-compose`) through pytest-docker, then connects a client through the result.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.topology import free_lab_subnet
from ikev2_vpn_lab.lab import Lab

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "compose-pw #1"
WEB_PASSWORD = "compose console pw 1"


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    if (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return "docker compose"
    if shutil.which("docker-compose"):
        return "docker-compose"
    pytest.fail("neither `docker compose` nor `docker-compose` is installed", pytrace=False)


@pytest.fixture(scope="session")
def docker_compose_file() -> list[str]:
    return [str(ROOT / "compose.yaml"), str(ROOT / "tests" / "e2e" / "compose.test.yaml")]


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"ikev2-vpn-test-{eng.new_run_id()}"


@pytest.fixture(scope="session")
def compose_environment(engine: docker.DockerClient, image: str) -> Iterator[None]:
    """What an operator would put in .env, plus the image under test and a free subnet."""
    subnet = free_lab_subnet(engine)
    values = {
        "VPN_IMAGE": image,
        "VPN_TEST_SUBNET": str(subnet),
        "VPN_HOST": "vpn.example.test",
        "VPN_DNS": "203.0.113.53",
        "VPN_USER": "compose",
        "VPN_PASSWORD": PASSWORD,
        # The host's port 80 may be taken on a CI machine: publish HTTP-01 on a free port.
        "VPN_HTTP_PORT": str(_free_tcp_port()),
        "VPN_HTTPS_PORT": str(_free_tcp_port()),
        # The console, as the README's command turns it on.
        "VPN_WEB_PORT": "8443",
        "VPN_WEB_PASSWORD": WEB_PASSWORD,
        "VPN_WEB_HOST_PORT": str(_free_tcp_port()),
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def docker_setup(compose_environment: None) -> list[str]:
    return ["up -d"]  # the image is built by tests/run; this host cannot pull a base


def test_compose_up_starts_a_healthy_working_server(
    engine: docker.DockerClient,
    image: str,
    docker_services: object,
    docker_compose_project_name: str,
) -> None:
    containers = engine.containers.list(
        filters={"label": f"com.docker.compose.project={docker_compose_project_name}"}
    )
    assert len(containers) == 1
    server = Server(containers[0], hide=[PASSWORD])
    server.wait_healthy()

    host = server.container.attrs["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapAdd"] == ["NET_ADMIN"]
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    published = host["PortBindings"]
    assert set(published) == {"500/udp", "4500/udp", "80/tcp", "443/tcp", "8443/tcp"}
    assert published["80/tcp"][0]["HostPort"] == os.environ["VPN_HTTP_PORT"]
    assert published["443/tcp"][0]["HostPort"] == os.environ["VPN_HTTPS_PORT"]
    assert published["8443/tcp"][0]["HostPort"] == os.environ["VPN_WEB_HOST_PORT"]
    console = console_server_page(server, int(os.environ["VPN_WEB_HOST_PORT"]))
    assert console["identity"] == "vpn.example.test", console
    mounts = {m["Destination"]: m for m in server.container.attrs["Mounts"]}
    assert mounts["/data"]["Type"] == "volume"

    with Lab(engine, image=image) as lab:
        report = lab.check(server, "compose", PASSWORD)
    assert report.ok, [f for f in report.findings if not f.ok]
    assert report.connection.dns == ["203.0.113.53"]


def console_server_page(server: Server, port: int) -> dict[str, object]:
    """`GET /api/server` from the host through the published console port, as an operator's
    curl does: HTTPS checked against the server's CA and VPN_HOST, admin's password."""
    context = ssl.create_default_context(cadata=server.ca_certificate().decode())
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    with context.wrap_socket(raw, server_hostname="vpn.example.test") as sock:
        credentials = base64.b64encode(f"admin:{WEB_PASSWORD}".encode()).decode()
        sock.sendall(
            b"GET /api/server HTTP/1.1\r\nHost: vpn.example.test\r\nConnection: close\r\n"
            + f"Authorization: Basic {credentials}\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    page: dict[str, object] = json.loads(body)
    return page
