"""The container's network: where client traffic leaves, forwarding, the firewall."""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from procsys import fake_proc_sys

from ikev2_vpn import defaults
from ikev2_vpn.apply import network
from ikev2_vpn.apply.network import enable_forwarding
from ikev2_vpn.errors import ConfigError, SystemSetupError
from ikev2_vpn.probe.network import Egress, check_pool, find_egress

Run = Callable[..., subprocess.CompletedProcess[str]]


def link(name: str, *addresses: tuple[str, int, str]) -> dict[str, Any]:
    """One entry of `ip -j -4 addr show`."""
    return {
        "ifindex": 2,
        "ifname": name,
        "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        "mtu": 1500,
        "operstate": "UP",
        "addr_info": [
            {"family": "inet", "local": local, "prefixlen": prefix, "scope": scope, "label": name}
            for local, prefix, scope in addresses
        ],
    }


LOOPBACK = link("lo", ("127.0.0.1", 8, "host"))


@pytest.fixture
def ip_outputs(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[Any], list[Any]], None]:
    """Make `ip -j -4 route show default` and `ip -j -4 addr show` print the given JSON."""

    def _set(routes: list[Any], links: list[Any]) -> None:
        answers = {
            ("ip", "-j", "-4", "route", "show", "default"): json.dumps(routes),
            ("ip", "-j", "-4", "addr", "show"): json.dumps(links),
        }

        def run(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
            assert kwargs.get("check") is True
            return subprocess.CompletedProcess(args, 0, answers[tuple(args)], "")

        monkeypatch.setattr(subprocess, "run", run)

    return _set


def test_egress_is_the_default_route_interface_not_eth0(
    ip_outputs: Callable[[list[Any], list[Any]], None],
) -> None:
    ip_outputs(
        [{"dst": "default", "gateway": "172.18.0.1", "dev": "ens5", "flags": []}],
        [
            LOOPBACK,
            link("eth0", ("192.168.1.2", 24, "global")),
            link("ens5", ("172.18.0.3", 16, "global"), ("10.20.0.5", 24, "global")),
            link("wg0", ("169.254.3.3", 16, "link")),
        ],
    )
    assert find_egress() == Egress(
        interface="ens5",
        address=ipaddress.IPv4Address("172.18.0.3"),
        networks=(
            ipaddress.IPv4Network("192.168.1.0/24"),
            ipaddress.IPv4Network("172.18.0.0/16"),
            ipaddress.IPv4Network("10.20.0.0/24"),
        ),
    )


def test_egress_from_output_measured_on_a_docker_host(
    ip_outputs: Callable[[list[Any], list[Any]], None],
) -> None:
    links = json.loads(
        '[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,'
        '"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"addr_info":'
        '[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo",'
        '"valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":4,'
        '"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1400,'
        '"qdisc":"pfifo_fast","operstate":"UP","group":"default","txqlen":1000,"addr_info":'
        '[{"family":"inet","local":"192.0.2.2","prefixlen":24,"broadcast":"192.0.2.255",'
        '"scope":"global","label":"eth0","valid_life_time":4294967295,'
        '"preferred_life_time":4294967295}]},{"ifindex":5,"ifname":"docker0","flags":'
        '["NO-CARRIER","BROADCAST","MULTICAST","UP"],"mtu":1500,"qdisc":"noqueue",'
        '"operstate":"DOWN","group":"default","addr_info":[{"family":"inet",'
        '"local":"172.17.0.1","prefixlen":16,"broadcast":"172.17.255.255","scope":"global",'
        '"label":"docker0","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]'
    )
    ip_outputs([{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0", "flags": []}], links)
    egress = find_egress()
    assert (egress.interface, str(egress.address)) == ("eth0", "192.0.2.2")
    assert [str(n) for n in egress.networks] == ["192.0.2.0/24", "172.17.0.0/16"]


def test_no_default_route_is_a_setup_error(
    ip_outputs: Callable[[list[Any], list[Any]], None],
) -> None:
    ip_outputs([], [LOOPBACK, link("eth0", ("192.168.1.2", 24, "global"))])
    with pytest.raises(SystemSetupError, match="no IPv4 default route"):
        find_egress()


def test_egress_interface_without_address_is_a_setup_error(
    ip_outputs: Callable[[list[Any], list[Any]], None],
) -> None:
    ip_outputs(
        [{"dst": "default", "dev": "tun0", "flags": []}],
        [LOOPBACK, link("eth0", ("192.168.1.2", 24, "global")), link("tun0")],
    )
    with pytest.raises(SystemSetupError, match="tun0 has no IPv4 address"):
        find_egress()


# --- check_pool ----------------------------------------------------------------------------

EGRESS = Egress(
    "eth0",
    ipaddress.IPv4Address("172.18.0.3"),
    (ipaddress.IPv4Network("172.18.0.0/16"), ipaddress.IPv4Network("10.5.0.0/24")),
)


@pytest.mark.parametrize(
    ("pool", "network_shown"),
    [
        ("172.18.5.0/24", "172.18.0.0/16"),  # inside an attached network
        ("10.0.0.0/8", "10.5.0.0/24"),  # around one
        ("10.5.0.0/24", "10.5.0.0/24"),
    ],
)
def test_pool_overlapping_an_attached_network_is_refused(pool: str, network_shown: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_pool(ipaddress.IPv4Network(pool), EGRESS)
    assert caught.value.setting == "VPN_POOL_V4"
    assert f"{pool} overlaps the container's network {network_shown}" in caught.value.problem


def test_pool_apart_from_attached_networks_is_fine() -> None:
    check_pool(ipaddress.IPv4Network("10.10.10.0/24"), EGRESS)


# --- enable_forwarding ---------------------------------------------------------------------


@pytest.fixture
def proc_sys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Path]:
    """A /proc/sys with the given sysctl values (default: Docker's, forwarding off).

    ``read_only`` mounts it read-only, as Docker does without --sysctl (root ignores chmod).
    """

    def _make(read_only: bool = False, **values: str) -> Path:
        start = {
            "net.ipv4.ip_forward": "0",
            "net.ipv4.conf.all.accept_redirects": "1",
            "net.ipv4.conf.all.send_redirects": "1",
        }
        return fake_proc_sys(monkeypatch, tmp_path, start, values, read_only=read_only)

    return _make


def sysctl(root: Path, name: str) -> str:
    return (root / name.replace(".", "/")).read_text()


def test_forwarding_is_switched_on_and_redirects_off(proc_sys: Callable[..., Path]) -> None:
    root = proc_sys()
    enable_forwarding()
    assert {name: sysctl(root, name) for name in defaults.SYSCTLS} == {
        "net.ipv4.ip_forward": "1\n",
        "net.ipv4.conf.all.accept_redirects": "0\n",
        "net.ipv4.conf.all.send_redirects": "0\n",
    }


def test_read_only_proc_sys_without_forwarding_names_the_sysctl_flag(
    proc_sys: Callable[..., Path],
) -> None:
    proc_sys(read_only=True)
    with pytest.raises(SystemSetupError) as caught:
        enable_forwarding()
    message = str(caught.value)
    assert "--sysctl net.ipv4.ip_forward=1" in message
    assert "sysctls: [net.ipv4.ip_forward=1]" in message
    assert "securityContext.sysctls in Kubernetes" in message
    assert "\n" not in message


def test_read_only_proc_sys_with_the_sysctls_given_is_fine(
    proc_sys: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    proc_sys(
        read_only=True,
        net__ipv4__ip_forward="1",
        net__ipv4__conf__all__accept_redirects="0",
        net__ipv4__conf__all__send_redirects="0",
    )
    enable_forwarding()
    assert caplog.records == []


def test_read_only_redirect_settings_only_warn(
    proc_sys: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    proc_sys(read_only=True, net__ipv4__ip_forward="1")
    with caplog.at_level(logging.WARNING):
        enable_forwarding()
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert "--sysctl net.ipv4.conf.all.accept_redirects=0" in warnings[0]
    assert "--sysctl net.ipv4.conf.all.send_redirects=0" in warnings[1]


# --- apply_firewall ------------------------------------------------------------------------


@pytest.fixture
def nft(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def run(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append({"args": list(args), **kwargs})
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def test_firewall_is_applied_in_one_nft_transaction(nft: list[dict[str, Any]]) -> None:
    network.apply_firewall("table inet ikev2_vpn\n")
    [call] = nft
    assert call["args"] == ["nft", "-f", "-"]
    assert call["input"] == "table inet ikev2_vpn\n"


def test_refused_firewall_is_one_line_with_nfts_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(args: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        stderr = (
            "/dev/stdin:7:1-40: Error: Could not process rule: Operation not permitted\n"
            "table inet ikev2_vpn {\n^^^^^^^^^^^^^^^^^^^^\n"
        )
        return subprocess.CompletedProcess(args, 1, "", stderr)

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(SystemSetupError) as caught:
        network.apply_firewall("table inet ikev2_vpn\n")
    assert str(caught.value) == (
        "installing the firewall rules failed: "
        "/dev/stdin:7:1-40: Error: Could not process rule: Operation not permitted"
    )
