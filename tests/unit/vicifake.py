"""A stand-in for charon's VICI session in the bans tests, and a way to run their background
work at once (so none of it outlives its test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class FakeVici:
    """charon's IKE_SAs, as ``list-sas`` lists them; records what is terminated."""

    def __init__(self, sas: list[tuple[int, str, str]] | None = None) -> None:
        self.sas = sas or []  # (unique id, remote address, state)
        self.terminated: list[dict[str, Any]] = []

    def list_sas(self, filters: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        wanted = (filters or {}).get("ike-id")
        for sa_id, address, state in self.sas:
            if wanted is None or str(sa_id) == wanted:
                sa = {"uniqueid": str(sa_id).encode(), "remote-host": address.encode()}
                yield {"ikev2-vpn": {**sa, "state": state.encode()}}

    def terminate(self, sa: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self.terminated.append(sa)
        yield {"msg": b"deleting IKE_SA"}


def now(work: Callable[[], object]) -> None:
    work()
