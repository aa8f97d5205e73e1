"""Kernel or userspace IPsec: the decision, and the probe that asks the kernel."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ikev2_vpn.errors import ConfigError, SystemSetupError
from ikev2_vpn.probe import backend
from ikev2_vpn.probe.backend import BackendChoice, KernelProbe, choose_backend, probe_kernel
from ikev2_vpn.settings import Backend

ESP_GCM = KernelProbe(esp=True, gcm=True, detail="")
ESP_CBC_ONLY = KernelProbe(esp=True, gcm=False, detail="")
NO_ESP = KernelProbe(esp=False, gcm=False, detail="Requested type not found")
NOT_PERMITTED = KernelProbe(esp=False, gcm=False, detail="operation not permitted", permitted=False)

# What `ip xfrm state add` printed on real machines.
NO_ESP_ANSWER = "Error: Requested type not found.\n"
NOT_PERMITTED_ANSWER = "RTNETLINK answers: Operation not permitted\n"
NO_GCM_ANSWER = "Error: Requested AEAD algorithm not found.\n"


# --- choose_backend ------------------------------------------------------------------------


@pytest.mark.parametrize("tun", [True, False])
@pytest.mark.parametrize(("probe", "gcm"), [(ESP_GCM, True), (ESP_CBC_ONLY, False)])
def test_auto_uses_the_kernel_when_it_carries_esp(probe: KernelProbe, gcm: bool, tun: bool) -> None:
    choice = choose_backend(Backend.AUTO, probe, tun_available=tun)
    assert choice == BackendChoice(Backend.KERNEL, "the kernel accepted a test ESP state", gcm)


def test_auto_falls_back_to_userspace_and_says_why() -> None:
    choice = choose_backend(Backend.AUTO, NO_ESP, tun_available=True)
    assert choice.backend is Backend.USERSPACE
    assert choice.reason == "the kernel cannot carry ESP (Requested type not found)"
    assert choice.esp_gcm is True  # charon's own crypto does GCM


def test_auto_without_esp_and_without_tun_asks_for_the_device() -> None:
    with pytest.raises(SystemSetupError, match=r"--device /dev/net/tun"):
        choose_backend(Backend.AUTO, NO_ESP, tun_available=False)


@pytest.mark.parametrize(("probe", "gcm"), [(ESP_GCM, True), (ESP_CBC_ONLY, False)])
def test_kernel_requested_and_available(probe: KernelProbe, gcm: bool) -> None:
    choice = choose_backend(Backend.KERNEL, probe, tun_available=False)
    assert choice == BackendChoice(Backend.KERNEL, "requested with VPN_IPSEC_BACKEND=kernel", gcm)


def test_kernel_requested_without_esp_is_a_setting_error() -> None:
    with pytest.raises(ConfigError) as caught:
        choose_backend(Backend.KERNEL, NO_ESP, tun_available=True)
    assert caught.value.setting == "VPN_IPSEC_BACKEND"
    assert "Requested type not found" in caught.value.problem
    assert "auto or userspace" in caught.value.fix


@pytest.mark.parametrize("probe", [ESP_GCM, ESP_CBC_ONLY, NO_ESP])
def test_userspace_requested_is_used_even_when_the_kernel_could(probe: KernelProbe) -> None:
    choice = choose_backend(Backend.USERSPACE, probe, tun_available=True)
    assert choice == BackendChoice(
        Backend.USERSPACE, "requested with VPN_IPSEC_BACKEND=userspace", esp_gcm=True
    )


def test_userspace_requested_without_tun_asks_for_the_device() -> None:
    with pytest.raises(SystemSetupError) as caught:
        choose_backend(Backend.USERSPACE, ESP_GCM, tun_available=False)
    assert "--device /dev/net/tun" in str(caught.value)
    assert "devices: [/dev/net/tun]" in str(caught.value)


@pytest.mark.parametrize("requested", list(Backend))
@pytest.mark.parametrize("tun", [True, False])
def test_without_net_admin_every_request_asks_for_the_capability(
    requested: Backend, tun: bool
) -> None:
    with pytest.raises(SystemSetupError) as caught:
        choose_backend(requested, NOT_PERMITTED, tun_available=tun)
    assert "--cap-add NET_ADMIN" in str(caught.value)
    assert "cap_add: [NET_ADMIN]" in str(caught.value)


# --- probe_kernel --------------------------------------------------------------------------


@dataclass
class FakeIp:
    """`ip xfrm state` as a kernel answers it: the stderr for each kind of state added."""

    cbc: str | None = None  # None: accepted
    gcm: str | None = None
    calls: list[list[str]] = field(default_factory=list)
    states: set[str] = field(default_factory=set)

    def __call__(self, args: Sequence[str], **_: object) -> subprocess.CompletedProcess[str]:
        args = list(args)
        self.calls.append(args)
        assert args[:3] == ["ip", "xfrm", "state"]
        spi = args[args.index("spi") + 1]
        if args[3] == "delete":
            assert spi in self.states, "deleting a state that was never added"
            self.states.remove(spi)
            return subprocess.CompletedProcess(args, 0, "", "")
        assert args[3] == "add"
        assert spi not in self.states, "File exists: the previous probe state was left behind"
        refusal = self.gcm if "rfc4106(gcm(aes))" in args else self.cbc
        if refusal is not None:
            return subprocess.CompletedProcess(args, 2, "", refusal)
        self.states.add(spi)
        return subprocess.CompletedProcess(args, 0, "", "")

    def verbs(self) -> list[str]:
        return [call[3] for call in self.calls]


@pytest.fixture
def fake_ip(monkeypatch: pytest.MonkeyPatch) -> FakeIp:
    fake = FakeIp()
    monkeypatch.setattr(subprocess, "run", fake)
    return fake


def test_kernel_with_esp_and_gcm(fake_ip: FakeIp) -> None:
    assert probe_kernel() == KernelProbe(esp=True, gcm=True, detail="")
    assert fake_ip.verbs() == ["add", "delete", "add", "delete"]
    assert fake_ip.states == set()


def test_every_probe_state_is_deleted_where_it_was_added(fake_ip: FakeIp) -> None:
    probe_kernel()
    adds = [call for call in fake_ip.calls if call[3] == "add"]
    deletes = [call for call in fake_ip.calls if call[3] == "delete"]
    for add, delete in zip(adds, deletes, strict=True):
        for key in ("src", "dst", "proto", "spi"):
            assert add[add.index(key) + 1] == delete[delete.index(key) + 1]


def test_kernel_without_esp_leads_to_userspace(fake_ip: FakeIp) -> None:
    fake_ip.cbc = NO_ESP_ANSWER
    probe = probe_kernel()
    assert probe == KernelProbe(esp=False, gcm=False, detail="Requested type not found")
    assert fake_ip.verbs() == ["add"]  # nothing was installed, nothing to delete
    choice = choose_backend(Backend.AUTO, probe, tun_available=True)
    assert choice.backend is Backend.USERSPACE
    assert "Requested type not found" in choice.reason


def test_no_permission_is_reported_as_such(fake_ip: FakeIp) -> None:
    fake_ip.cbc = NOT_PERMITTED_ANSWER
    probe = probe_kernel()
    assert probe.permitted is False
    assert fake_ip.verbs() == ["add"]
    with pytest.raises(SystemSetupError, match="NET_ADMIN"):
        choose_backend(Backend.AUTO, probe, tun_available=True)


def test_kernel_without_gcm_still_carries_cbc(fake_ip: FakeIp) -> None:
    fake_ip.gcm = NO_GCM_ANSWER
    probe = probe_kernel()
    assert (probe.esp, probe.gcm) == (True, False)
    assert fake_ip.verbs() == ["add", "delete", "add"]
    assert fake_ip.states == set()
    assert choose_backend(Backend.AUTO, probe, tun_available=True).esp_gcm is False


def test_only_the_last_line_of_the_answer_is_kept(fake_ip: FakeIp) -> None:
    fake_ip.cbc = "Warning: something unrelated\nError: Requested type not found.\n"
    assert probe_kernel().detail == "Requested type not found"


def test_silent_refusal_still_gives_a_reason(fake_ip: FakeIp) -> None:
    fake_ip.cbc = ""
    probe = probe_kernel()
    assert probe.esp is False
    assert probe.detail == "no answer"


# --- tun_available -------------------------------------------------------------------------


def test_tun_device_that_opens_is_available(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    device = tmp_path / "tun"
    device.touch()
    monkeypatch.setattr(backend, "TUN_DEVICE", device)
    assert backend.tun_available() is True


def test_missing_tun_device_is_not_available(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(backend, "TUN_DEVICE", tmp_path / "net" / "tun")
    assert backend.tun_available() is False
