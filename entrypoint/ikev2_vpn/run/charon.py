"""charon as a supervised child of the entrypoint (PID 1 in the container).

SIGTERM/SIGINT are forwarded to charon, orphans are reaped, and the container's exit status
tells the orchestrator whether charon stopped on request (0) or died (non-zero). Commands that
other threads run go through :mod:`.children`, so reaping never steals their exit status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path
from types import FrameType

from .. import defaults
from ..settings import child_environment
from . import children

log = logging.getLogger(__name__)

CHARON = defaults.CHARON  # a module attribute, so tests can stand in a script
STALE_FILES = (Path("/var/run/charon.pid"), Path("/var/run/charon.vici"))
STOP_TIMEOUT_S = 6.0  # Docker's default stop timeout is 10 s


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived before charon was started."""


class Supervisor:
    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        if self.process is None:
            raise StopRequested
        # os.kill, not send_signal(): its poll() could reap a charon that just died, and
        # supervise() would then wait for a child that no longer exists.
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # reaped a moment ago
                os.kill(self.process.pid, signum)

    def start(self) -> None:
        for stale in STALE_FILES:  # left behind when the container was killed
            stale.unlink(missing_ok=True)
        # The network-facing daemon gets no setting, and so no password (docs/security.md).
        self.process = subprocess.Popen(
            [str(CHARON)], stdin=subprocess.DEVNULL, env=child_environment()
        )
        log.info("charon started (pid %d)", self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def supervise(self) -> int:
        """Wait for charon to exit, reaping any other child. Returns the exit status."""
        if self.process is None:
            raise RuntimeError("supervise() before start()")
        while True:
            # Look at the next child that exited without reaping it: it may belong to a
            # command another thread is running (see children.py).
            exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            if exited is None:  # only with WNOHANG; keeps the type checker honest
                continue
            if exited.si_pid == self.process.pid:
                _, status = os.waitpid(self.process.pid, 0)
                self.process.returncode = os.waitstatus_to_exitcode(status)
                return self._exit_status(self.process.returncode)
            # A running command reaps its own process first; orphans are left to us.
            with children.LOCK, contextlib.suppress(ChildProcessError):
                os.waitpid(exited.si_pid, os.WNOHANG)

    def stop(self) -> int:
        """Stop charon (after a failed start, or on request) within STOP_TIMEOUT_S."""
        if self.process is None or not self.alive():
            return 0
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return 0

    def _exit_status(self, code: int) -> int:
        if self.stopping:
            log.info("charon stopped")
            return 0
        how = f"signal {-code}" if code < 0 else f"status {code}"
        log.error("charon exited unexpectedly (%s); exiting so the container is restarted", how)
        return 128 - code if code < 0 else (code or 1)
