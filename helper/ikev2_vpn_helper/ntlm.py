"""The NT hash of a password: what an EAP-MSCHAPv2 client really uses as its secret.

Windows and Apple clients hash the UTF-16LE form of what the user typed. strongSwan, given
a plain secret, widens each byte instead, which is only right for ASCII; handing charon the
NT hash makes the check's client behave like theirs for every password. MD4 is gone from
OpenSSL 3's default provider (and so from hashlib), hence this small RFC 1320 version.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF


def _rotl(value: int, shift: int) -> int:
    value &= _MASK
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def md4(data: bytes) -> bytes:
    """MD4 digest (RFC 1320). Used only to derive NT hashes, never for integrity."""
    length_bits = (len(data) * 8) & 0xFFFFFFFFFFFFFFFF
    message = data + b"\x80" + b"\0" * ((55 - len(data)) % 64) + struct.pack("<Q", length_bits)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for start in range(0, len(message), 64):
        x = struct.unpack("<16I", message[start : start + 64])
        aa, bb, cc, dd = a, b, c, d
        for i in range(16):  # round 1: F(b,c,d) = (b & c) | (~b & d)
            k, s = i, (3, 7, 11, 19)[i % 4]
            a = _rotl(a + ((b & c) | (~b & d)) + x[k], s)
            a, b, c, d = d, a, b, c
        for i in range(16):  # round 2: G = majority, constant 0x5A827999
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            a = _rotl(a + ((b & c) | (b & d) | (c & d)) + x[k] + 0x5A827999, s)
            a, b, c, d = d, a, b, c
        for i in range(16):  # round 3: H = parity, constant 0x6ED9EBA1
            k = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i]
            s = (3, 9, 11, 15)[i % 4]
            a = _rotl(a + (b ^ c ^ d) + x[k] + 0x6ED9EBA1, s)
            a, b, c, d = d, a, b, c
        a, b, c, d = (a + aa) & _MASK, (b + bb) & _MASK, (c + cc) & _MASK, (d + dd) & _MASK
    return struct.pack("<4I", a, b, c, d)


def nt_hash(password: str) -> bytes:
    """MD4 over the UTF-16LE password."""
    return md4(password.encode("utf-16-le"))
