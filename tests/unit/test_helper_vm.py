"""The VM lab without a VM: the guest's recipe, QEMU's command line, the agent, the report."""

from __future__ import annotations

import base64
import importlib
import itertools
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ikev2_vpn_helper.cli import build_parser
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.vm import guest, machine
from ikev2_vpn_helper.vm.chain import long_chain
from ikev2_vpn_helper.vm.proof import STEPS, ProofReport, Step, format_proof
from ikev2_vpn_helper.vpnclient import render_strongswan_conf

GUEST = guest.GuestDisk(Path("/cache/vm/abc"))


def test_the_recipe_hash_follows_what_the_disk_is_made_from() -> None:
    assert guest.recipe_key() == guest.recipe_key()
    assert guest.recipe_key("http://mirror.test/debian") != guest.recipe_key()
    assert len(guest.recipe_key()) == 16


def test_cache_lives_under_xdg_cache_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert guest.find_guest().directory == Path("/somewhere/ikev2-vpn/vm") / guest.recipe_key()


def test_the_guest_has_docker_compose_and_the_stock_kernel() -> None:
    for package in ("linux-image-amd64", "docker.io", "docker-cli", "docker-compose", "nftables"):
        assert package in guest.PACKAGES


def test_the_engine_api_and_agent_are_reachable_only_from_qemus_forward() -> None:
    files = guest.guest_files()
    dropin = files["etc/systemd/system/docker.service.d/ikev2-vpn-vm.conf"][0]
    assert f"-H tcp://{guest.GUEST_ADDRESS}:{guest.DOCKER_PORT}" in dropin
    firewall = files["etc/ikev2-vpn-vm.nft"][0]
    assert f"{guest.AGENT_PORT}, {guest.DOCKER_PORT}" in firewall
    assert 'iifname != "eth0" drop' in firewall
    assert '"198.19.0.0/16"' in files["etc/docker/daemon.json"][0]


def test_configure_tree_writes_the_files_and_enables_the_units(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/resolv.conf").symlink_to("/run/host-resolv.conf")
    guest.configure_tree(tmp_path)
    assert (tmp_path / "etc/resolv.conf").read_text() == ""
    assert not (tmp_path / "etc/resolv.conf").is_symlink()
    agent = tmp_path / guest.AGENT_PATH.lstrip("/")
    assert agent.stat().st_mode & 0o777 == 0o755
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    for unit in guest.ENABLED_UNITS:
        assert (wants / unit).readlink() == Path(f"/etc/systemd/system/{unit}")


def test_qemu_reaches_nothing_outside_and_forwards_loopback_only(tmp_path: Path) -> None:
    argv = machine.qemu_argv(
        GUEST, machine.Accel("tcg", "test"), agent_port=40001, docker_port=40002,
        directory=tmp_path, images_disk=tmp_path / "images.tar",
    )  # fmt: skip
    netdev = argv[argv.index("-netdev") + 1]
    assert "restrict=on" in netdev
    assert "hostfwd=tcp:127.0.0.1:40001-10.0.2.15:7000" in netdev
    assert "hostfwd=tcp:127.0.0.1:40002-10.0.2.15:2375" in netdev
    assert netdev.count("hostfwd=") == 2
    drives = [argv[i + 1] for i, part in enumerate(argv) if part == "-drive"]
    assert drives == [
        f"file={GUEST.disk},format=raw,if=virtio,snapshot=on",
        f"file={tmp_path / 'images.tar'},format=raw,if=virtio,readonly=on",
    ]
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    assert "panic=-1" in argv[argv.index("-append") + 1]


def test_without_kvm_the_guest_runs_under_tcg_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    accel = machine.choose_accel(GUEST)
    assert accel.name == "tcg"
    assert "no /dev/kvm" in accel.reason
    with pytest.raises(HelperError, match="--accel kvm"):
        machine.choose_accel(GUEST, force="kvm")
    assert machine.choose_accel(GUEST, force="tcg").reason == "requested with --accel tcg"


def test_a_failing_kvm_probe_falls_back_to_tcg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "exists", lambda path: True)
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    monkeypatch.setattr(
        machine, "probe_kvm", lambda disk: (False, "KVM fails here (KVM internal error)")
    )
    accel = machine.choose_accel(GUEST)
    assert (accel.name, accel.reason) == (
        "tcg",
        "software emulation: KVM fails here (KVM internal error)",
    )
    monkeypatch.setattr(machine, "probe_kvm", lambda disk: (True, "KVM starts the guest's kernel"))
    assert machine.choose_accel(GUEST).name == "kvm"


def test_the_agent_runs_a_command_with_its_input() -> None:
    agent = importlib.import_module("ikev2_vpn_helper.vm.guest_agent")
    answer = agent.answer({"argv": ["cat"], "stdin": base64.b64encode(b"hello").decode()})
    assert answer["rc"] == 0
    assert base64.b64decode(str(answer["stdout"])) == b"hello"
    missing = agent.answer({"argv": ["/nonexistent/program"]})
    assert missing["rc"] == 127
    failing = agent.answer({"argv": ["sh", "-c", "echo no >&2; exit 3"]})
    assert (failing["rc"], base64.b64decode(str(failing["stderr"]))) == (3, b"no\n")


def test_vm_exec_takes_the_command_after_the_separator() -> None:
    args = build_parser().parse_args(["vm", "exec", "--name", "x", "--", "ip", "-o", "link"])
    assert (args.vm_command, args.name, args.argv) == ("exec", "x", ["--", "ip", "-o", "link"])
    check = build_parser().parse_args(["vm", "check", "--json"])
    assert (check.name, check.json) == ("check", True)


def test_a_kernel_ipsec_client_loads_no_libipsec() -> None:
    kernel = render_strongswan_conf(kernel_ipsec=True)
    assert "kernel-libipsec" not in kernel
    assert "kernel-netlink" in kernel
    assert "kernel-libipsec" in render_strongswan_conf()


def test_the_report_passes_only_when_every_step_holds() -> None:
    report = ProofReport(accel="tcg", accel_reason="test", kernel="6.12")
    assert not report.ok  # nothing proven yet
    report.steps = [Step(name, True, "seen") for name in STEPS]
    assert report.ok
    assert format_proof(report).endswith("vm check: passed")
    report.steps.append(Step("extra", False, "broken"))
    assert not report.ok
    assert "FAIL extra: broken" in format_proof(report)
    report.steps.pop()
    report.error = "the guest stopped"
    assert not report.ok and report.to_dict()["ok"] is False


def test_the_long_chain_needs_ike_fragments_and_verifies() -> None:
    files = long_chain("198.18.10.1")
    certs = x509.load_pem_x509_certificates(files.fullchain_pem)
    sent = certs[:-1]  # the server sends all but the root
    assert sum(len(cert.public_bytes(serialization.Encoding.DER)) for cert in sent) > 2 * 1280
    for cert, issuer in itertools.pairwise(certs):
        cert.verify_directly_issued_by(issuer)
    assert certs[-1].public_bytes(serialization.Encoding.PEM) == files.root_pem
    san = certs[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["198.18.10.1"]
    key = serialization.load_pem_private_key(files.key_pem, None)
    assert key.public_key() == certs[0].public_key()
