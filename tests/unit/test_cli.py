"""`ikev2-vpn run` and `ikev2-vpn health` as the container runs them: exit status and output."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ikev2_vpn import start
from ikev2_vpn.cli import main
from ikev2_vpn.errors import ConfigError, SystemSetupError
from ikev2_vpn.run import health, vici_session
from ikev2_vpn.run.charon import StopRequested

SECRET = "Zq7-secret-Xy9"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No VPN_* or ACME_* from the outside; signal handlers and root logging restored."""
    for name in list(os.environ):
        if name.upper().startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    root.handlers[:] = root_handlers
    root.setLevel(root_level)


def error_lines(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert all(line.startswith("ikev2-vpn: error: ") for line in lines), stderr
    return [line.removeprefix("ikev2-vpn: error: ") for line in lines]


# --- run -----------------------------------------------------------------------------------


def test_invalid_settings_exit_2_with_one_line_per_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VPN_HOST", "https://vpn.example.com:443")
    monkeypatch.setenv("VPN_USERS", f"alice:correct {SECRET}")
    monkeypatch.setenv("VPN_DNS", "1.1.1.1;8.8.8.8")
    assert main(["run"]) == 2
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert sorted(line.split(":", 1)[0] for line in lines) == ["VPN_DNS", "VPN_HOST", "VPN_USERS"]
    assert "Traceback" not in captured.err
    assert SECRET not in captured.err + captured.out


def test_password_without_user_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VPN_PASSWORD", SECRET)
    assert main([]) == 2  # "run" is the default command
    captured = capsys.readouterr()
    assert error_lines(captured.err) == [
        "VPN_USER: VPN_PASSWORD is set without a user name; set VPN_USER"
    ]
    assert SECRET not in captured.err + captured.out


def test_typo_in_a_variable_is_pointed_out_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("VPN_PASWORD", SECRET)
    monkeypatch.setenv("VPN_LOG_LEVEL", "5")  # stop before anything touches the system
    assert main(["run"]) == 2
    assert "VPN_PASWORD: not a setting of this image; did you mean VPN_PASSWORD?" in caplog.text
    captured = capsys.readouterr()
    assert SECRET not in caplog.text + captured.err + captured.out
    assert [line.split(":", 1)[0] for line in error_lines(captured.err)] == ["VPN_LOG_LEVEL"]


@pytest.mark.parametrize(
    ("raised", "line"),
    [
        (
            SystemSetupError("userspace IPsec needs the TUN device; add --device /dev/net/tun"),
            "userspace IPsec needs the TUN device; add --device /dev/net/tun",
        ),
        (
            ConfigError("VPN_POOL_V4", "10.0.0.0/8 overlaps 10.5.0.0/24", "choose another"),
            "VPN_POOL_V4: 10.0.0.0/8 overlaps 10.5.0.0/24; choose another",
        ),
        (
            vici_session.ViciError("loading the connection failed: invalid proposal"),
            "loading the connection failed: invalid proposal",
        ),
    ],
)
def test_setup_problems_after_validation_are_one_line_too(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: Exception,
    line: str,
) -> None:
    def run() -> int:
        raise raised

    monkeypatch.setattr(start, "run", run)
    assert main(["run"]) == 2
    assert error_lines(capsys.readouterr().err) == [line]


def test_stop_before_charon_started_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run() -> int:
        raise StopRequested

    monkeypatch.setattr(start, "run", run)
    assert main(["run"]) == 0
    assert capsys.readouterr().err == ""


def test_charon_exit_status_becomes_the_container_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(start, "run", lambda: 3)
    assert main(["run"]) == 3


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --- health --------------------------------------------------------------------------------


@pytest.fixture
def vici_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "charon.vici"
    monkeypatch.setattr(vici_session, "SOCKET", path)
    return path


DAY = 86400.0
UDP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"


def udp_table(path: Path, *ports: int) -> Path:
    """A /proc/net/udp6 with unconnected sockets on ``ports``."""
    rows = [
        f"  {n}: {'0' * 32}:{port:04X} {'0' * 32}:0000 07 0:0 0 0 0\n"
        for n, port in enumerate(ports)
    ]
    path.write_text(UDP_HEADER + "".join(rows))
    return path


@pytest.fixture(autouse=True)
def udp_tables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """charon's IKE sockets, as the health check finds them in a running server."""
    table = udp_table(tmp_path / "udp6", 500, 4500)
    monkeypatch.setattr(health, "UDP_TABLES", (table,))
    return table


@pytest.fixture
def certificate_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The status file start-up writes: a 90-day certificate issued 10 days ago."""
    path = tmp_path / "certificate.json"
    now = time.time()
    write_status(path, not_before=now - 10 * DAY, not_after=now + 80 * DAY)
    monkeypatch.setattr(health, "CERTIFICATE_STATUS", path)
    return path


def write_status(path: Path, *, not_before: float, not_after: float) -> None:
    status = {"subject": "CN=vpn.example.com", "serial": "1f", "not_before": not_before}
    path.write_text(json.dumps({**status, "not_after": not_after}))


def one_line(stdout: str) -> str:
    assert stdout.endswith("\n")
    assert stdout.count("\n") == 1, stdout
    return stdout.rstrip("\n")


@pytest.mark.usefixtures("vici_socket")
def test_health_without_charon_socket_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health"]) == 1
    line = one_line(capsys.readouterr().out)
    assert line.startswith("unhealthy: charon does not answer on its VICI socket")


def test_health_with_a_stale_socket_is_unhealthy(
    vici_socket: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """charon was killed: the socket file is still there, nobody listens."""
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(vici_socket))
    try:
        assert main(["health"]) == 1
    finally:
        stale.close()
    assert one_line(capsys.readouterr().out).startswith("unhealthy: charon does not answer")


class FakeSession:
    def __init__(self, connections: list[str], pools: list[str]) -> None:
        self.connections = connections
        self.pools = pools

    def version(self) -> dict[str, Any]:
        return {"daemon": "charon", "version": "6.0.1"}

    def list_conns(self) -> list[dict[str, Any]]:
        return [{name: {}} for name in self.connections]

    def get_pools(self) -> dict[str, Any]:
        return {name: {} for name in self.pools}


@pytest.mark.parametrize(
    ("session", "status", "message"),
    [
        (
            FakeSession(["ikev2-vpn"], ["pool-v4"]),
            0,
            "healthy: charon answers, the VPN configuration is loaded, the certificate is valid",
        ),
        (
            FakeSession([], []),
            1,
            "unhealthy: charon runs but the VPN configuration is not loaded yet",
        ),
        (
            FakeSession(["ikev2-vpn"], []),
            1,
            "unhealthy: charon runs but the address pool is not loaded",
        ),
    ],
)
@pytest.mark.usefixtures("certificate_status")
def test_health_reports_what_charon_has_loaded(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    session: FakeSession,
    status: int,
    message: str,
) -> None:
    monkeypatch.setattr(health, "connect", lambda timeout: session)
    assert main(["health"]) == status
    assert one_line(capsys.readouterr().out) == message


@pytest.mark.usefixtures("certificate_status")
@pytest.mark.parametrize(("ports", "missing"), [((4500,), "500"), ((), "500 and 4500")])
def test_health_without_ike_sockets_is_unhealthy(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    udp_tables: Path,
    ports: tuple[int, ...],
    missing: str,
) -> None:
    """charon loaded everything but could not bind (no CAP_NET_BIND_SERVICE in Kubernetes):
    clients would get no answer, so the server is neither healthy nor alive."""
    udp_table(udp_tables, *ports)
    monkeypatch.setattr(health, "connect", lambda timeout: FakeSession(["ikev2-vpn"], ["pool-v4"]))
    for argv in ([], ["--alive"]):
        assert health.main(argv) == 1
        assert one_line(capsys.readouterr().out) == (
            f"unhealthy: charon does not listen on UDP {missing}; ports below 1024 need "
            "CAP_NET_BIND_SERVICE where they are privileged (add it to the container's "
            "capabilities)"
        )


def test_health_with_an_expired_certificate_is_unhealthy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], certificate_status: Path
) -> None:
    now = time.time()
    write_status(certificate_status, not_before=now - 92 * DAY, not_after=now - 2 * DAY)
    monkeypatch.setattr(health, "connect", lambda timeout: FakeSession(["ikev2-vpn"], ["pool-v4"]))
    assert main(["health"]) == 1
    line = one_line(capsys.readouterr().out)
    assert line.startswith("unhealthy: the server certificate expired 2.0 days ago")


def test_liveness_leaves_the_certificate_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], certificate_status: Path
) -> None:
    """`python3 -m ikev2_vpn.run.health --alive` (Kubernetes' liveness probe): an expiring
    certificate is no reason to restart, a charon without its configuration is."""
    now = time.time()
    write_status(certificate_status, not_before=now - 92 * DAY, not_after=now - 2 * DAY)
    monkeypatch.setattr(health, "connect", lambda timeout: FakeSession(["ikev2-vpn"], ["pool-v4"]))
    assert health.main(["--alive"]) == 0
    assert one_line(capsys.readouterr().out) == (
        "alive: charon answers and the VPN configuration is loaded"
    )
    assert health.main([]) == 1
    assert one_line(capsys.readouterr().out).startswith("unhealthy: the server certificate expired")
    monkeypatch.setattr(health, "connect", lambda timeout: FakeSession([], []))
    assert health.main(["--alive"]) == 1
    assert one_line(capsys.readouterr().out) == (
        "unhealthy: charon runs but the VPN configuration is not loaded yet"
    )


def test_health_refuses_unknown_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert health.main(["--live"]) == 2
    assert one_line(capsys.readouterr().out) == "usage: python3 -m ikev2_vpn.run.health [--alive]"


def test_health_without_certificate_status_is_unhealthy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """charon loaded the connection, but start-up never wrote what it serves."""
    monkeypatch.setattr(health, "CERTIFICATE_STATUS", tmp_path / "missing.json")
    monkeypatch.setattr(health, "connect", lambda timeout: FakeSession(["ikev2-vpn"], ["pool-v4"]))
    assert main(["health"]) == 1
    assert "certificate's status is unknown" in one_line(capsys.readouterr().out)
