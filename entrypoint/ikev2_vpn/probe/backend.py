"""Choosing how ESP packets are processed: by the kernel (XFRM) or by charon (kernel-libipsec).

Kernel IPsec is faster and is what real VPS kernels offer. Some hosts (Docker Desktop, some
CI and sandbox kernels) have XFRM netlink but no ESP transforms; there charon processes ESP
itself and moves packets through a TUN device. The probe installs a throw-away XFRM state
in the container's own network namespace and removes it again.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, SystemSetupError
from ..settings import Backend

TUN_DEVICE = Path("/dev/net/tun")

# Documentation addresses and fixed SPIs (one per probe, so a failed delete cannot make
# the next probe collide): the states never carry traffic.
_PROBE_SRC = "192.0.2.254"
_PROBE_DST = "192.0.2.253"
_CBC = (
    "0x1ce2fe11",
    ["enc", "cbc(aes)", "0x" + "00" * 16, "auth-trunc", "hmac(sha256)", "0x" + "00" * 32, "128"],
)
_GCM = ("0x1ce2fe12", ["aead", "rfc4106(gcm(aes))", "0x" + "00" * 20, "128"])


@dataclass(frozen=True)
class KernelProbe:
    """What the kernel said when asked to install an ESP state."""

    esp: bool  # AES-CBC/HMAC-SHA256 ESP state accepted
    gcm: bool  # AES-GCM ESP state accepted
    detail: str  # the kernel's answer when ESP was refused
    permitted: bool = True  # False: no CAP_NET_ADMIN, nothing could be asked


@dataclass(frozen=True)
class BackendChoice:
    backend: Backend  # KERNEL or USERSPACE, never AUTO
    reason: str
    esp_gcm: bool  # whether AES-GCM ESP proposals can be offered


def choose_backend(requested: Backend, probe: KernelProbe, tun_available: bool) -> BackendChoice:
    """Decide the IPsec backend. Pure: every outcome is unit-tested."""
    if not probe.permitted:
        raise SystemSetupError(
            "the container may not configure networking; add --cap-add NET_ADMIN "
            "(cap_add: [NET_ADMIN] in compose)"
        )
    if requested is Backend.KERNEL:
        if not probe.esp:
            raise ConfigError(
                "VPN_IPSEC_BACKEND",
                f"kernel was requested but this kernel cannot carry ESP ({probe.detail})",
                "use auto or userspace",
            )
        return BackendChoice(Backend.KERNEL, "requested with VPN_IPSEC_BACKEND=kernel", probe.gcm)
    if requested is Backend.AUTO and probe.esp:
        return BackendChoice(Backend.KERNEL, "the kernel accepted a test ESP state", probe.gcm)
    if not tun_available:
        raise SystemSetupError(
            "userspace IPsec needs the TUN device; add --device /dev/net/tun "
            "(devices: [/dev/net/tun] in compose)"
        )
    if requested is Backend.USERSPACE:
        reason = "requested with VPN_IPSEC_BACKEND=userspace"
    else:
        reason = f"the kernel cannot carry ESP ({probe.detail})"
    return BackendChoice(Backend.USERSPACE, reason, esp_gcm=True)


def probe_kernel() -> KernelProbe:
    """Ask the kernel to install (and then remove) ESP states with CBC and with GCM."""
    esp, detail = _try_state(_CBC)
    if detail == "permission":
        return KernelProbe(esp=False, gcm=False, detail="operation not permitted", permitted=False)
    gcm, _ = _try_state(_GCM) if esp else (False, "")
    return KernelProbe(esp=esp, gcm=gcm, detail=detail)


def tun_available() -> bool:
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def _try_state(probe: tuple[str, list[str]]) -> tuple[bool, str]:
    spi, algorithm = probe
    state = ["src", _PROBE_SRC, "dst", _PROBE_DST, "proto", "esp", "spi", spi]
    add = subprocess.run(
        ["ip", "xfrm", "state", "add", *state, "mode", "tunnel", *algorithm],
        capture_output=True,
        text=True,
        check=False,
    )
    if add.returncode == 0:
        subprocess.run(["ip", "xfrm", "state", "delete", *state], capture_output=True, check=False)
        return True, ""
    answer = add.stderr.strip().splitlines()[-1] if add.stderr.strip() else "no answer"
    if "Operation not permitted" in answer:
        return False, "permission"
    return False, answer.removeprefix("Error: ").rstrip(".")
