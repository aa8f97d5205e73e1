"""The guest's disk: Debian trixie with its stock kernel, systemd and Docker's engine.

Made once with debootstrap from Debian's mirror, written into an ext4 image with
``mkfs.ext4 -d`` (no loop mount, no partition table: QEMU boots the guest's own kernel and
initrd with -kernel/-initrd and root=/dev/vda), and cached under
``$XDG_CACHE_HOME/ikev2-vpn/vm/<recipe hash>/``: a second build with the same recipe reuses
it. The guest boots from a copy-on-write snapshot of it, so every boot is a fresh one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..base import DEFAULT_MIRROR, Log
from ..errors import HelperError

SUITE = "trixie"
# Docker's engine, CLI and Compose are three packages in trixie; python3-minimal runs the agent.
PACKAGES = (
    *("linux-image-amd64", "initramfs-tools", "systemd-sysv", "udev", "kmod"),
    *("iproute2", "nftables", "iptables", "ca-certificates", "python3-minimal"),
    *("docker.io", "docker-cli", "docker-compose"),
)
DISK_SIZE = "6G"  # sparse: the tree takes about 1 GB, the rest is room for images
GUEST_ADDRESS = "10.0.2.15"  # QEMU user networking's fixed guest address
GATEWAY = "10.0.2.2"
AGENT_PORT = 7000
DOCKER_PORT = 2375
AGENT_PATH = "/usr/local/sbin/ikev2-vpn-vm-agent"
GUEST_NETWORK_POOL = "198.19.0.0/16"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ikev2-vpn" / "vm"


@dataclass(frozen=True)
class GuestDisk:
    """A built guest: its root disk and the kernel and initrd to boot it with."""

    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.img"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    def exists(self) -> bool:
        return all(path.is_file() for path in (self.disk, self.kernel, self.initrd))


def agent_source() -> str:
    return resources.files(__package__).joinpath("guest_agent.py").read_text("utf-8")


def guest_files() -> dict[str, tuple[str, int]]:
    """Files written into the debootstrap tree: path -> (text, mode)."""
    unit_net = f"""\
[Unit]
Description=ikev2-vpn VM lab: QEMU user network and the host-only firewall
DefaultDependencies=no
Before=network-online.target docker.service ikev2-vpn-vm-agent.service
After=systemd-udevd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/ip link set lo up
ExecStart=/usr/sbin/ip link set eth0 up
ExecStart=/usr/sbin/ip address add {GUEST_ADDRESS}/24 dev eth0
ExecStart=/usr/sbin/ip route add default via {GATEWAY}
ExecStart=/usr/sbin/nft -f /etc/ikev2-vpn-vm.nft

[Install]
WantedBy=multi-user.target
"""
    # The agent and the engine's API answer only what QEMU forwards from the host's loopback,
    # never a container inside the guest.
    firewall = f"""\
table inet ikev2_vpn_vm {{
    chain input {{
        type filter hook input priority filter; policy accept;
        tcp dport {{ {AGENT_PORT}, {DOCKER_PORT} }} iifname != "eth0" drop
    }}
}}
"""
    unit_agent = f"""\
[Unit]
Description=ikev2-vpn VM lab agent (runs the host's commands)
After=ikev2-vpn-vm-net.service
Requires=ikev2-vpn-vm-net.service

[Service]
ExecStart=/usr/bin/python3 {AGENT_PATH}
Restart=always

[Install]
WantedBy=multi-user.target
"""
    # The engine's API on the user-network address, for the host's Docker SDK through QEMU's
    # forward. --tls=false says so explicitly (dockerd would otherwise wait 15 s to warn).
    docker_dropin = f"""\
[Unit]
After=ikev2-vpn-vm-net.service

[Service]
ExecStart=
ExecStart=/usr/sbin/dockerd -H fd:// -H tcp://{GUEST_ADDRESS}:{DOCKER_PORT} --tls=false \
--containerd=/run/containerd/containerd.sock
"""
    # Networks Compose makes in the guest come from the benchmarking range, like the lab's.
    daemon = json.dumps(
        {"default-address-pools": [{"base": GUEST_NETWORK_POOL, "size": 24}]}, indent=1
    )
    return {
        "etc/docker/daemon.json": (daemon + "\n", 0o644),
        "etc/fstab": ("/dev/vda / ext4 rw,relatime 0 1\n", 0o644),
        "etc/hostname": ("ikev2-vpn-vm\n", 0o644),
        "etc/hosts": ("127.0.0.1 localhost\n127.0.1.1 ikev2-vpn-vm\n::1 localhost\n", 0o644),
        # Nothing in the guest resolves names; QEMU's restrict=on would drop the queries anyway.
        "etc/resolv.conf": ("", 0o644),
        "etc/ikev2-vpn-vm.nft": (firewall, 0o644),
        "etc/systemd/system/ikev2-vpn-vm-net.service": (unit_net, 0o644),
        "etc/systemd/system/ikev2-vpn-vm-agent.service": (unit_agent, 0o644),
        "etc/systemd/system/docker.service.d/ikev2-vpn-vm.conf": (docker_dropin, 0o644),
        AGENT_PATH.lstrip("/"): (agent_source(), 0o755),
    }


ENABLED_UNITS = ("ikev2-vpn-vm-net.service", "ikev2-vpn-vm-agent.service")


def recipe(mirror: str = DEFAULT_MIRROR) -> dict[str, object]:
    """Everything the disk is made from; its hash names the cache directory."""
    return {
        "suite": SUITE,
        "packages": list(PACKAGES),
        "files": {path: list(entry) for path, entry in sorted(guest_files().items())},
        "enabled": list(ENABLED_UNITS),
        "size": DISK_SIZE,
        "mirror": mirror,
    }


def recipe_key(mirror: str = DEFAULT_MIRROR) -> str:
    text = json.dumps(recipe(mirror), sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def find_guest(mirror: str = DEFAULT_MIRROR) -> GuestDisk:
    return GuestDisk(cache_root() / recipe_key(mirror))


def required_tools() -> dict[str, str]:
    """Host programs the lab runs, and the Debian package that has each."""
    return {
        "debootstrap": "debootstrap",
        "mkfs.ext4": "e2fsprogs",
        "qemu-system-x86_64": "qemu-system-x86",
    }


def missing_tools(names: list[str] | None = None) -> list[str]:
    tools = required_tools()
    wanted = names if names is not None else list(tools)
    return [f"{name} (apt-get install {tools[name]})" for name in wanted if not _which(name)]


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def build_guest(
    *, mirror: str = DEFAULT_MIRROR, rebuild: bool = False, log: Log = print
) -> GuestDisk:
    """The cached guest for this recipe, made first when missing (or with ``rebuild``)."""
    guest = find_guest(mirror)
    if guest.exists() and not rebuild:
        log(f"vm: reusing the guest disk {guest.directory}")
        return guest
    missing = missing_tools(["debootstrap", "mkfs.ext4"])
    if missing:
        raise HelperError("vm build needs " + ", ".join(missing))
    if os.geteuid() != 0:
        raise HelperError("vm build runs debootstrap, which needs root: run it with sudo")
    guest.directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=guest.directory.parent))
    try:
        started = time.monotonic()
        root = work / "root"
        log(f"vm: debootstrap {SUITE} with {len(PACKAGES)} packages (about 2-4 min)")
        _run(
            [
                str(_which("debootstrap")),
                "--variant=minbase",
                "--include=" + ",".join(PACKAGES),
                SUITE,
                str(root),
                mirror,
            ],
            what="debootstrap",
            log=log,
        )
        configure_tree(root)
        boot = sorted((root / "boot").glob("vmlinuz-*"))
        if not boot:
            raise HelperError("debootstrap installed no kernel in /boot")
        version = boot[-1].name.removeprefix("vmlinuz-")
        shutil.copyfile(boot[-1], work / "vmlinuz")
        shutil.copyfile(root / "boot" / f"initrd.img-{version}", work / "initrd.img")
        log(f"vm: writing the ext4 disk ({DISK_SIZE}, sparse)")
        _run(
            [
                str(_which("mkfs.ext4")),
                "-q",
                "-L",
                "ikev2-vpn-vm",
                "-d",
                str(root),
                str(work / "disk.img"),
                DISK_SIZE,
            ],
            what="mkfs.ext4",
            log=log,
        )
        (work / "recipe.json").write_text(json.dumps(recipe(mirror), indent=1), encoding="utf-8")
        (work / "kernel.txt").write_text(version + "\n", encoding="utf-8")
        _unmounted_rmtree(root)
        if guest.directory.exists():
            shutil.rmtree(guest.directory)
        work.rename(guest.directory)
        log(f"vm: guest disk ready in {time.monotonic() - started:.0f} s: {guest.directory}")
    finally:
        if work.exists():
            _unmounted_rmtree(work)
    return guest


def configure_tree(root: Path) -> None:
    """Write the lab's files into the tree and enable its units (no chroot needed)."""
    for relative, (text, mode) in guest_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # resolv.conf may be a link into the host's tree
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ENABLED_UNITS:
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(f"/etc/systemd/system/{unit}")
    # No password for anyone, no console login: the agent is the way in.
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (root / leftover).glob("*.deb" if "archives" in leftover else "*_*"):
            path.unlink()


def _run(argv: list[str], *, what: str, log: Log) -> None:
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        lines = (completed.stderr or completed.stdout).strip().splitlines()
        for line in lines[-10:]:
            log(f"  | {line}")
        raise HelperError(
            f"{what} failed with status {completed.returncode}: "
            f"{lines[-1] if lines else 'no output'}"
        )


def _unmounted_rmtree(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        busy = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    if busy:
        raise HelperError(f"debootstrap left {busy[0]} mounted; unmount it and delete {path}")
    shutil.rmtree(path, ignore_errors=True)
