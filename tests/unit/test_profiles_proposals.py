"""Every platform's suite maps to proposals the server accepts, and back without loss."""

from __future__ import annotations

import pytest
from profilefactory import accepted

from ikev2_vpn import defaults, render
from ikev2_vpn.profiles import proposals
from ikev2_vpn.settings import ProposalSet

SUITES = {
    "apple-and-strongswan": proposals.client_suites,
    "windows": proposals.windows_suites,
}


@pytest.mark.parametrize("esp_gcm", [True, False])
@pytest.mark.parametrize("proposal_set", list(ProposalSet))
@pytest.mark.parametrize("platform", SUITES)
def test_every_platform_suite_is_accepted(
    platform: str, proposal_set: ProposalSet, esp_gcm: bool
) -> None:
    suites = SUITES[platform](esp_gcm)
    server = render.proposals(proposal_set, esp_gcm)
    assert accepted(suites.ike.strongswan(), server.ike, ike=True)
    assert accepted(suites.esp.strongswan(), server.esp, ike=False)


@pytest.mark.parametrize("esp_gcm", [True, False])
def test_only_strong_suites_even_where_the_server_is_compatible(esp_gcm: bool) -> None:
    for make in SUITES.values():
        suites = make(esp_gcm)
        assert accepted(suites.ike.strongswan(), defaults.IKE_STRONG, ike=True)
        strong_esp = (defaults.ESP_STRONG_AEAD,) if esp_gcm else (defaults.ESP_STRONG_CBC,)
        assert accepted(suites.esp.strongswan(), strong_esp, ike=False)


@pytest.mark.parametrize(
    ("esp_gcm", "esp_auth", "esp_cipher"),
    [(True, "GCMAES256", "GCMAES256"), (False, "SHA256128", "AES256")],
)
def test_windows_constants(esp_gcm: bool, esp_auth: str, esp_cipher: str) -> None:
    """The docs/clients.md PowerShell line, with the ESP cipher the server's backend carries."""
    assert proposals.windows_ipsec(esp_gcm).parameters() == {
        "AuthenticationTransformConstants": esp_auth,
        "CipherTransformConstants": esp_cipher,
        "EncryptionMethod": "AES256",
        "IntegrityCheckMethod": "SHA256",
        "DHGroup": "ECP384",
        "PfsGroup": "ECP384",
    }


def test_an_esp_suite_cannot_mix_aead_and_integrity() -> None:
    with pytest.raises(ValueError, match="AEAD"):
        proposals.EspSuite(
            proposals.Cipher.AES256_GCM16, proposals.Hash.SHA256, proposals.Group.ECP384
        )


@pytest.mark.parametrize(
    ("client", "ike", "modern", "compatible"),
    [
        ("aes256-sha256-modp1024", True, False, True),  # stock Windows
        ("aes256-sha1", False, False, True),
        ("aes256gcm16-sha256-ecp384", True, False, False),  # AEAD with integrity: invalid
        ("3des-sha1-modp1024", True, False, False),
        ("aes256gcm16-prfsha384-curve25519", True, True, True),
        ("aes256-sha384-modp1536", True, False, False),
    ],
)
def test_the_acceptance_check_itself(
    client: str, ike: bool, modern: bool, compatible: bool
) -> None:
    for proposal_set, expected in (
        (ProposalSet.MODERN, modern),
        (ProposalSet.COMPATIBLE, compatible),
    ):
        server = render.proposals(proposal_set, esp_gcm=True)
        assert accepted(client, server.ike if ike else server.esp, ike=ike) is expected
