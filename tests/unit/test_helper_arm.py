"""The ARM check without an ARM machine: targets, the guest's files, reading its console."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from ikev2_vpn_helper.cli import build_parser
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.vm import arm

IMAGE = {
    "platform": "linux/arm/v7",
    "attrs": {"Os": "linux", "Architecture": "arm", "Variant": "v7"},
    "entrypoint": ["ikev2-vpn"],
    "cmd": ["run"],
    "env": ["PATH=/opt/ikev2-vpn/bin:/usr/bin", "PYTHONUNBUFFERED=1"],
    "healthcheck": ["/opt/ikev2-vpn/bin/python3", "-m", "ikev2_vpn.run.health"],
}


def line(kind: str, payload: object) -> tuple[float, str]:
    return (1.0, f"{arm.MARK} {kind} {json.dumps(payload)}")


def data_archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"data/{name}")
            info.size = len(content)
            info.mode = 0o600
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def good_result(**changes: object) -> dict[str, object]:
    result: dict[str, object] = {
        "machine": "armv7l",
        "kernel": "6.12.117+deb13-armmp-lpae",
        "startup_s": 92.1,
        "client_s": 10.4,
        "profiles": {"pi/pi.sswan": "ab" * 32},
        "xfrm_states": {"server": 2, "client": 2},
        "tun_devices": [],
        "server_log": ["ready"],
        "client": {
            "connect": {"connected": True, "connect_ms": 2075, "virtual_ips": ["198.19.255.1"],
                        "dns": ["198.18.255.3"], "log": []},
            "traffic": {"target": arm.TARGET_ADDRESS, "tcp_source": arm.SERVER_ADDRESS,
                        "icmp_sources": [arm.SERVER_ADDRESS],
                        "ping": {"sent": 3, "received": 3, "rtt_ms": [1, 2, 3]}},
        },
    }  # fmt: skip
    result.update(changes)
    return result


def read(result: dict[str, object], extra: list[tuple[float, str]] | None = None) -> arm.ArmReport:
    report = arm.ArmReport(platform="linux/arm/v7", image="ikev2-vpn:latest-armv7")
    lines = [(0.5, "[    1.0] some kernel line"), line("up", {"uptime_s": 20}),
             *(extra or []), line("result", result)]  # fmt: skip
    arm.read_console(report, lines)
    if report.error is None:
        report.findings = arm.judge(report, arm.lab_settings("pw"))
    return report


def test_both_arm_platforms_have_a_debian_kernel_and_a_qemu_machine() -> None:
    assert set(arm.TARGETS) == {"linux/arm64", "linux/arm/v7"}
    assert arm.target_for("linux/arm64").kernel_package == "linux-image-arm64"
    assert arm.target_for("linux/arm64").qemu == "qemu-system-aarch64"
    # A 32-bit kernel for the 32-bit image, as on a Raspberry Pi 2/3 with 32-bit OS.
    assert arm.target_for("linux/arm/v7").kernel_package == "linux-image-armmp-lpae"
    assert arm.target_for("linux/arm/v7").qemu == "qemu-system-arm"
    with pytest.raises(HelperError, match="linux/arm64, linux/arm/v7"):
        arm.target_for("linux/riscv64")


def test_missing_host_programs_are_named_with_their_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shutil.which", lambda name, path=None: None)
    missing = arm.missing_tools(arm.TARGETS["linux/arm64"])
    assert "qemu-system-aarch64 (apt-get install qemu-system-arm)" in missing
    assert "cpio (apt-get install cpio)" in missing
    assert "depmod (apt-get install kmod)" in missing


def test_the_kit_cache_key_follows_its_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    target = arm.TARGETS["linux/arm64"]
    kit = arm.find_kit(target)
    assert kit.directory.parent == Path("/somewhere/ikev2-vpn/vm")
    assert kit.directory.name.startswith("arm-arm64-")
    assert arm.find_kit(target, "http://mirror.test/debian") != kit
    assert arm.find_kit(arm.TARGETS["linux/arm/v7"]) != kit


def test_the_guest_runs_the_images_entrypoint_with_its_environment_and_the_labs() -> None:
    settings = arm.lab_settings("secret password")
    config = arm.guest_config(IMAGE, settings)
    assert config["entrypoint"] + config["cmd"] == ["ikev2-vpn", "run"]
    assert config["env"]["PATH"] == "/opt/ikev2-vpn/bin:/usr/bin"
    assert config["env"]["VPN_HOST"] == arm.SERVER_ADDRESS
    assert config["env"]["VPN_POOL_V4"] == arm.POOL
    assert config["healthcheck"] == IMAGE["healthcheck"]
    # The password reaches the server as a file, never in its environment.
    assert "VPN_PASSWORD" not in config["env"]
    assert "secret password" not in json.dumps(config)
    # Nothing public: DNS is the target, the addresses are benchmarking ones.
    assert config["env"]["VPN_DNS"] == arm.TARGET_ADDRESS
    assert all(address.startswith("198.18.") for address in config["hosts"].values())


def test_the_guest_files_hold_the_init_the_client_and_the_secret_private() -> None:
    files = arm.lab_files(IMAGE, arm.lab_settings("secret password"))
    init, mode = files["init"]
    assert init.startswith(b"#!/usr/bin/python3\n") and mode == 0o755
    assert files["lab/secrets/password"] == (b"secret password", 0o600)
    assert files["lab/client/secret.conf"][1] == 0o600
    strongswan = files["lab/client/strongswan.conf"][0].decode()
    assert "kernel-libipsec" not in strongswan  # ESP in the guest's kernel
    swanctl = files["lab/client/swanctl.conf"][0].decode()
    assert f"remote_addrs = {arm.SERVER_ADDRESS}" in swanctl
    assert "eap_id = pi" in swanctl


def test_a_good_run_is_judged_ok_with_every_finding() -> None:
    report = read(good_result())
    assert report.ok, arm.format_arm_report(report)
    checks = [finding.check for finding in report.findings]
    assert checks[:3] == ["architecture", "server started", "client profiles"]
    assert {"connected", "virtual IP", "NAT (TCP)", "ICMP", "IPsec backend"} <= set(checks)
    assert report.boot_s == 1.0 and report.startup_s == 92.1
    assert report.backend == "kernel"
    assert "PASS" in arm.format_arm_report(report)


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({"machine": "x86_64"}, "architecture"),
        ({"profiles": {}}, "client profiles"),
        ({"tun_devices": ["ipsec0"]}, "IPsec backend"),
        ({"xfrm_states": {"server": 0, "client": 0}}, "IPsec backend"),
    ],
)
def test_what_a_user_would_notice_fails_the_check(changes: dict[str, object], failing: str) -> None:
    report = read(good_result(**changes))
    assert not report.ok
    assert [finding.check for finding in report.findings if not finding.ok] == [failing]


def test_a_target_that_saw_the_virtual_ip_means_no_nat() -> None:
    result = good_result()
    client = result["client"]
    assert isinstance(client, dict)
    client["traffic"]["tcp_source"] = "198.19.255.1"
    report = read(result)
    failed = {finding.check: finding.detail for finding in report.findings if not finding.ok}
    assert "does not NAT" in failed["NAT (TCP)"]


def test_a_server_that_never_got_healthy_is_an_error_with_its_log() -> None:
    report = read({"machine": "aarch64", "kernel": "6.12", "error": "the server exited with "
                   "status 1", "server_log": ["VPN_HOST: not a name"]})  # fmt: skip
    assert not report.ok
    assert report.error == "the server exited with status 1"
    assert "VPN_HOST: not a name" in arm.format_arm_report(report)


def test_no_result_line_is_an_error_that_quotes_the_console() -> None:
    report = arm.ArmReport(platform="linux/arm64", image="x")
    arm.read_console(report, [(1.0, "Kernel panic - not syncing: Attempted to kill init!")])
    assert report.error is not None and "Kernel panic" in report.error
    assert not report.ok


def test_the_data_archive_is_put_back_together_from_its_parts() -> None:
    archive = data_archive({"ca.crt": b"CA", "clients/pi/pi.sswan": b"{}"})
    text = base64.b64encode(archive).decode()
    parts = [text[i : i + 10] for i in range(0, len(text), 10)]
    extra = [line("data", {"part": i, "of": len(parts), "b64": p}) for i, p in enumerate(parts)]
    report = read(good_result(), extra=[*reversed(extra)])
    assert gzip.decompress(report.data)
    files = arm.data_files(report)
    assert files["ca.crt"] == (b"CA", 0o600)
    assert files["clients/pi/pi.sswan"][0] == b"{}"
    assert "data" not in report.to_dict()


def test_platform_aliases_find_their_target() -> None:
    assert arm.target_for("linux/arm") is arm.TARGETS["linux/arm/v7"]
    assert arm.target_for("linux/arm64/v8") is arm.TARGETS["linux/arm64"]
    with pytest.raises(HelperError):
        arm.target_for("linux/amd64")


def test_the_cli_has_arm_check_for_both_platforms() -> None:
    args = build_parser().parse_args(["vm", "arm-check", "--platform", "linux/arm/v7", "--json"])
    assert args.vm_command == "arm-check" and args.platform == "linux/arm/v7" and args.json
    with pytest.raises(SystemExit):
        build_parser().parse_args(["vm", "arm-check", "--platform", "linux/s390x"])
