"""charon under supervision: stops on request, restarts the container when it dies, no zombies.

A small shell script stands in for charon.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ikev2_vpn.run import charon, children
from ikev2_vpn.run.charon import StopRequested, Supervisor

FakeCharon = Callable[[str], Supervisor]


@pytest.fixture(autouse=True)
def restore_signal_handlers() -> Iterator[None]:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.fixture
def stale_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    files = (tmp_path / "charon.pid", tmp_path / "charon.vici")
    monkeypatch.setattr(charon, "STALE_FILES", files)
    return files


@pytest.fixture
def supervisor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stale_files: tuple[Path, Path]
) -> Iterator[FakeCharon]:
    """Start a supervisor whose charon is the given shell script; kill leftovers afterwards."""
    started: list[Supervisor] = []

    def _start(script: str) -> Supervisor:
        program = tmp_path / "charon"
        program.write_text(f"#!/bin/sh\n{script}\n")
        program.chmod(0o755)
        monkeypatch.setattr(charon, "CHARON", program)
        started.append(Supervisor())
        started[-1].start()
        return started[-1]

    yield _start
    for each in started:
        if each.alive():
            assert each.process is not None
            each.process.kill()
            each.process.wait()


def wait_for(path: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def is_zombie(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "Z"


def signal_main_thread_later(signum: int, delay: float = 0.2) -> None:
    """Deliver the signal while the supervisor blocks in waitpid, as `docker stop` does."""
    main = threading.main_thread().ident
    assert main is not None
    threading.Timer(delay, signal.pthread_kill, (main, signum)).start()


# --- charon dies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status", "how"),
    [
        ("exit 3", 3, "status 3"),
        ("exit 0", 1, "status 0"),  # charon never exits on its own: still a failure
        ("kill -KILL $$", 137, "signal 9"),  # e.g. the OOM killer
    ],
)
def test_unexpected_exit_makes_the_container_exit_non_zero(
    supervisor: FakeCharon,
    caplog: pytest.LogCaptureFixture,
    script: str,
    status: int,
    how: str,
) -> None:
    with caplog.at_level(logging.INFO):
        assert supervisor(script).supervise() == status
    assert f"charon exited unexpectedly ({how})" in caplog.text


def test_other_children_are_reaped_while_waiting(supervisor: FakeCharon) -> None:
    """As PID 1, the entrypoint inherits orphans: they must not stay zombies."""
    running = supervisor("sleep 0.3; exit 3")
    orphan = os.posix_spawn("/bin/true", ["true"], os.environ)
    assert running.supervise() == 3
    with pytest.raises(ChildProcessError):
        os.waitpid(orphan, os.WNOHANG)


def test_commands_of_other_threads_keep_their_exit_status(supervisor: FakeCharon) -> None:
    """A ban runs `nft` from a background thread while the supervisor reaps children: the
    command's failure must still be seen (reaped by the supervisor, it would look like 0)."""
    running = supervisor("sleep 1.5; exit 3")
    statuses: list[int] = []

    def commands() -> None:
        for _ in range(20):
            try:
                children.run(["sh", "-c", "exit 7"])
            except subprocess.CalledProcessError as error:
                statuses.append(error.returncode)
            else:
                statuses.append(0)

    thread = threading.Thread(target=commands)
    thread.start()
    assert running.supervise() == 3
    thread.join()
    assert statuses == [7] * 20


# --- stopping on request -----------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_forwarded_and_the_stop_is_clean(supervisor: FakeCharon, signum: int) -> None:
    running = supervisor("exec sleep 30")
    started = time.monotonic()
    signal_main_thread_later(signum)
    assert running.supervise() == 0
    assert time.monotonic() - started < 3
    assert running.process is not None
    assert running.process.returncode == -signum  # charon got the signal itself


def test_stop_request_just_after_charon_died_ends_without_a_traceback(
    supervisor: FakeCharon,
) -> None:
    """`docker stop` lands between charon's death and the supervisor's wait."""
    running = supervisor("exit 3")
    assert running.process is not None
    while not is_zombie(running.process.pid):  # dead, and nobody has waited for it yet
        time.sleep(0.01)
    signal.raise_signal(signal.SIGTERM)
    assert running.supervise() == 0


def test_signal_before_charon_starts_stops_the_start() -> None:
    Supervisor()
    with pytest.raises(StopRequested):
        signal.raise_signal(signal.SIGTERM)


def test_stop_terminates_charon(supervisor: FakeCharon) -> None:
    running = supervisor("exec sleep 30")
    assert running.alive()
    assert running.stop() == 0
    assert not running.alive()
    assert running.process is not None
    assert running.process.returncode == -signal.SIGTERM


def test_stop_kills_charon_that_ignores_sigterm_within_the_timeout(
    supervisor: FakeCharon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(charon, "STOP_TIMEOUT_S", 0.5)
    ready = tmp_path / "ready"
    running = supervisor(f"trap '' TERM; touch {ready}; exec sleep 30")
    wait_for(ready)
    started = time.monotonic()
    assert running.stop() == 0
    assert time.monotonic() - started < 2
    assert running.process is not None
    assert running.process.returncode == -signal.SIGKILL


def test_stop_after_charon_died_is_harmless(supervisor: FakeCharon) -> None:
    running = supervisor("exit 3")
    assert running.process is not None
    running.process.wait()
    assert running.stop() == 0


def test_stop_before_start_is_harmless() -> None:
    assert Supervisor().stop() == 0


# --- start -------------------------------------------------------------------------------


def test_start_removes_files_left_by_a_killed_container(
    supervisor: FakeCharon, stale_files: tuple[Path, Path]
) -> None:
    """charon refuses to start while its old pid file exists."""
    for stale in stale_files:
        stale.write_text("123\n")
    supervisor("exec sleep 30")
    assert not any(stale.exists() for stale in stale_files)


def test_supervise_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError):
        Supervisor().supervise()
