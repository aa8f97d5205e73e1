"""The kernel IPsec path, where users run the server: `vm check` in a Debian guest.

This machine's kernel has no ESP, so every other end-to-end test runs userspace IPsec. Here
a QEMU guest boots Debian's stock kernel (ESP as a module, not loaded), runs the
repository's compose.yaml with the image under test, and the proof's steps must all hold.
It fails, never skips, when the host cannot run the guest, and says what is missing.
Under software emulation it takes several minutes; it runs on its own (the suite is serial),
so the emulated CPUs take the machine only while it runs.
"""

from __future__ import annotations

import time

import docker
import pytest

from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.vm import guest as vmguest
from ikev2_vpn_helper.vm.proof import STEPS, format_proof, run_proof


@pytest.fixture(scope="module")
def guest_disk() -> vmguest.GuestDisk:
    missing = vmguest.missing_tools()
    if missing:
        pytest.fail("the VM lab needs " + ", ".join(missing), pytrace=False)
    try:
        return vmguest.build_guest(log=print)
    except HelperError as error:
        pytest.fail(f"cannot build the VM guest: {error}", pytrace=False)


def test_kernel_ipsec_in_a_stock_debian_guest(
    engine: docker.DockerClient, image: str, guest_disk: vmguest.GuestDisk
) -> None:
    started = time.monotonic()
    report = run_proof(guest_disk, engine, server_image=image, name="e2e", log=print)
    print(format_proof(report))
    print(f"vm check took {time.monotonic() - started:.0f} s")
    assert report.error is None, report.error
    seen = {step.name: step for step in report.steps}
    assert [name for name in STEPS if name not in seen] == []
    assert [f"{step.name}: {step.detail}" for step in report.steps if not step.ok] == []
    assert report.kernel.startswith("6."), report.kernel
    for figure in ("ratio_up_kernel_over_userspace", "ratio_down_kernel_over_userspace",
                   "ratio_connect_kernel_over_userspace"):  # fmt: skip
        assert report.figures.get(figure, 0) > 0, figure
