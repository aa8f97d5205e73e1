"""The identity the helper's clients dial is the one the server uses, however VPN_HOST is
written (found by tests/e2e/test_fuzzed_config_loads.py: a trailing dot made logins fail),
and the networks it tunnels with VPN_SPLIT_NETS."""

from __future__ import annotations

from unittest import mock

import pytest

from ikev2_vpn.settings import Settings
from ikev2_vpn_helper.server import Server


@pytest.mark.parametrize(
    "written", ["Vpn.Example.org.", "vpn.example.org", "203.0.113.7", "2001:DB8:0::7"]
)
def test_vpn_host_is_what_the_server_uses(written: str) -> None:
    container = mock.Mock(attrs={"Config": {"Env": [f"VPN_HOST={written}"]}})
    with mock.patch.dict("os.environ", {"VPN_HOST": written}, clear=True):
        expected = Settings().host
    assert Server(container).vpn_host == expected


def test_split_nets_are_the_servers() -> None:
    """The check's judgement of a split server uses the networks the server tunnels."""
    written = "10.20.0.0/16, 2001:db8:20::/48"
    container = mock.Mock(attrs={"Config": {"Env": [f"VPN_SPLIT_NETS={written}"]}})
    with mock.patch.dict(
        "os.environ", {"VPN_SPLIT_NETS": written, "VPN_POOL_V6": "fd00::/112"}, clear=True
    ):
        expected = Settings().split_nets
    assert Server(container).split_nets == expected
    assert Server(mock.Mock(attrs={"Config": {"Env": []}})).split_nets == ()
