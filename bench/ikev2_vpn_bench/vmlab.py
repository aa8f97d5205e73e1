"""``bench/run --vm``: kernel against userspace IPsec in the VM lab, as ratios.

The lab's guest runs under software emulation where KVM does not work, which makes
absolute figures meaningless; the ratio of the two backends, measured in the same guest
one after the other, is what this reports (see docs/vm-lab.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ikev2_vpn_helper.vm.proof import ProofReport

JSON_NAME = "vm.json"
RATIOS = (
    ("ratio_up_kernel_over_userspace", "TCP upload through the tunnel"),
    ("ratio_down_kernel_over_userspace", "TCP download through the tunnel"),
    ("ratio_connect_kernel_over_userspace", "connect time"),
)


def results(report: ProofReport, when: str) -> dict[str, Any]:
    """What the benchmark keeps of a ``vm check``: where it ran, the ratios, every figure."""
    return {
        "when": when,
        "ok": report.ok,
        "guest_kernel": report.kernel,
        "accel": report.accel,
        "accel_reason": report.accel_reason,
        "ratios": {name: report.figures.get(name) for name, _ in RATIOS},
        "figures": dict(report.figures),
    }


def summary(data: dict[str, Any]) -> list[str]:
    lines = [f"VM lab: guest kernel {data['guest_kernel']} under {data['accel']}"]
    for name, what in RATIOS:
        value = data["ratios"].get(name)
        lines.append(f"{what}: kernel/userspace x{value:.2f}" if value else f"{what}: not measured")
    return lines


def write(data: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / JSON_NAME
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
