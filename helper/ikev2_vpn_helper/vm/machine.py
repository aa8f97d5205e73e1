"""Booting the guest under QEMU, and talking to it while it runs.

The guest sits on QEMU's user network with ``restrict=on``: it cannot send a packet
anywhere outside QEMU. Two ports of the host's loopback are forwarded into it: its agent
(commands, files) and its Docker engine's API (the helper's Docker SDK drives containers
there exactly as on the host). Images go in on a second virtio disk: ``docker save`` on the
host, ``docker load`` from the raw disk in the guest, no registry.

A running guest is described by ``state.json`` in its run directory, so ``vm exec`` from
another process finds it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import docker

from ..base import Log
from ..errors import HelperError
from .guest import AGENT_PORT, DOCKER_PORT, GUEST_ADDRESS, GuestDisk, cache_root, missing_tools

QEMU = "qemu-system-x86_64"
MEMORY_MB = 2048
CPUS = 2
KVM_PROBE_S = 8.0
BOOT_TIMEOUT_S = 300.0
KERNEL_ARGS = "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 quiet"
DEFAULT_NAME = "default"


@dataclass(frozen=True)
class Accel:
    """How QEMU runs the guest and why that way."""

    name: str  # kvm | tcg
    reason: str

    def qemu_args(self) -> list[str]:
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]


@dataclass(frozen=True)
class RunningGuest:
    name: str
    pid: int
    agent_port: int
    docker_port: int
    accel: str
    accel_reason: str
    directory: str

    @property
    def docker_url(self) -> str:
        return f"tcp://127.0.0.1:{self.docker_port}"

    def engine(self, timeout: int = 300) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_url, timeout=timeout)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _is_qemu(self.pid)


def run_root() -> Path:
    return cache_root() / "run"


def run_dir(name: str) -> Path:
    return run_root() / name


def load_running(name: str = DEFAULT_NAME) -> RunningGuest:
    path = run_dir(name) / "state.json"
    try:
        guest = RunningGuest(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise HelperError(f"no VM named {name} is running; start it with `vm start`") from None
    if not guest.alive():
        raise HelperError(f"the VM {name} has stopped; see {run_dir(name) / 'console.log'}")
    return guest


# --- accelerator -------------------------------------------------------------------------------


def choose_accel(guest: GuestDisk, *, force: str | None = None) -> Accel:
    """KVM when /dev/kvm opens and a guest kernel actually starts under it, else TCG."""
    if force == "tcg":
        return Accel("tcg", "requested with --accel tcg")
    if not os.path.exists("/dev/kvm"):
        reason = "no /dev/kvm on this host"
    elif not os.access("/dev/kvm", os.R_OK | os.W_OK):
        reason = "/dev/kvm is not readable and writable for this user"
    else:
        works, reason = probe_kvm(guest)
        if works:
            return Accel("kvm", reason)
    if force == "kvm":
        raise HelperError(f"--accel kvm: KVM does not work here ({reason})")
    return Accel("tcg", f"software emulation: {reason}")


def probe_kvm(guest: GuestDisk, timeout_s: float = KVM_PROBE_S) -> tuple[bool, str]:
    """Boot the guest's kernel without a disk for a few seconds under KVM: nested KVM can
    accept the VM and still die on the first instructions it cannot emulate."""
    argv = [
        _qemu(), "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-no-reboot",
        "-display", "none", "-serial", "stdio", "-kernel", str(guest.kernel),
        "-append", "console=ttyS0 panic=-1 earlyprintk=serial,ttyS0",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    assert process.stdout is not None  # noqa: S101 - PIPE above
    os.set_blocking(process.stdout.fileno(), False)
    output = b""
    deadline = time.monotonic() + timeout_s
    # QEMU pauses (it does not exit) on a KVM internal error: stop at the first verdict.
    while time.monotonic() < deadline and not any(
        mark in output for mark in (b"Linux version", b"KVM internal error")
    ):
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            chunk = process.stdout.read()
            if not chunk and process.poll() is not None:
                break
            output += chunk or b""
    process.kill()
    process.wait()
    text = output.decode(errors="replace")
    if "Linux version" in text and "KVM internal error" not in text:
        return True, "KVM starts the guest's kernel"
    for line in text.splitlines():
        if "KVM" in line or "kvm" in line:
            return False, f"KVM fails here ({line.strip()[:120]})"
    return False, f"the guest's kernel printed nothing under KVM within {timeout_s:.0f} s"


# --- start and stop ----------------------------------------------------------------------------


def qemu_argv(
    guest: GuestDisk,
    accel: Accel,
    *,
    agent_port: int,
    docker_port: int,
    directory: Path,
    images_disk: Path | None,
) -> list[str]:
    forwards = ",".join(
        f"hostfwd=tcp:127.0.0.1:{host}-{GUEST_ADDRESS}:{port}"
        for host, port in ((agent_port, AGENT_PORT), (docker_port, DOCKER_PORT))
    )
    argv = [
        _qemu(), "-name", "ikev2-vpn-vm", *accel.qemu_args(),
        "-smp", str(CPUS), "-m", str(MEMORY_MB), "-nodefaults", "-no-reboot",
        "-display", "none", "-serial", f"file:{directory / 'console.log'}",
        "-kernel", str(guest.kernel), "-initrd", str(guest.initrd), "-append", KERNEL_ARGS,
        # snapshot=on: the guest writes to a temporary overlay, the cached disk stays as built.
        "-drive", f"file={guest.disk},format=raw,if=virtio,snapshot=on",
        "-netdev", f"user,id=net0,restrict=on,{forwards}",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
        "-pidfile", str(directory / "qemu.pid"),
    ]  # fmt: skip
    if images_disk is not None:
        argv += ["-drive", f"file={images_disk},format=raw,if=virtio,readonly=on"]
    return argv


def start(
    guest: GuestDisk,
    *,
    name: str = DEFAULT_NAME,
    images: Sequence[str] = (),
    host_engine: docker.DockerClient | None = None,
    accel: str | None = None,
    log: Log = print,
) -> RunningGuest:
    """Boot the guest, wait for its agent and Docker engine, load ``images`` into it."""
    missing = missing_tools(["qemu-system-x86_64"])
    if missing:
        raise HelperError("the VM lab needs " + ", ".join(missing))
    if not guest.exists():
        raise HelperError("no guest disk for this recipe; run `ikev2-vpn-helper vm build` first")
    directory = run_dir(name)
    if (directory / "state.json").exists():
        try:
            load_running(name)
        except HelperError:
            pass
        else:
            raise HelperError(f"the VM {name} is already running; `vm stop --name {name}` first")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    images_disk = None
    if images:
        if host_engine is None:
            raise HelperError("loading images needs the host's Docker engine")
        images_disk = save_images(host_engine, images, directory / "images.tar", log)
    chosen = choose_accel(guest, force=accel)
    log(f"vm: {chosen.name} ({chosen.reason})")
    agent_port, docker_port = _free_port(), _free_port()
    argv = qemu_argv(
        guest, chosen, agent_port=agent_port, docker_port=docker_port,
        directory=directory, images_disk=images_disk,
    )  # fmt: skip
    started = time.monotonic()
    with open(directory / "qemu.log", "wb") as qemu_log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    running = RunningGuest(
        name, process.pid, agent_port, docker_port, chosen.name, chosen.reason, str(directory)
    )
    (directory / "state.json").write_text(json.dumps(asdict(running)), encoding="utf-8")
    try:
        _wait_until(lambda: agent_answers(running), running, "its agent")
        agent_s = time.monotonic() - started
        _wait_until(lambda: _engine_answers(running), running, "its Docker engine")
        engine_s = time.monotonic() - started
        log(f"vm: booted, agent at {agent_s:.0f} s, Docker engine at {engine_s:.0f} s")
        timings = {"boot_agent_s": round(agent_s, 1), "boot_engine_s": round(engine_s, 1)}
        if images_disk is not None:
            loading = time.monotonic()
            result = exec_in(running, ["docker", "load", "-i", "/dev/vdb"], timeout_s=900)
            if result.rc != 0:
                raise HelperError(f"docker load in the guest failed: {result.err_line()}")
            timings["image_load_s"] = round(time.monotonic() - loading, 1)
            log(f"vm: loaded {', '.join(images)} in {timings['image_load_s']:.0f} s")
            images_disk.unlink()  # the guest has them; the disk stays attached read-only
        (directory / "timings.json").write_text(json.dumps(timings), encoding="utf-8")
    except BaseException:
        stop(running)
        raise
    return running


def timings(running: RunningGuest) -> dict[str, float]:
    path = Path(running.directory) / "timings.json"
    try:
        found: dict[str, float] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return found


def save_images(engine: docker.DockerClient, images: Sequence[str], path: Path, log: Log) -> Path:
    """``docker save`` of ``images`` into one archive (shared layers once), padded to whole
    512-byte sectors for the raw disk."""
    log(f"vm: docker save {' '.join(images)}")
    for reference in images:
        try:
            engine.images.get(reference)
        except docker.errors.ImageNotFound:
            raise HelperError(f"image {reference} does not exist on this host") from None
    # The SDK saves one image per call; the engine's API takes several names at once.
    api = engine.api
    response = api._get(api._url("/images/get"), params={"names": list(images)}, stream=True)
    try:
        api._raise_for_status(response)
    except docker.errors.APIError as error:
        raise HelperError(f"cannot save {', '.join(images)}: {error.explanation}") from None
    with open(path, "wb") as archive:
        for chunk in response.iter_content(1 << 20):
            archive.write(chunk)
        archive.write(b"\0" * (-archive.tell() % 512))
    return path


def stop(running: RunningGuest, timeout_s: float = 20.0) -> None:
    """End QEMU (the guest's disk is a throw-away snapshot, so nothing is lost)."""
    if running.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while running.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if running.alive():
            os.kill(running.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(running.pid, os.WNOHANG)  # reap it when this process started it
    state = Path(running.directory) / "state.json"
    state.unlink(missing_ok=True)


# --- the agent ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecResult:
    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    def err_line(self) -> str:
        lines = (self.stderr or self.stdout).decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"status {self.rc}"


def exec_in(
    running: RunningGuest, argv: Sequence[str], *, stdin: bytes = b"", timeout_s: float = 600
) -> ExecResult:
    """Run ``argv`` as root in the guest; its status and output."""
    request = {
        "argv": list(argv),
        "stdin": base64.b64encode(stdin).decode(),
        "timeout": timeout_s,
    }
    try:
        with socket.create_connection(("127.0.0.1", running.agent_port), timeout=5) as conn:
            conn.settimeout(timeout_s + 30)
            conn.sendall(json.dumps(request).encode() + b"\n")
            reply = conn.makefile("rb").readline()
    except OSError as error:
        raise HelperError(f"the VM's agent does not answer ({error})") from None
    if not reply:
        raise HelperError("the VM's agent closed the connection without an answer")
    answer = json.loads(reply)
    return ExecResult(
        int(answer["rc"]), base64.b64decode(answer["stdout"]), base64.b64decode(answer["stderr"])
    )


def checked(running: RunningGuest, argv: Sequence[str], *, timeout_s: float = 600) -> str:
    result = exec_in(running, argv, timeout_s=timeout_s)
    if result.rc != 0:
        raise HelperError(f"`{' '.join(argv)}` failed in the VM: {result.err_line()}")
    return result.text


def copy_in(running: RunningGuest, data: bytes, path: str, mode: int = 0o644) -> None:
    argv = ["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"', "-",
            path, f"{mode:o}"]  # fmt: skip
    result = exec_in(running, argv, stdin=data)
    if result.rc != 0:
        raise HelperError(f"cannot write {path} in the VM: {result.err_line()}")


def copy_out(running: RunningGuest, path: str) -> bytes:
    result = exec_in(running, ["cat", "--", path])
    if result.rc != 0:
        raise HelperError(f"cannot read {path} in the VM: {result.err_line()}")
    return result.stdout


def agent_answers(running: RunningGuest) -> bool:
    try:
        return exec_in(running, ["true"], timeout_s=5).rc == 0
    except HelperError:
        return False


def _engine_answers(running: RunningGuest) -> bool:
    try:
        return bool(running.engine(timeout=5).ping())
    except docker.errors.DockerException:
        return False


def _wait_until(ready: Callable[[], bool], running: RunningGuest, what: str) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if not running.alive():
            raise HelperError(f"QEMU stopped before {what} answered: {_last_line(running)}")
        if ready():
            return
        time.sleep(1)
    raise HelperError(f"the VM's {what} did not answer within {BOOT_TIMEOUT_S:.0f} s")


def _last_line(running: RunningGuest) -> str:
    for name in ("qemu.log", "console.log"):
        path = Path(running.directory) / name
        if path.exists():
            lines = path.read_text(errors="replace").strip().splitlines()
            if lines:
                return f"{lines[-1][:200]} (see {path})"
    return "no output"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _qemu() -> str:
    return shutil.which(QEMU) or QEMU


def _is_qemu(pid: int) -> bool:
    """A live QEMU (not a zombie left for the process that started it to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    command, _, rest = stat.partition(") ")
    return "qemu" in command and not rest.startswith(("Z", "X"))
