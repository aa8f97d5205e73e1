"""The ARM check: an ARM image of the server, run on Debian's ARM kernel under QEMU.

User-mode emulation (binfmt) builds ARM images here, but cannot run the server: QEMU's
user mode refuses netlink sockets other than NETLINK_ROUTE, so neither nftables nor the
XFRM probe work under it. The check therefore boots a whole ARM machine
(``qemu-system-aarch64`` for linux/arm64, ``qemu-system-arm`` with Debian's 32-bit LPAE
kernel for linux/arm/v7) whose root file system is the image's own tree, unpacked from an
initramfs, plus the kernel's modules and kmod. No Docker runs inside; the image's
entrypoint, command, environment and health check run as the engine would run them, the
container's network namespace made by hand (see :mod:`.arm_init`, the guest's PID 1).
The machine has no network card: nothing it sends leaves it.

The kernel comes from Debian's mirror (``debootstrap --download-only``, which checks the
archive's signatures), cached under ``$XDG_CACHE_HOME/ikev2-vpn/vm/arm-<arch>-<hash>``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import os
import secrets
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound

from .. import platforms
from ..base import (
    DEFAULT_MIRROR,
    Log,
    _run,  # one error line when a program fails
)
from ..check import Finding, evaluate
from ..errors import HelperError
from ..vpnclient import (
    ClientProfile,
    ConnectResult,
    TrafficResult,
    render_secret_conf,
    render_strongswan_conf,
    render_swanctl_conf,
)
from .guest import SUITE, cache_root

MARK = "IKEV2-VPN-ARM"
# Inside the guest only (it has no network card), at the top of the lab's two halves of
# 198.18.0.0/15, so a Docker lab started beside it for a comparison never gets them.
SERVER_ADDRESS = "198.18.255.1"
CLIENT_ADDRESS = "198.18.255.2"
TARGET_ADDRESS = "198.18.255.3"
BRIDGE_ADDRESS = "198.18.255.254"
POOL = "198.19.255.0/24"
USER = "pi"
MEMORY_MB = 2048
CPUS = 2
BOOT_TIMEOUT_S = 1500.0
HEALTH_TIMEOUT_S = 900
# Kernel modules the guest may need: networking, crypto (ESP's algorithms) and what they use.
MODULE_DIRS = ("kernel/net", "kernel/crypto", "kernel/lib", "kernel/arch")
MODULE_FILES = ("kernel/drivers/net/veth.ko*", "kernel/drivers/net/tun.ko*")
# Kept out of the guest's tree: nothing the check runs reads them.
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt", "var/lib/apt")


@dataclass(frozen=True)
class ArmTarget:
    """One ARM platform: its kernel and QEMU machine."""

    image_platform: platforms.Platform
    machine: str  # uname -m in the guest
    kernel_package: str
    qemu: str
    qemu_package: str
    qemu_machine: tuple[str, ...]
    console: str = "ttyAMA0"

    @property
    def platform(self) -> str:
        return self.image_platform.docker

    @property
    def debian_arch(self) -> str:
        return self.image_platform.debian_arch


TARGETS: Mapping[str, ArmTarget] = {
    "linux/arm64": ArmTarget(
        platforms.ARM64, "aarch64", "linux-image-arm64", "qemu-system-aarch64",
        "qemu-system-arm", ("-M", "virt", "-cpu", "cortex-a72"),
    ),
    # Debian's 32-bit kernel for ARMv7 with LPAE, on QEMU's virt board (a Cortex-A15).
    "linux/arm/v7": ArmTarget(
        platforms.ARMV7, "armv7l", "linux-image-armmp-lpae", "qemu-system-arm",
        "qemu-system-arm", ("-M", "virt", "-cpu", "cortex-a15"),
    ),
}  # fmt: skip


def target_for(platform: str) -> ArmTarget:
    """The target for a platform name (``linux/arm`` and ``linux/arm64/v8`` too)."""
    try:
        return TARGETS[platforms.parse_platform(platform).docker]
    except (KeyError, HelperError):
        raise HelperError(
            f"no ARM check for {platform}; choose one of {', '.join(TARGETS)}"
        ) from None


def required_tools(target: ArmTarget) -> dict[str, str]:
    """Host programs the check runs, and the Debian package that has each."""
    return {
        "debootstrap": "debootstrap",
        "dpkg-deb": "dpkg",
        "depmod": "kmod",
        "cpio": "cpio",
        target.qemu: target.qemu_package,
    }


def missing_tools(target: ArmTarget) -> list[str]:
    return [
        f"{name} (apt-get install {package})"
        for name, package in required_tools(target).items()
        if not (shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin"))
    ]


# --- the kernel ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelKit:
    """Debian's kernel for a target, the modules the guest may load, and kmod."""

    directory: Path

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def tree(self) -> Path:
        """Files to add to the guest's tree: /usr/lib/modules/<version>, kmod."""
        return self.directory / "tree"

    @property
    def version(self) -> str:
        return (self.directory / "version").read_text(encoding="utf-8").strip()

    def exists(self) -> bool:
        return self.kernel.is_file() and (self.directory / "version").is_file()


def kit_recipe(target: ArmTarget, mirror: str) -> dict[str, Any]:
    return {
        "suite": SUITE, "arch": target.debian_arch, "kernel": target.kernel_package,
        "mirror": mirror, "modules": [*MODULE_DIRS, *MODULE_FILES], "version": 1,
    }  # fmt: skip


def find_kit(target: ArmTarget, mirror: str = DEFAULT_MIRROR) -> KernelKit:
    key = hashlib.sha256(json.dumps(kit_recipe(target, mirror), sort_keys=True).encode())
    return KernelKit(cache_root() / f"arm-{target.debian_arch}-{key.hexdigest()[:16]}")


def ensure_kit(target: ArmTarget, *, mirror: str = DEFAULT_MIRROR, log: Log = print) -> KernelKit:
    """The cached kernel kit for ``target``, fetched from Debian's mirror when missing."""
    kit = find_kit(target, mirror)
    if kit.exists():
        return kit
    missing = missing_tools(target)
    if missing:
        raise HelperError("the ARM check needs " + ", ".join(missing))
    if os.geteuid() != 0:
        raise HelperError("the ARM check runs debootstrap, which needs root: run it with sudo")
    kit.directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="arm-kit-", dir=kit.directory.parent))
    try:
        log(f"arm: fetching {target.kernel_package} ({target.debian_arch}) from {mirror}")
        _run(
            ["debootstrap", f"--arch={target.debian_arch}", "--download-only",
             "--variant=minbase", f"--include={target.kernel_package},kmod",
             SUITE, str(work / "root"), mirror],
            what="debootstrap --download-only",
        )  # fmt: skip
        archives = work / "root/var/cache/apt/archives"
        staging = work / "kit"
        _assemble_kit(target, archives, work / "unpacked", staging)
        shutil.rmtree(kit.directory, ignore_errors=True)
        staging.rename(kit.directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"arm: kernel {kit.version} for {target.platform} in {kit.directory}")
    return kit


def _assemble_kit(target: ArmTarget, archives: Path, unpacked: Path, kit: Path) -> None:
    kernels = [
        deb for deb in archives.glob("linux-image-*.deb")
        if not deb.name.startswith(f"{target.kernel_package}_")  # the metapackage
    ]  # fmt: skip
    if len(kernels) != 1:
        raise HelperError(f"expected one kernel package in {archives}, found {len(kernels)}")
    _run(["dpkg-deb", "-x", str(kernels[0]), str(unpacked)], what="dpkg-deb")
    modules_root = unpacked / "usr/lib/modules"
    versions = sorted(path.name for path in modules_root.iterdir())
    if len(versions) != 1:
        raise HelperError(f"expected one kernel version in {kernels[0].name}: {versions}")
    version = versions[0]
    (kit / "tree").mkdir(parents=True)
    shutil.copy2(next((unpacked / "boot").glob("vmlinuz-*")), kit / "vmlinuz")
    source = modules_root / version
    target_modules = kit / "tree/usr/lib/modules" / version
    for relative in MODULE_DIRS:
        if (source / relative).is_dir():
            shutil.copytree(source / relative, target_modules / relative, symlinks=True)
    for pattern in MODULE_FILES:
        for path in source.glob(pattern):
            (target_modules / path.parent.relative_to(source)).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target_modules / path.relative_to(source))
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (source / name).is_file():
            shutil.copy2(source / name, target_modules / name)
    # The host's depmod may look in <base>/lib/modules only (before /usr/lib/modules).
    base = unpacked / "depmod-base"
    (base / "lib/modules").mkdir(parents=True)
    (base / "lib/modules" / version).symlink_to(target_modules.resolve())
    depmod = shutil.which("depmod") or shutil.which("depmod", path="/usr/sbin:/sbin") or "depmod"
    _run([depmod, "-b", str(base), version], what="depmod")
    for package in ("kmod", "libkmod2"):
        for deb in archives.glob(f"{package}_*.deb"):
            _run(["dpkg-deb", "-x", str(deb), str(kit / "tree")], what="dpkg-deb")
    shutil.rmtree(kit / "tree/usr/share", ignore_errors=True)  # documentation, completions
    (kit / "version").write_text(version + "\n", encoding="utf-8")


# --- the guest's tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class LabSettings:
    """The server's settings in the guest and the user the client logs in as."""

    env: Mapping[str, str]
    user: str
    password: str


def lab_settings(password: str | None = None) -> LabSettings:
    password = password or secrets.token_urlsafe(18)
    return LabSettings(
        env={
            "VPN_HOST": SERVER_ADDRESS, "VPN_HOST_DETECT": "off", "VPN_USER": USER,
            "VPN_PASSWORD_FILE": "/lab/secrets/password", "VPN_POOL_V4": POOL,
            # Never a public resolver: nothing in the check leaves the machine anyway.
            "VPN_DNS": TARGET_ADDRESS,
        },
        user=USER,
        password=password,
    )  # fmt: skip


def image_config(engine: docker.DockerClient, image: str) -> dict[str, Any]:
    try:
        attrs = engine.images.get(image).attrs
    except ImageNotFound:
        raise HelperError(f"image {image} does not exist; build it with `ikev2-vpn-helper build "
                          f"--platform ...`") from None  # fmt: skip
    config = attrs.get("Config") or {}
    health = (config.get("Healthcheck") or {}).get("Test") or []
    described = platforms.describe(attrs)
    if health[:1] != ["CMD"]:
        raise HelperError(f"image {image} has no exec-form health check (HEALTHCHECK CMD [...])")
    return {
        "platform": described,
        "attrs": {key: attrs.get(key) for key in ("Os", "Architecture", "Variant")},
        "entrypoint": list(config.get("Entrypoint") or []), "cmd": list(config.get("Cmd") or []),
        "env": list(config.get("Env") or []), "healthcheck": health[1:],
    }  # fmt: skip


def guest_config(image: Mapping[str, Any], settings: LabSettings) -> dict[str, Any]:
    env = dict(entry.split("=", 1) for entry in image["env"])
    env.update(settings.env)
    return {
        "entrypoint": image["entrypoint"], "cmd": image["cmd"], "env": env,
        "healthcheck": image["healthcheck"], "health_timeout_s": HEALTH_TIMEOUT_S,
        "hosts": {"server": SERVER_ADDRESS, "client": CLIENT_ADDRESS, "target": TARGET_ADDRESS},
        "bridge": BRIDGE_ADDRESS, "prefix": 24,
    }  # fmt: skip


def lab_files(image: Mapping[str, Any], settings: LabSettings) -> dict[str, tuple[bytes, int]]:
    """Files under /lab in the guest (path -> content, mode), and /init."""
    client = resources.files("ikev2_vpn_helper.client")
    profile = ClientProfile(SERVER_ADDRESS, SERVER_ADDRESS, settings.user)
    init = resources.files(__package__).joinpath("arm_init.py").read_bytes()
    return {
        "init": (b"#!/usr/bin/python3\n" + init, 0o755),
        "lab/config.json": (json.dumps(guest_config(image, settings)).encode(), 0o600),
        "lab/secrets/password": (settings.password.encode(), 0o600),
        "lab/probe.py": (client.joinpath("probe.py").read_bytes(), 0o644),
        "lab/target_service.py": (client.joinpath("target_service.py").read_bytes(), 0o644),
        "lab/client/strongswan.conf": (render_strongswan_conf(kernel_ipsec=True).encode(), 0o644),
        "lab/client/swanctl.conf": (render_swanctl_conf(profile).encode(), 0o644),
        "lab/client/secret.conf": (
            render_secret_conf(settings.user, settings.password).encode(), 0o600,
        ),
        "lab/client/resolv.conf": (b"", 0o644),
    }  # fmt: skip


def build_initramfs(
    engine: docker.DockerClient,
    image: str,
    kit: KernelKit,
    files: Mapping[str, tuple[bytes, int]],
    out: Path,
) -> int:
    """The image's file tree plus the kit and ``files`` as a newc cpio archive at ``out``;
    returns its size in bytes."""
    work = Path(tempfile.mkdtemp(prefix="arm-tree-", dir=out.parent))
    tree = work / "tree"
    tree.mkdir()
    try:
        _export_image(engine, image, tree)
        for relative in TRIM:
            shutil.rmtree(tree / relative, ignore_errors=True)
        shutil.copytree(kit.tree, tree, symlinks=True, dirs_exist_ok=True)
        console = tree / "dev/console"  # the kernel opens it for init's output
        if not console.exists():
            console.parent.mkdir(exist_ok=True)
            os.mknod(console, 0o600 | stat.S_IFCHR, os.makedev(5, 1))
        for name in ("etc/resolv.conf", "etc/hosts", "etc/hostname"):
            if not (tree / name).exists():
                (tree / name).write_text("", encoding="utf-8")
        for relative, (data, mode) in files.items():
            path = tree / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(mode)
        (tree / "lab/secrets").chmod(0o700)
        names = subprocess.run(
            ["find", ".", "-mindepth", "1", "-print0"], cwd=tree, capture_output=True, check=True
        ).stdout
        with out.open("wb") as archive:
            done = subprocess.run(
                ["cpio", "--null", "--create", "--format=newc", "--quiet"],
                cwd=tree, input=names, stdout=archive, stderr=subprocess.PIPE, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            raise HelperError(f"cpio failed: {done.stderr.decode(errors='replace').strip()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out.stat().st_size


def _export_image(engine: docker.DockerClient, image: str, tree: Path) -> None:
    """The image's file system, as ``docker export`` of a container that never runs."""
    try:
        container = engine.containers.create(image, entrypoint=["/bin/true"], network_mode="none")
    except APIError as error:
        raise HelperError(f"cannot create a container of {image}: {error.explanation}") from None
    try:
        untar = subprocess.Popen(
            ["tar", "-x", "--numeric-owner", "-C", str(tree)],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert untar.stdin is not None  # noqa: S101 - PIPE above
        for chunk in container.export(chunk_size=1 << 20):
            untar.stdin.write(chunk)
        untar.stdin.close()
        assert untar.stderr is not None  # noqa: S101 - PIPE above
        problem = untar.stderr.read().decode(errors="replace").strip()
        if untar.wait() != 0:
            raise HelperError(f"cannot unpack {image}: {problem}")
    finally:
        container.remove(force=True)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class ArmReport:
    """What the check saw; ``ok`` only when every finding holds."""

    platform: str
    image: str
    image_platform: str = ""
    machine: str = ""
    kernel: str = ""
    boot_s: float | None = None  # QEMU start to the guest's init
    startup_s: float | None = None  # the server's start to its first healthy check
    client_s: float | None = None
    initramfs_mb: float = 0.0
    elapsed_s: float = 0.0
    backend: str = ""
    connection: ConnectResult | None = None
    traffic: TrafficResult | None = None
    profiles: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    server_log: list[str] = field(default_factory=list)
    error: str | None = None
    data: bytes = b""  # the guest's /data, a gzip'd tar (not in to_dict)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.findings) and all(f.ok for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("data")
        data["ok"] = self.ok
        return data


def run_arm_check(
    engine: docker.DockerClient,
    image: str,
    platform: str,
    *,
    mirror: str = DEFAULT_MIRROR,
    log: Log = print,
    timeout_s: float = BOOT_TIMEOUT_S,
    settings: LabSettings | None = None,
) -> ArmReport:
    """Boot ``image`` (built for ``platform``) on Debian's kernel for it and check it.
    ``settings``: the server's (None: :func:`lab_settings` with a new password)."""
    started = time.monotonic()
    target = target_for(platform)
    report = ArmReport(platform=target.platform, image=image)
    config = image_config(engine, image)
    report.image_platform = config["platform"]
    if not platforms.matches(config["attrs"], target.image_platform):
        raise HelperError(f"image {image} is built for {report.image_platform}, not {platform}")
    missing = missing_tools(target)
    if missing:
        raise HelperError("the ARM check needs " + ", ".join(missing))
    kit = ensure_kit(target, mirror=mirror, log=log)
    settings = settings or lab_settings()
    run_dir = cache_root() / "run" / f"arm-{target.debian_arch}"
    run_dir.mkdir(parents=True, exist_ok=True)
    initramfs = run_dir / "initramfs.cpio"
    size = build_initramfs(engine, image, kit, lab_files(config, settings), initramfs)
    report.initramfs_mb = round(size / 2**20, 1)
    log(f"arm: {platform} guest: {image} on kernel {kit.version}, {report.initramfs_mb} MB tree")
    try:
        lines = boot(target, kit, initramfs, run_dir / "console.log", timeout_s=timeout_s, log=log)
    finally:
        initramfs.unlink(missing_ok=True)
    read_console(report, lines)
    report.elapsed_s = round(time.monotonic() - started, 1)
    if report.error is None:
        report.findings = judge(report, settings)
    return report


def boot(
    target: ArmTarget,
    kit: KernelKit,
    initramfs: Path,
    console_log: Path,
    *,
    timeout_s: float,
    log: Log,
) -> list[tuple[float, str]]:
    """Run the machine until it powers off; the console's lines with their arrival times."""
    argv = [
        shutil.which(target.qemu) or target.qemu, *target.qemu_machine,
        "-accel", "tcg,thread=multi", "-smp", str(CPUS), "-m", str(MEMORY_MB),
        "-nodefaults", "-no-reboot", "-display", "none", "-nic", "none",
        "-serial", "stdio", "-kernel", str(kit.kernel), "-initrd", str(initramfs),
        "-append", f"console={target.console} panic=-1 quiet loglevel=3",
    ]  # fmt: skip
    log(f"arm: booting {target.qemu} (software emulation, {CPUS} CPUs, {MEMORY_MB} MB)")
    started = time.monotonic()
    lines: list[tuple[float, str]] = []
    with console_log.open("w", encoding="utf-8") as saved:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        assert process.stdout is not None  # noqa: S101 - PIPE above
        try:
            deadline = started + timeout_s
            for raw in iter(process.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                lines.append((time.monotonic() - started, line))
                saved.write(line + "\n")
                if line.startswith(f"{MARK} ") and not line.startswith(f"{MARK} data "):
                    log(f"arm: {line[len(MARK) + 1 :][:160]}")
                if time.monotonic() > deadline:
                    raise HelperError(
                        f"the {target.platform} guest did not finish in {timeout_s:.0f} s; "
                        f"see {console_log}"
                    )
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    return lines


def read_console(report: ArmReport, lines: list[tuple[float, str]]) -> None:
    """Fill ``report`` from the guest's ``IKEV2-VPN-ARM`` lines."""
    parts: dict[int, str] = {}
    result: dict[str, Any] | None = None
    for seconds, line in lines:
        kind, _, payload = line.removeprefix(f"{MARK} ").partition(" ")
        if not line.startswith(f"{MARK} "):
            continue
        try:
            value = json.loads(payload)
        except ValueError:
            continue
        if kind == "up":
            report.boot_s = round(seconds, 1)
        elif kind == "data":
            parts[int(value["part"])] = str(value["b64"])
        elif kind == "result":
            result = value
    if result is None:
        tail = [line for _, line in lines[-15:]]
        report.error = "the guest gave no result; console: " + " | ".join(tail)
        return
    report.machine = str(result.get("machine", ""))
    report.kernel = str(result.get("kernel", ""))
    report.server_log = [str(line) for line in result.get("server_log", [])]
    if "error" in result:
        report.error = str(result["error"])
        return
    report.startup_s = result.get("startup_s")
    report.client_s = result.get("client_s")
    report.profiles = {str(k): str(v) for k, v in (result.get("profiles") or {}).items()}
    states: dict[str, int] = result.get("xfrm_states") or {}
    tun: list[str] = result.get("tun_devices") or []
    report.backend = "kernel" if states.get("server", 0) > 0 and not tun else "userspace"
    client: dict[str, Any] = result.get("client") or {}
    if "connect" in client:
        report.connection = ConnectResult.from_probe(client["connect"])
    else:
        report.error = f"the client did not run: {client.get('error', 'no answer')}"
        return
    if "traffic" in client:
        report.traffic = TrafficResult.from_probe(client["traffic"])
    if parts:
        report.data = base64.b64decode("".join(parts[index] for index in sorted(parts)))


def judge(report: ArmReport, settings: LabSettings) -> list[Finding]:
    target = TARGETS[report.platform]
    findings = [
        Finding(
            "architecture",
            report.machine == target.machine,
            f"the guest's CPU is {report.machine or 'unknown'} (kernel {report.kernel})",
        ),
        Finding(
            "server started",
            report.startup_s is not None,
            f"healthy {report.startup_s} s after start, under software emulation",
        ),
        Finding(
            "client profiles",
            bool(report.profiles),
            f"{len(report.profiles)} files in /data/clients",
        ),
    ]
    assert report.connection is not None  # noqa: S101 - read_console set it or an error
    findings += evaluate(
        report.connection,
        report.traffic,
        pool=ipaddress.IPv4Network(settings.env["VPN_POOL_V4"]),
        egress_address=SERVER_ADDRESS,
        client_address=CLIENT_ADDRESS,
    )
    findings.append(
        Finding(
            "IPsec backend",
            report.backend == "kernel",
            "kernel IPsec (ESP SAs in the server's XFRM state, no TUN device)"
            if report.backend == "kernel"
            else "the server fell back to userspace IPsec on a kernel that has ESP",
        )
    )
    return findings


def data_files(report: ArmReport) -> dict[str, tuple[bytes, int]]:
    """The guest's /data (path under /data -> content, mode), from its archive."""
    found: dict[str, tuple[bytes, int]] = {}
    with tarfile.open(fileobj=io.BytesIO(report.data), mode="r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile() or not member.name.startswith("data/"):
                continue
            extracted = archive.extractfile(member)
            if extracted is not None:
                found[member.name.removeprefix("data/")] = (extracted.read(), member.mode)
    return found


def format_arm_report(report: ArmReport) -> str:
    lines = [
        f"ARM check of {report.image} ({report.platform}, the image says "
        f"{report.image_platform}) on {report.machine or '?'} kernel {report.kernel or '?'}"
    ]
    width = max((len(finding.check) for finding in report.findings), default=0)
    for finding in report.findings:
        lines.append(f"  {'ok  ' if finding.ok else 'FAIL'} {finding.check.ljust(width)}  "
                     f"{finding.detail}")  # fmt: skip
    if report.error:
        lines.append(f"  error: {report.error}")
        lines.extend(f"    | {line}" for line in report.server_log[-20:])
    lines.append(
        f"  boot {report.boot_s} s, server start {report.startup_s} s, client {report.client_s} s,"
        f" whole check {report.elapsed_s} s (guest tree {report.initramfs_mb} MB)"
    )
    lines.append("PASS" if report.ok else "FAIL")
    return "\n".join(lines)
