"""The FreeRADIUS test server's pure parts: the files a test controls, and reading back the
accounting records it wrote."""

from __future__ import annotations

import ipaddress

import pytest

from ikev2_vpn_lab.radius import (
    DOCKERFILE,
    EAP_CONFIG,
    clients_conf,
    parse_detail,
    quoted,
    users_file,
)

# Two records as FreeRADIUS 3.2 wrote them in the end-to-end test (shortened).
DETAIL = """\
Tue Dec  1 13:11:18 2026
\tAcct-Status-Type = Start
\tAcct-Session-Id = "1796130674-2"
\tNAS-IP-Address = 203.0.113.2
\tUser-Name = "carol"
\tFramed-IP-Address = 10.10.10.1
\tNAS-Identifier = "vpn1.example.test"
\tTimestamp = 1796130678

Tue Dec  1 13:11:22 2026
\tAcct-Status-Type = Stop
\tAcct-Session-Id = "1796130674-2"
\tUser-Name = "say \\"hi\\" \\\\o/"
\tAcct-Input-Octets = 345
\tAcct-Terminate-Cause = User-Request

"""


def test_detail_records_become_attribute_dictionaries() -> None:
    start, stop = parse_detail(DETAIL)
    assert start == {
        "Acct-Status-Type": "Start",
        "Acct-Session-Id": "1796130674-2",
        "NAS-IP-Address": "203.0.113.2",
        "User-Name": "carol",
        "Framed-IP-Address": "10.10.10.1",
        "NAS-Identifier": "vpn1.example.test",
        "Timestamp": "1796130678",
    }
    assert stop["Acct-Status-Type"] == "Stop"
    assert stop["User-Name"] == 'say "hi" \\o/'
    assert stop["Acct-Input-Octets"] == "345"


def test_no_detail_file_yet_is_no_record() -> None:
    assert parse_detail("") == []


def test_users_with_cleartext_passwords_quoted() -> None:
    text = users_file({"carol": 'pw "1" \\ #x', "dave": "pw2"})
    assert 'carol Cleartext-Password := "pw \\"1\\" \\\\ #x"' in text.splitlines()
    assert 'dave Cleartext-Password := "pw2"' in text.splitlines()
    assert users_file({}).count("\n") == 1  # a comment, no user


@pytest.mark.parametrize("name", ["", "a b", 'a"b'])
def test_names_a_users_file_cannot_hold(name: str) -> None:
    with pytest.raises(ValueError, match="users file"):
        users_file({name: "pw"})


def test_line_breaks_cannot_be_quoted() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        quoted("a\nb")


def test_clients_are_the_servers_subnet_with_the_secret() -> None:
    text = clients_conf(ipaddress.IPv4Network("198.51.100.0/26"), 'se"cret')
    assert "    ipaddr = 198.51.100.0/26\n" in text
    assert '    secret = "se\\"cret"\n' in text


def test_the_image_speaks_eap_mschapv2_without_root() -> None:
    assert "default_eap_type = mschapv2" in EAP_CONFIG
    assert "tls" not in EAP_CONFIG  # no certificates needed
    assert "USER freerad" in DOCKERFILE
    assert '"-X"' not in DOCKERFILE  # debug mode would log passwords
