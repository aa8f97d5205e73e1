"""The web console's API (VPN_WEB_PORT) on a real server, driven with requests from the host
over HTTPS, trusting only the server's own CA; real strongSwan clients log in.

What an orchestrator notices: a user added through the API connects at once with the
returned password and shows up online with its virtual IP, address and traffic; disabling
and removing it end its tunnel; a static IP set through the API is the one the next login
gets; profiles download; wrong credentials get 401 and, repeated, a ban (403) while other
addresses keep working; nothing of the admin password reaches the log, and a server
without the setting opens no such port.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from docker.models.containers import Container
from requests.adapters import HTTPAdapter

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_helper.users import run_users
from ikev2_vpn_helper.vpnclient import VpnClient, address_on
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
PORT = 8443
ADMIN_PASSWORD = "web console pw 1"
ALICE_PW = "Alice-pw-web-1"
STATIC_BLOCK = "10.10.10.192/26"
STATIC_IP = "10.10.10.200"
BAN_AFTER = 3


class _ServerName(HTTPAdapter):
    """Connect to the server's address, but check its certificate for HOST (no DNS here)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = HOST
        kwargs["assert_hostname"] = HOST
        super().init_poolmanager(*args, **kwargs)


@dataclass
class Api:
    base: str
    ca_file: Path
    session: requests.Session

    def call(
        self, method: str, path: str, *, password: str = ADMIN_PASSWORD, **kwargs: Any
    ) -> requests.Response:
        return self.session.request(
            method,
            self.base + path,
            auth=("admin", password),
            verify=str(self.ca_file),
            timeout=30,
            **kwargs,
        )

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        answer = self.call(method, path, **kwargs)
        assert answer.status_code == status, (answer.status_code, answer.text)
        return answer.json()

    def user(self, name: str) -> dict[str, Any]:
        users = {u["name"]: u for u in self.ok("GET", "/api/users")["users"]}
        return dict(users[name])


@dataclass(frozen=True)
class Setup:
    server: Server
    api: Api


def api_for(server: Server, tmp: Path) -> Api:
    ca_file = tmp / "ca.pem"
    ca_file.write_bytes(server.ca_certificate())
    session = requests.Session()
    session.trust_env = False  # no proxy from the host's environment: straight to the lab
    session.mount("https://", _ServerName())
    return Api(f"https://{server.egress().address}:{PORT}", ca_file, session)


@pytest.fixture(scope="module")
def setup(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    server = lab.start_server(
        {
            "VPN_HOST": HOST,
            "VPN_USER": "alice",
            "VPN_POOL_V4_STATIC": STATIC_BLOCK,
            "VPN_WEB_PORT": str(PORT),
            "VPN_BAN_AFTER": str(BAN_AFTER),
        },
        name=lab.name("web"),
        volume=lab.name("web-data"),
        secret_files={
            "VPN_PASSWORD_FILE": ALICE_PW.encode(),
            "VPN_WEB_PASSWORD_FILE": ADMIN_PASSWORD.encode(),
        },
    )
    yield Setup(server, api_for(server, tmp_path_factory.mktemp("web")))
    server.remove()


def wait_for(check: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def passes_traffic(lab: Lab, server: Server, client: VpnClient) -> bool:
    traffic = client.send_traffic(lab.target(server), count=2, timeout_s=2)
    return traffic.icmp_received > 0


def test_an_added_user_connects_and_shows_online_then_removal_ends_its_tunnel(
    lab: Lab, setup: Setup
) -> None:
    api, server = setup.api, setup.server
    created = api.ok("POST", "/api/users", 201, json={"name": "bob"})
    password = created["password"]
    assert len(password) >= 16
    assert not api.user("bob")["online"]

    bob = lab.start_client(server)
    connected = bob.connect("bob", password)
    assert connected.connected, connected.error
    assert bob.send_traffic(lab.target(server), count=20, timeout_s=2, size=500).icmp_received
    online = api.user("bob")
    assert online["online"], online
    (session,) = online["sessions"]
    assert session["virtual_ips"] == [connected.virtual_ip]
    assert session["remote"].split(":")[0] == bob_address(bob, lab)
    assert session["bytes_in"] >= 20 * 528 and session["bytes_out"] >= 20 * 528
    assert online["last_seen"]

    removed = api.ok("DELETE", "/api/users/bob")
    assert removed == {"name": "bob", "removed": True, "ended": 1}
    assert "bob" not in {u["name"] for u in api.ok("GET", "/api/users")["users"]}
    assert not passes_traffic(lab, server, bob)
    assert not bob.connect("bob", password, timeout_s=15).connected
    bob.remove()
    assert password not in server.container.logs().decode()


def bob_address(client: VpnClient, lab: Lab) -> str:
    return address_on(client.container, lab.topology.wan)


def test_disable_ends_the_tunnel_and_enable_lets_the_user_in_with_its_static_ip(
    lab: Lab, setup: Setup
) -> None:
    api, server = setup.api, setup.server
    api.ok("POST", "/api/users", 201, json={"name": "carol", "password": "Carol-pw-1"})
    answer = api.ok("PUT", "/api/users/carol/static-ip", json={"address": STATIC_IP})
    assert answer["static_ip"] == STATIC_IP
    carol = lab.start_client(server)
    first = carol.connect("carol", "Carol-pw-1")
    assert first.connected, first.error
    assert first.virtual_ip == STATIC_IP

    assert api.ok("POST", "/api/users/carol/disable")["ended"] == 1
    assert api.user("carol")["disabled"]
    assert not passes_traffic(lab, server, carol)
    assert not carol.connect("carol", "Carol-pw-1", timeout_s=15).connected

    api.ok("POST", "/api/users/carol/enable")
    again = carol.connect("carol", "Carol-pw-1")
    assert again.connected, again.error
    assert again.virtual_ip == STATIC_IP
    carol.remove()


def test_profiles_and_the_server_are_served(setup: Setup) -> None:
    api = setup.api
    api.ok("POST", "/api/users", 201, json={"name": "dave"})
    answer = api.call("GET", "/api/users/dave/profiles/apple.mobileconfig")
    assert answer.status_code == 200
    assert b"<string>dave</string>" in answer.content
    assert api.call("GET", "/api/users/dave/profiles/..%2F..%2Fusers.json").status_code == 404
    server = api.ok("GET", "/api/server")
    assert server["identity"] == HOST
    assert server["ipsec_backend"] == "userspace"
    assert server["ca_fingerprint"]
    assert server["uptime_s"] >= 0


def test_the_cli_and_the_api_see_the_same_users(setup: Setup) -> None:
    """`ikev2-vpn users disable` in the container and the API are one code path."""
    api, server = setup.api, setup.server
    api.ok("POST", "/api/users", 201, json={"name": "frank"})
    disabled = run_users(server.container, ["disable", "frank"], None)
    assert disabled.exit_code == 0, disabled.stderr
    assert disabled.stdout.strip() == "disabled user frank"
    assert api.user("frank")["disabled"]
    listed = run_users(server.container, ["list", "--json"], None)
    assert {"name": "frank", "origin": "managed", "static_ip": "", "disabled": True} in (
        json.loads(listed.stdout)
    )
    api.ok("POST", "/api/users/frank/enable")
    assert "(disabled)" not in run_users(server.container, ["list"], None).stdout


def test_bad_input_is_refused_with_one_line(setup: Setup) -> None:
    api = setup.api
    for body, message in (
        ({"name": "two words"}, "user name 'two words' is not allowed"),
        ({"name": "alice"}, "already exists"),
    ):
        answer = api.call("POST", "/api/users", json=body)
        assert answer.status_code in {400, 409}
        assert message in answer.json()["error"]
    answer = api.call("PUT", "/api/users/alice/password", json={"password": "x" * 20})
    assert answer.status_code == 400
    assert "declared in VPN_USER" in answer.json()["error"]
    answer = api.call("PUT", "/api/users/dave/static-ip", json={"address": "10.10.10.5"})
    assert answer.status_code == 400
    assert "not in VPN_POOL_V4_STATIC" in answer.json()["error"]


def test_wrong_passwords_get_401_then_a_ban_for_that_address_only(lab: Lab, setup: Setup) -> None:
    api, server = setup.api, setup.server
    prober = lab.target(server).container  # on the egress network: not the host's address
    url = f"https://{server.egress().address}:{PORT}/api/server"
    codes = [status_from(prober, url, "admin:wrong-password-1") for _ in range(BAN_AFTER)]
    assert codes == [401] * BAN_AFTER
    assert status_from(prober, url, f"admin:{ADMIN_PASSWORD}") == 403
    assert api.ok("GET", "/api/server")["failed_logins"]["console"] >= BAN_AFTER
    logs = server.container.logs().decode()
    assert "failed admin login" in logs
    assert "banned" in logs
    assert ADMIN_PASSWORD not in logs
    assert "wrong-password-1" not in logs


# Runs in a lab container (python3 from Debian): an HTTPS GET with Basic credentials,
# without checking the certificate (the status is what this test looks at).
STATUS = """
import base64, ssl, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
request.add_header("Authorization", "Basic " + base64.b64encode(sys.argv[2].encode()).decode())
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
try:
    print(urllib.request.urlopen(request, context=context, timeout=10).status)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def status_from(container: Container, url: str, credentials: str) -> int:
    out = eng.run_checked(container, ["python3", "-c", STATUS, url, credentials])
    return int(out.strip())


def test_plain_http_gets_no_answer(setup: Setup) -> None:
    with socket.create_connection((setup.server.egress().address, PORT), timeout=5) as sock:
        sock.sendall(b"GET /api/server HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        try:
            answer = sock.recv(100)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200")
    assert b"identity" not in answer


def test_a_server_without_the_setting_opens_no_console(lab: Lab) -> None:
    plain = lab.start_server(
        {"VPN_HOST": HOST, "VPN_USER": "alice"},
        name=lab.name("no-web"),
        volume=lab.name("no-web-data"),
        secret_files={"VPN_PASSWORD_FILE": ALICE_PW.encode()},
    )
    try:
        with pytest.raises(OSError):
            socket.create_connection((plain.egress().address, PORT), timeout=3).close()
    finally:
        plain.remove()


@pytest.mark.parametrize(
    ("env", "files", "expected"),
    [
        (
            {"VPN_WEB_PORT": str(PORT)},
            {},
            "VPN_WEB_PASSWORD: is not set, and VPN_WEB_PORT needs the console's admin password",
        ),
        (
            {"VPN_WEB_PORT": str(PORT)},
            {"VPN_WEB_PASSWORD_FILE": b"too-short\n"},
            "VPN_WEB_PASSWORD_FILE: the password has fewer than 12 characters",
        ),
        (
            {"VPN_WEB_PORT": "80"},
            {"VPN_WEB_PASSWORD_FILE": ADMIN_PASSWORD.encode()},
            "VPN_WEB_PORT: 80 is the container's HTTP port",
        ),
    ],
    ids=["no password", "short password", "port 80"],
)
def test_bad_console_settings_stop_the_server_with_one_line(
    lab: Lab, env: dict[str, str], files: dict[str, bytes], expected: str
) -> None:
    server = lab.start_server(
        {"VPN_HOST": HOST, "VPN_USER": "alice", **env},
        name=lab.name("web-bad"),
        volume=lab.name("web-bad-data"),
        secret_files={"VPN_PASSWORD_FILE": ALICE_PW.encode(), **files},
        wait=False,
        restart=None,
    )
    try:
        assert server.wait_exit() == 2
        output = server.container.logs().decode()
        errors = [line for line in output.splitlines() if "error:" in line]
        assert len(errors) == 1, output
        assert expected in errors[0]
        assert "too-short" not in output
        assert ADMIN_PASSWORD not in output
    finally:
        server.remove()
