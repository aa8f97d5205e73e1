"""The ARM images, proven on ARM: `vm arm-check` for linux/arm64 and linux/arm/v7.

The images are built from this checkout under binfmt emulation while the other tests run
(conftest's arm_builds); these tests run last. Each boots on Debian's own ARM kernel under
QEMU's full-system emulation (QEMU's user mode cannot run the server: it refuses XFRM and
netfilter netlink sockets): the server makes its CA, a strongSwan client from the same
image connects with a name and password and gets a pool address, the target sees the
server's address, kernel IPsec is chosen. Then the amd64 image under test starts on the
/data the ARM server made, and must write byte-identical client profiles; the Apple profile
is signed, and a CMS signature differs every time (it holds the signing time, and ECDSA
signatures are randomised), so there both signatures must verify against the CA and the
signed contents be byte-identical. Start-up times under emulation are printed, not judged.
Fails, never skips, when QEMU or the kernel cannot be had, and says what is missing.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from collections.abc import Callable

import pytest

from ikev2_vpn_helper.engine import FileSpec, put_files
from ikev2_vpn_helper.vm import arm
from ikev2_vpn_lab.lab import Lab

PLATFORMS = ("linux/arm64", "linux/arm/v7")
SIGNED = "pi/apple.mobileconfig"
CmsVerify = Callable[[bytes, bytes], subprocess.CompletedProcess[bytes]]  # conftest's


def client_files(archive: bytes) -> dict[str, bytes]:
    """Every file under /data/clients, from `get_archive('/data/clients')`."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                found[member.name.removeprefix("clients/")] = extracted.read()
    return found


def signed_content(cms_verify: CmsVerify, signed: bytes, ca_pem: bytes) -> bytes:
    verified = cms_verify(signed, ca_pem)
    assert verified.returncode == 0, verified.stderr.decode(errors="replace")
    return verified.stdout


@pytest.mark.parametrize("platform", PLATFORMS)
def test_arm_image_serves_a_client_on_an_arm_kernel(
    platform: str, arm_images: dict[str, str], lab: Lab, cms_verify: CmsVerify
) -> None:
    settings = arm.lab_settings()
    report = arm.run_arm_check(lab.engine, arm_images[platform], platform, settings=settings,
                               log=print)  # fmt: skip
    print(arm.format_arm_report(report))
    assert report.error is None, report.error
    assert [f"{f.check}: {f.detail}" for f in report.findings if not f.ok] == []
    checks = {finding.check for finding in report.findings}
    assert {"architecture", "virtual IP", "NAT (TCP)", "IPsec backend"} <= checks
    assert report.machine == arm.TARGETS[platform].machine
    assert report.startup_s is not None and report.startup_s > 0
    assert report.connection is not None and report.connection.virtual_ip is not None

    # The same /data on the amd64 image: the same CA, users, and byte for byte the profiles.
    state = {
        name: content
        for name, (content, _mode) in arm.data_files(report).items()
        if not name.startswith("clients/")
    }
    assert "ca.crt" in state, sorted(state)
    env = {key: value for key, value in settings.env.items() if key != "VPN_PASSWORD_FILE"}
    volume = lab.volume()
    seed = lab.engine.containers.create(
        lab.image, entrypoint=["true"], volumes={volume: {"bind": "/data", "mode": "rw"}}
    )
    try:
        put_files(seed, [FileSpec(f"/data/{name}", content, 0o600)
                         for name, content in state.items()])  # fmt: skip
    finally:
        seed.remove(force=True)
    server = lab.start_server(
        env,
        name=lab.name(f"server-{arm.target_for(platform).image_platform.suffix}"),
        volume=volume,
        secret_files={"VPN_PASSWORD_FILE": settings.password.encode()},
    )
    assert server.ca_certificate() == state["ca.crt"]
    stream, _ = server.container.get_archive("/data/clients")
    amd64 = client_files(b"".join(stream))
    on_arm = {
        name.removeprefix("clients/"): content
        for name, (content, _mode) in arm.data_files(report).items()
        if name.startswith("clients/")
    }
    assert {name: hashlib.sha256(data).hexdigest() for name, data in on_arm.items()} == (
        report.profiles
    )
    assert sorted(amd64) == sorted(on_arm)
    assert SIGNED in amd64
    differing = [name for name in amd64 if name != SIGNED and amd64[name] != on_arm[name]]
    assert differing == []
    ca_pem = state["ca.crt"]
    assert signed_content(cms_verify, amd64[SIGNED], ca_pem) == signed_content(
        cms_verify, on_arm[SIGNED], ca_pem
    )
