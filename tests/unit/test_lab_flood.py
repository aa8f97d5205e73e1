"""The IKE_SA_INIT flood: requests charon can parse, answers told apart, addresses chosen."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_lab.client import ike_flood as fl
from ikev2_vpn_lab.flood import FloodResult, spare_addresses

SPI = bytes.fromhex("0102030405060708")
PUBLIC = bytes(range(32))
NONCE = bytes(range(100, 132))


def test_request_parses_back_into_sa_ke_nonce() -> None:
    message = fl.ike_sa_init(SPI, PUBLIC, NONCE)
    spi_i, spi_r, first, version, exchange, flags, msg_id, length = fl.HEADER.unpack_from(message)
    assert (spi_i, spi_r, first) == (SPI, bytes(8), fl.SA)
    assert (version, exchange, flags, msg_id) == (0x20, 34, 0x08, 0)
    assert length == len(message)
    found = list(fl.payloads(message))
    assert [kind for kind, _ in found] == [fl.SA, fl.KE, fl.NONCE]
    ke, nonce = found[1][1], found[2][1]
    assert struct.unpack_from("!HH", ke) == (fl.CURVE25519, 0) and ke[4:] == PUBLIC
    assert nonce == NONCE
    # header + SA (4 + proposal 8 + transforms 12 + 8 + 8 + 8) + KE (4 + 4 + 32) + Nonce (4 + 32)
    assert len(message) == 28 + 48 + 40 + 36


def test_proposal_offers_what_the_server_accepts() -> None:
    body = fl.sa_payload_body()
    last, _, length, number, protocol, spi_size, count = struct.unpack_from("!BBHBBBB", body)
    assert (last, length, number, protocol, spi_size, count) == (0, len(body), 1, 1, 0, 4)
    offset, transforms = 8, []
    while offset < len(body):
        more, _, size, kind, _, ident = struct.unpack_from("!BBHBBH", body, offset)
        transforms.append((more, kind, ident, body[offset + 8 : offset + size]))
        offset += size
    assert offset == len(body)
    assert [t[0] for t in transforms] == [3, 3, 3, 0]
    assert [(t[1], t[2]) for t in transforms] == [(1, 12), (2, 5), (3, 12), (4, 31)]
    assert transforms[0][3] == struct.pack("!HH", 0x800E, 256)  # AES key length 256


def test_every_request_is_a_new_ike_sa() -> None:
    first, second = fl.random_request(), fl.random_request()
    assert first[:8] != second[:8] and len(first) == len(second)


@pytest.mark.parametrize(("spi", "nonce"), [(bytes(8), NONCE), (SPI[:4], NONCE), (SPI, b"x")])
def test_malformed_requests_are_refused(spi: bytes, nonce: bytes) -> None:
    with pytest.raises(ValueError):
        fl.ike_sa_init(spi, PUBLIC, nonce)


def answer(payloads: list[tuple[int, bytes]]) -> bytes:
    body = b""
    for index, (_, data) in enumerate(payloads):
        following = payloads[index + 1][0] if index + 1 < len(payloads) else 0
        body += struct.pack("!BBH", following, 0, 4 + len(data)) + data
    first = payloads[0][0] if payloads else 0
    header = fl.HEADER.pack(SPI, bytes(8), first, 0x20, 34, 0x20, 0, 28 + len(body))
    return header + body


def notify(kind: int, data: bytes = b"") -> tuple[int, bytes]:
    return fl.NOTIFY, struct.pack("!BBH", 0, 0, kind) + data


def test_answers_are_told_apart() -> None:
    assert fl.classify(answer([notify(fl.COOKIE, b"c" * 24)])) == "cookie"
    assert fl.classify(answer([notify(fl.INVALID_KE_PAYLOAD, b"\x00\x1f")])) == "invalid_ke"
    assert fl.classify(answer([(fl.SA, b"s"), (fl.KE, b"k"), (fl.NONCE, b"n")])) == "ike_sa_init"
    assert fl.classify(b"\x00" * 10) == "junk"
    assert fl.classify(fl.ike_sa_init(SPI, PUBLIC, NONCE)) == "junk"  # a request, not an answer


def test_lengths_that_lie_are_caught() -> None:
    message = bytearray(fl.ike_sa_init(SPI, PUBLIC, NONCE))
    message[30:32] = struct.pack("!H", 4000)  # the SA payload claims to run past the end
    with pytest.raises(ValueError):
        list(fl.payloads(bytes(message)))


def test_spare_addresses_come_from_the_top_of_the_subnet() -> None:
    subnet = ipaddress.IPv4Network("192.0.2.64/26")
    assert spare_addresses(subnet, 3) == ["192.0.2.126", "192.0.2.125", "192.0.2.124"]
    with pytest.raises(HelperError):
        spare_addresses(subnet, 40)


def test_flood_result_reads_the_script_output() -> None:
    result = FloodResult.from_script(
        {"sent": 10, "seconds": 1.0, "rate": 10.0, "sources": 2, "answers": {"cookie": 7}}
    )
    assert result.answers == {"cookie": 7} and result.send_errors == 0


def test_a_cookie_is_answered_with_the_same_request_and_the_cookie_first() -> None:
    request = fl.ike_sa_init(SPI, PUBLIC, NONCE, 1)  # MODP-768: refused, cheap
    asked = fl.cookie_of(answer([notify(fl.COOKIE, b"c" * 24)]))
    assert asked == (SPI, b"c" * 24)
    retry = fl._with_cookie(request, asked[1], 1)
    found = list(fl.payloads(retry))
    assert [kind for kind, _ in found] == [fl.NOTIFY, fl.SA, fl.KE, fl.NONCE]
    assert found[0][1] == struct.pack("!BBH", 0, 0, fl.COOKIE) + b"c" * 24
    assert list(fl.payloads(request)) == found[1:] and retry[:8] == SPI
    assert fl.cookie_of(answer([notify(fl.NO_PROPOSAL_CHOSEN)])) is None
    assert fl._with_cookie(b"", b"c" * 24, 1) == b""  # a request no longer kept
