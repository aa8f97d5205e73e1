"""The NT hash of a password: what an EAP-MSCHAPv2 client really uses as its secret.

Windows and Apple clients hash the UTF-16LE form of what the user typed. strongSwan, given
a plain secret, widens each byte instead, which is only right for ASCII; handing charon the
NT hash makes the check's client behave like theirs for every password. MD4 is gone from
OpenSSL 3's default provider (and so from hashlib), hence pycryptodome's.
"""

from __future__ import annotations

from Cryptodome.Hash import MD4


def nt_hash(password: str) -> bytes:
    """MD4 over the UTF-16LE password."""
    return MD4.new(password.encode("utf-16-le")).digest()  # noqa: S303 (MSCHAPv2 is MD4)
