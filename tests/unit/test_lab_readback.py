"""The lab reads generated profiles' proposals back to the suites the server wrote."""

from __future__ import annotations

import pytest

from ikev2_vpn.profiles import proposals
from ikev2_vpn_lab import readback


@pytest.mark.parametrize("esp_gcm", [True, False])
def test_apple_values_read_back_to_the_same_suites(esp_gcm: bool) -> None:
    suites = proposals.client_suites(esp_gcm)
    read = readback.suites_from_apple(proposals.apple_ike(suites), proposals.apple_child(suites))
    assert read == suites


@pytest.mark.parametrize("esp_gcm", [True, False])
def test_windows_constants_read_back_to_the_same_suites(esp_gcm: bool) -> None:
    parameters = proposals.windows_ipsec(esp_gcm).parameters()
    assert readback.suites_from_windows(parameters) == proposals.windows_suites(esp_gcm)


def test_unknown_values_are_refused_when_reading_back() -> None:
    suites = proposals.client_suites(True)
    ike = proposals.apple_ike(suites) | {"EncryptionAlgorithm": "3DES"}
    with pytest.raises(ValueError, match="3DES"):
        readback.suites_from_apple(ike, proposals.apple_child(suites))
    parameters = proposals.windows_ipsec(True).parameters() | {"PfsGroup": "PFS2"}
    with pytest.raises(ValueError, match="PFS2"):
        readback.suites_from_windows(parameters)


def test_parse_ipsec_configuration_wants_exactly_one_line() -> None:
    with pytest.raises(ValueError, match="one Set-VpnConnectionIPsecConfiguration"):
        readback.parse_ipsec_configuration("Add-VpnConnection -Name x\n")
