"""The web console and API (Flask's test client; charon is a fake VICI session): what an
operator or an orchestrator sees, and what an attacker without the password does not get."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from ikev2_vpn import render
from ikev2_vpn.run.users_live import ServerFacts
from ikev2_vpn.run.web import Console, create_app, read_sessions, server_info
from ikev2_vpn.settings import PasswordHash, Settings, load_settings
from ikev2_vpn.state.users import STORE_NAME

PASSWORD = "correct horse battery"
BASE = "https://vpn.example.test"
FACTS = ServerFacts(host="vpn.example.test", esp_gcm=True, ca_pem=None)


class FakeVici:
    """charon: one session of bob's, and what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.sas: list[dict[str, Any]] = [
            {
                "ikev2-vpn": {
                    "uniqueid": b"7",
                    "state": b"ESTABLISHED",
                    "remote-id": b"198.51.100.7",
                    "remote-eap-id": b"bob",
                    "remote-host": b"198.51.100.7",
                    "remote-port": b"4500",
                    "remote-vips": [b"10.10.10.1"],
                    "established": b"42",
                    "child-sas": {"ikev2-vpn-1": {"bytes-in": b"1000", "bytes-out": b"2000"}},
                }
            },
            {"ikev2-vpn": {"uniqueid": b"8", "state": b"CONNECTING", "remote-id": b"x"}},
        ]

    def __getattr__(self, name: str) -> Any:  # load_shared, unload_conn, ...
        if not name.startswith(("load_", "unload_")):
            raise AttributeError(name)

        def record(argument: Any) -> None:
            self.calls.append((name, argument))

        return record

    def list_sas(self, filters: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        yield from self.sas

    def terminate(self, sa: dict[str, Any]) -> Iterable[dict[str, Any]]:
        self.calls.append(("terminate", sa["ike-id"]))
        return iter(())


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)


@pytest.fixture
def vici() -> FakeVici:
    return FakeVici()


@pytest.fixture
def console(tmp_path: Path, vici: FakeVici, monkeypatch: pytest.MonkeyPatch) -> Console:
    monkeypatch.setattr("ikev2_vpn.run.users_live.write_users_configuration", lambda _t: None)
    settings = Settings(
        users="alice:Alice-pw",
        pool_v4_static="10.10.10.192/26",
        web_port=8443,
        web_password=PASSWORD,
        ban_after=3,
    )
    return Console(
        settings,
        server_info("userspace", "compatible", ["10.10.10.0/24"]),
        lambda: vici,
        data_dir=tmp_path,
        facts=lambda: FACTS,
    )


@pytest.fixture
def client(console: Console) -> FlaskClient:
    return browser(create_app(console))


class HttpsClient(FlaskClient):
    """A browser that talks HTTPS to vpn.example.test (the cookie is Secure)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("base_url", BASE)
        kwargs.setdefault("headers", {}).setdefault("Referer", BASE + "/")  # as browsers do
        return super().open(*args, **kwargs)


def browser(app: Any) -> FlaskClient:
    app.test_client_class = HttpsClient
    client: FlaskClient = app.test_client()
    return client


def basic(password: str = PASSWORD, user: str = "admin") -> dict[str, str]:
    import base64

    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def csrf_token(client: FlaskClient, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def logged_in(client: FlaskClient) -> FlaskClient:
    token = csrf_token(client, "/login")
    answer = client.post("/login", data={"password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 302
    return client


# --- the API ------------------------------------------------------------------------------------


def test_the_api_wants_the_admin_password(client: FlaskClient) -> None:
    for headers in ({}, basic("wrong password!"), basic(PASSWORD, user="root")):
        answer = client.get("/api/users", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Basic ")
        assert PASSWORD not in answer.get_data(as_text=True)
    assert client.get("/api/users", headers=basic()).status_code == 200


def test_failed_logins_are_counted_and_ban_the_source(
    client: FlaskClient, console: Console
) -> None:
    for _ in range(3):  # VPN_BAN_AFTER=3
        assert client.get("/api/server", headers=basic("wrong password!")).status_code == 401
    answer = client.get("/api/server", headers=basic())
    assert answer.status_code == 403
    assert "too many failed logins" in answer.get_data(as_text=True)
    assert console.counters.admin_failed == 3
    other = client.get("/api/server", headers=basic(), environ_base={"REMOTE_ADDR": "198.18.0.9"})
    assert other.status_code == 200
    assert other.get_json()["failed_logins"]["console"] == 3


def test_users_come_with_their_live_sessions(client: FlaskClient) -> None:
    created = client.post("/api/users", headers=basic(), json={"name": "bob"})
    assert created.status_code == 201
    assert len(created.get_json()["password"]) >= 16  # generated, returned this once
    users = {u["name"]: u for u in client.get("/api/users", headers=basic()).get_json()["users"]}
    assert users["alice"]["origin"] == "env"
    assert not users["alice"]["online"]
    bob = users["bob"]
    assert bob["origin"] == "managed"
    assert bob["online"]
    (session,) = bob["sessions"]
    assert session["virtual_ips"] == ["10.10.10.1"]
    assert session["remote"] == "198.51.100.7:4500"
    assert (session["bytes_in"], session["bytes_out"]) == (1000, 2000)
    assert bob["last_seen"] is not None


def test_changes_reach_charon_like_the_cli(
    client: FlaskClient, vici: FakeVici, tmp_path: Path
) -> None:
    assert client.post(
        "/api/users", headers=basic(), json={"name": "bob", "password": "pw"}
    ).get_json() == {"name": "bob"}
    assert ("load_shared", render.shared_secret(_account(tmp_path, "bob"))) in vici.calls
    answer = client.put(
        "/api/users/bob/static-ip", headers=basic(), json={"address": "10.10.10.200"}
    )
    assert answer.get_json() == {"name": "bob", "static_ip": "10.10.10.200", "ended": 1}
    assert client.post("/api/users/bob/disable", headers=basic()).get_json()["disabled"] is True
    assert json.loads((tmp_path / STORE_NAME).read_text())["users"]["bob"]["disabled"] is True
    assert client.post("/api/users/bob/enable", headers=basic()).get_json()["disabled"] is False
    vici.calls.clear()
    answer = client.delete("/api/users/bob", headers=basic())
    assert answer.get_json() == {"name": "bob", "removed": True, "ended": 1}
    assert ("terminate", "7") in vici.calls
    assert client.delete("/api/users/bob", headers=basic()).status_code == 404


def _account(data_dir: Path, name: str) -> Any:
    from ikev2_vpn.state.users import load_store

    return load_store(data_dir).account(name)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("post", "/api/users", {"name": "no spaces"}, 400, "user name 'no spaces' is not allowed"),
        ("post", "/api/users", {"name": 7}, 400, "name: missing or not a string"),
        ("post", "/api/users", {"name": "alice"}, 409, "already exists"),
        ("post", "/api/users", {"name": "bob", "password": 5}, 400, "password: not a string"),
        ("put", "/api/users/alice/password", {}, 400, "declared in VPN_USERS"),
        ("put", "/api/users/nobody/password", {}, 404, "there is no user 'nobody'"),
        ("put", "/api/users/alice/static-ip", {"address": "10.0.0.300"}, 400, "not an IPv4"),
        ("put", "/api/users/alice/static-ip", {"address": "10.10.10.5"}, 400, "not in VPN_POOL"),
        ("post", "/api/users", [1], 400, "not a JSON object"),
    ],
)
def test_bad_input_gets_one_line(
    client: FlaskClient, method: str, path: str, body: Any, *, status: int, message: str
) -> None:
    answer = getattr(client, method)(path, headers=basic(), json=body)
    assert answer.status_code == status
    error = answer.get_json()["error"]
    assert message in error
    assert "\n" not in error


def test_profiles_are_served_from_the_users_folder_only(
    client: FlaskClient, tmp_path: Path
) -> None:
    client.post("/api/users", headers=basic(), json={"name": "bob"})
    answer = client.get("/api/users/bob/profiles/apple.mobileconfig", headers=basic())
    assert answer.status_code == 200
    assert b"PayloadContent" in answer.get_data()
    assert "attachment" in answer.headers["Content-Disposition"]
    for wrong in ("../../users.json", "..%2f..%2fusers.json", "nothing.txt"):
        assert client.get(f"/api/users/bob/profiles/{wrong}", headers=basic()).status_code == 404
    assert (
        client.get("/api/users/nobody/profiles/apple.mobileconfig", headers=basic()).status_code
        == 404
    )


def test_the_server_is_described(client: FlaskClient) -> None:
    server = client.get("/api/server", headers=basic()).get_json()
    assert server["identity"] == "vpn.example.test"
    assert server["ipsec_backend"] == "userspace"
    assert server["ike_sas"] == 2
    assert server["pools"] == ["10.10.10.0/24"]


# --- pages --------------------------------------------------------------------------------------


def test_pages_want_a_login_and_set_a_strict_cookie(client: FlaskClient) -> None:
    answer = client.get("/users")
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith("/login")
    token = csrf_token(client, "/login")
    wrong = client.post("/login", data={"password": "guess guess guess", "csrf_token": token})
    assert wrong.status_code == 401
    assert "Wrong password" in wrong.get_data(as_text=True)
    right = client.post("/login", data={"password": PASSWORD, "csrf_token": token})
    cookie = right.headers["Set-Cookie"]
    assert cookie.startswith("__Host-session=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    page = client.get("/users")
    assert page.status_code == 200
    assert 'http-equiv="refresh"' in page.get_data(as_text=True)


def test_forms_without_the_csrf_token_are_refused(client: FlaskClient, vici: FakeVici) -> None:
    logged_in(client)
    assert client.post("/login", data={"password": PASSWORD}).status_code == 400
    answer = client.post("/users", data={"name": "mallory"})
    assert answer.status_code == 400
    assert "CSRF" in answer.get_data(as_text=True)
    assert not vici.calls
    api = client.post("/api/users", json={"name": "mallory"})  # the session, no token
    assert api.status_code == 400


def test_adding_a_user_shows_the_password_once(client: FlaskClient) -> None:
    logged_in(client)
    token = csrf_token(client, "/users")
    page = client.post("/users", data={"name": "bob", "csrf_token": token}).get_data(as_text=True)
    password = re.search(r'<p class="secret" id="password">([^<]+)</p>', page)
    assert password
    users = client.get("/users").get_data(as_text=True)
    assert 'id="user-bob" class="online"' in users
    assert password.group(1) not in users


def test_every_answer_carries_the_security_headers(client: FlaskClient) -> None:
    for answer in (client.get("/login"), client.get("/api/users")):
        headers = answer.headers
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert "script-src" not in headers["Content-Security-Policy"]  # none at all
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        assert headers["Cache-Control"] == "no-store"


def test_a_qr_link_serves_one_profile_then_ends(client: FlaskClient) -> None:
    logged_in(client)
    client.post("/api/users", headers=basic(), json={"name": "bob"})
    page = client.get("/users/bob/share").get_data(as_text=True)
    link = re.search(r'id="link">([^<]+)</a>', page)
    assert link
    url = link.group(1).removeprefix(BASE)
    qr = client.get(re.search(r'src="(/qr/[^"]+)"', page).group(1))  # type: ignore[union-attr]
    assert qr.data.startswith(b"\x89PNG")
    stranger = create_app_client_like(client)
    listing = stranger.get(url).get_data(as_text=True)
    assert "apple.mobileconfig" in listing
    profile = stranger.get(url + "apple.mobileconfig")
    assert profile.status_code == 200
    assert b"<string>bob</string>" in profile.data
    assert stranger.get(url + "apple.mobileconfig").status_code == 404


def create_app_client_like(client: FlaskClient) -> FlaskClient:
    """A second browser (no session) on the same application."""
    return browser(client.application)


def test_sessions_are_read_from_established_sas_only() -> None:
    from datetime import UTC, datetime

    sessions = read_sessions(FakeVici().sas, datetime(2026, 1, 1, tzinfo=UTC))
    assert [s.user for s in sessions] == ["bob"]
    assert sessions[0].since.isoformat() == "2025-12-31T23:59:18+00:00"


# --- settings -----------------------------------------------------------------------------------


def _errors(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    from ikev2_vpn.errors import ConfigErrors

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigErrors) as caught:
        load_settings()
    return [error.line() for error in caught.value.errors]


def test_the_console_needs_a_long_password(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _errors(monkeypatch, VPN_WEB_PORT="8443") == [
        "VPN_WEB_PASSWORD: is not set, and VPN_WEB_PORT needs the console's admin password; "
        "set VPN_WEB_PASSWORD_FILE (or VPN_WEB_PASSWORD) to 12 or more characters"
    ]
    (line,) = _errors(monkeypatch, VPN_WEB_PASSWORD="elevenchars")
    assert line.startswith("VPN_WEB_PASSWORD: the password has fewer than 12 characters")
    assert "elevenchars" not in line


def test_the_password_is_kept_only_as_a_hash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "web-password"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.setenv("VPN_WEB_PORT", "8443")
    monkeypatch.setenv("VPN_WEB_PASSWORD_FILE", str(secret))
    settings = load_settings()
    assert isinstance(settings.web_password, PasswordHash)
    assert settings.web_password.matches(PASSWORD)
    assert not settings.web_password.matches(PASSWORD + "x")
    dumped = repr(settings) + repr(settings.model_dump())
    assert PASSWORD not in dumped
    assert "correct" not in dumped


def test_the_console_and_metrics_need_two_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    (line,) = _errors(
        monkeypatch, VPN_WEB_PORT="9814", VPN_METRICS_PORT="9814", VPN_WEB_PASSWORD=PASSWORD
    )
    assert line.startswith("VPN_WEB_PORT: 9814 is also VPN_METRICS_PORT")
    (line,) = _errors(monkeypatch, VPN_WEB_PORT="80")
    assert line.startswith("VPN_WEB_PORT: 80 is the container's HTTP port")


# --- HTTPS ----------------------------------------------------------------------------------------


def test_the_console_speaks_https_only_and_takes_a_renewed_certificate(
    console: Console, tmp_path: Path
) -> None:
    import dataclasses
    import socket
    import ssl

    from certfactory import own_ca_credentials
    from cryptography import x509

    def credentials(name: str) -> Any:
        made = own_ca_credentials(name)
        key = tmp_path / f"{name}.key"
        key.write_bytes(made.key_pem)
        return dataclasses.replace(made, key_path=key)

    first, renewed = credentials("first"), credentials("renewed")
    server = console.serve(0, first)
    try:
        served = ssl.get_server_certificate(("127.0.0.1", server.port), timeout=5)
        assert x509.load_pem_x509_certificate(served.encode()) == first.leaf
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:
            plain.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = plain.recv(100)
            except (TimeoutError, ConnectionResetError):
                answer = b""
        assert not answer.startswith(b"HTTP/")  # no plain HTTP answer
        console.use_certificate(renewed)
        served = ssl.get_server_certificate(("127.0.0.1", server.port), timeout=5)
        assert x509.load_pem_x509_certificate(served.encode()) == renewed.leaf
    finally:
        server.close()


def test_every_listener_is_a_flask_application(console: Console) -> None:
    """One HTTP stack: the ACME responder, the share links, the metrics and the console."""
    from flask import Flask
    from prometheus_client import CollectorRegistry

    from ikev2_vpn.run import metrics, share
    from ikev2_vpn.state import http01

    apps = [
        http01._app({}),
        share._app({}, 0.0, lambda _shared, _client: None),
        metrics._app(CollectorRegistry()),
        create_app(console),
    ]
    assert all(isinstance(app, Flask) for app in apps)


def test_the_login_page_shows_the_own_cas_fingerprint(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    from certfactory import own_ca_credentials
    from cryptography.hazmat.primitives.serialization import Encoding

    from ikev2_vpn.profiles import ca_fingerprint

    ca = own_ca_credentials().ca
    assert ca is not None
    facts = ServerFacts(FACTS.host, True, ca.public_bytes(Encoding.PEM).decode())
    monkeypatch.setattr(console, "_facts", lambda: facts)
    page = browser(create_app(console)).get("/login").get_data(as_text=True)
    assert ca_fingerprint(ca) in page
    monkeypatch.setattr(console, "_facts", lambda: FACTS)  # a public certificate: no CA
    assert 'id="fingerprint"' not in browser(create_app(console)).get("/login").get_data(
        as_text=True
    )


def test_with_radius_the_console_shows_who_is_online_and_changes_nothing(
    tmp_path: Path, vici: FakeVici
) -> None:
    settings = Settings(
        radius_servers="radius.example.test",
        radius_secret="radius-secret-1",
        web_port=8443,
        web_password=PASSWORD,
    )
    console = Console(
        settings,
        server_info("userspace", "compatible", ["10.10.10.0/24"]),
        lambda: vici,
        data_dir=tmp_path,
        facts=lambda: FACTS,
    )
    client = browser(create_app(console))
    (bob,) = client.get("/api/users", headers=basic()).get_json()["users"]
    assert (bob["name"], bob["origin"], bob["online"]) == ("bob", "radius", True)
    answer = client.post("/api/users", headers=basic(), json={"name": "carol"})
    assert answer.status_code == 409
    assert "users live in RADIUS" in answer.get_json()["error"]
    assert not vici.calls
