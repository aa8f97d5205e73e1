"""The addresses a lab network must keep clear of, read from a fabricated host."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from ikev2_vpn_helper import hostnet
from ikev2_vpn_helper.hostnet import Address

ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
)
IPV6_ROUTE = (
    "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n"
)
TCP = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
    "   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
    "   1: 0200C0C0:9506 460012C6:01BB 01 00000000:00000000 00:00000000 00000000     0\n"
    "   2: 0200C0C0:9507 470012C6:01BB 06 00000000:00000000 03:00001768 00000000     0\n"
)
TCP6 = (
    "  sl  local_address                         remote_address                        st\n"
    "   0: 0000000000000000FFFF00000200C0C0:A98D 0000000000000000FFFF0000480012C6:0050 01\n"
    "   1: 00000000000000000000000001000000:A98D 000000FD000000000000000002000000:0050 01\n"
)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def ip(text: str) -> Address:
    return ipaddress.ip_address(text)


def test_resolvers_with_comments_options_and_zones() -> None:
    text = "# generated\nsearch example.test\nnameserver 198.18.3.53\nnameserver fe80::1%eth0\n"
    assert hostnet.resolvers(text + "options ndots:2\nnameserver bogus\n") == [
        ip("198.18.3.53"),
        ip("fe80::1"),
    ]


def test_gateways_of_ipv4_and_ipv6_routes(tmp_path: Path) -> None:
    write(tmp_path, "proc/net/route", ROUTE)
    write(tmp_path, "proc/net/ipv6_route", IPV6_ROUTE)
    assert hostnet.gateways(tmp_path) == [ip("192.0.2.1"), ip("fd00::1")]


def test_only_established_tcp_peers_count_and_mapped_ones_become_ipv4(tmp_path: Path) -> None:
    write(tmp_path, "proc/net/tcp", TCP)
    write(tmp_path, "proc/net/tcp6", TCP6)
    assert hostnet.tcp_peers(tmp_path) == [ip("198.18.0.70"), ip("198.18.0.72"), ip("fd00::2")]


def test_proxies_and_no_proxy() -> None:
    names, networks = hostnet.proxies(
        {
            "http_proxy": "http://user:pw@proxy.example.test:3128",
            "HTTPS_PROXY": "198.18.1.5:8080",
            "no_proxy": "localhost, .internal.test,*.corp.test,10.0.0.0/8,198.18.2.9",
        }
    )
    assert names == {"proxy.example.test", "198.18.1.5", "localhost", "internal.test", "corp.test"}
    assert networks == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("198.18.2.9")]


def test_apt_sources_in_both_formats(tmp_path: Path) -> None:
    write(
        tmp_path,
        "etc/apt/sources.list",
        "# deb http://commented.example.test/debian trixie main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example.test/debian trixie main\n"
        "deb-src https://two.example.test/debian trixie main # trailing\n",
    )
    write(
        tmp_path, "etc/apt/sources.list.d/extra.list", "deb mirror+http://three.example.test/m x\n"
    )
    write(tmp_path, "etc/apt/sources.list.d/off.list.disabled", "deb http://off.example.test/ x\n")
    write(
        tmp_path,
        "etc/apt/sources.list.d/debian.sources",
        "Types: deb\nURIs: http://four.example.test/debian\n  http://five.example.test/debian\n"
        "Suites: trixie\n\nTypes: deb\nuris: http://[2001:db8::80]/debian\n",
    )
    assert hostnet.apt_source_hosts(tmp_path) == {
        "one.example.test",
        "two.example.test",
        "three.example.test",
        "four.example.test",
        "five.example.test",
        "2001:db8::80",
    }


def test_pip_indexes_from_config_files_and_the_environment(tmp_path: Path) -> None:
    write(
        tmp_path,
        "etc/pip.conf",
        "[global]\nindex-url = https://pypi.mirror.test/simple\n"
        "extra-index-url =\n    https://extra1.test/simple\n    https://extra2.test/simple\n"
        "find-links = /opt/wheels\n",
    )
    write(tmp_path, "home/dev/.config/pip/pip.conf", "[install]\ntrusted-host = trusted.test\n")
    env = {"HOME": "/home/dev", "PIP_INDEX_URL": "https://env.test:8443/simple"}
    assert hostnet.pip_index_hosts(tmp_path, env) == {
        "pypi.mirror.test",
        "extra1.test",
        "extra2.test",
        "trusted.test",
        "env.test",
    }


def test_host_peers_gathers_every_source_and_resolves_names_once(tmp_path: Path) -> None:
    write(tmp_path, "etc/resolv.conf", "nameserver 10.255.255.53\n")
    write(tmp_path, "proc/net/route", ROUTE)
    write(tmp_path, "proc/net/tcp", TCP)
    write(tmp_path, "etc/apt/sources.list", "deb http://mirror.example.test/debian trixie main\n")
    asked: list[str] = []

    def resolve(names: Iterable[str]) -> list[Address]:
        asked.extend(names)
        return [ip("203.0.113.80")] if "mirror.example.test" in asked else []

    found = hostnet.host_peers(tmp_path, {"https_proxy": "http://198.18.9.9:3128"}, resolve)
    assert {str(network) for network in found} >= {
        "10.255.255.53/32",
        "192.0.2.1/32",
        "198.18.0.70/32",
        "198.18.9.9/32",
        "203.0.113.80/32",
    }
    # The image builds' own Debian mirror is looked up too; literal addresses are not.
    assert "mirror.example.test" in asked and "deb.debian.org" in asked
    assert "198.18.9.9" not in asked


def test_a_hanging_resolver_does_not_hang_the_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(name: str) -> list[Address]:
        if name == "slow.test":
            time.sleep(2)
        return [ip("198.18.5.5")]

    monkeypatch.setattr(hostnet, "_lookup", slow)
    assert hostnet.resolve_names(["fast.test", "slow.test"], timeout_s=0.5) == [ip("198.18.5.5")]
