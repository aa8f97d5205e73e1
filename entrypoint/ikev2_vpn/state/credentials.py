"""What charon needs to authenticate the server, whichever way it was obtained."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


@dataclass(frozen=True)
class ServerCredentials:
    """The server certificate, its chain and private key.

    ``intermediates`` are sent to clients after the leaf. ``ca`` is the trust anchor clients
    import when the server made its own CA (self-signed mode), else None.
    """

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    key_pem: bytes  # unencrypted PEM, loaded into charon over VICI; never logged
    key_path: Path  # where the key lives (referenced by the rendered swanctl.conf)
    ca: x509.Certificate | None = None

    def leaf_pem(self) -> bytes:
        return self.leaf.public_bytes(Encoding.PEM)

    def authority_pems(self) -> list[bytes]:
        """Intermediates and the own CA, loaded into charon as CA certificates."""
        chain = list(self.intermediates)
        if self.ca is not None:
            chain.append(self.ca)
        return [cert.public_bytes(Encoding.PEM) for cert in chain]
