"""What a running server holds right now: its SAs, pool leases and charon's memory.

Read from inside the server container with swanctl and /proc (no VICI socket on the host),
for tests that must show nothing is left behind: after a client vanished, after a soak.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from docker.models.containers import Container

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.errors import HelperError

CHARON_PID_FILE = "/var/run/charon.pid"

_LEASE = re.compile(r"^\s+(\d+\.\d+\.\d+\.\d+)\s+(online|offline)\s+'(.*)'\s*$")
_IKE_SAS = re.compile(r"^IKE_SAs: (\d+) total, (\d+) half-open", re.MULTILINE)
_CHILD_SA = re.compile(r"\bstate=(?:INSTALLED|INSTALLING|REKEYING|REKEYED)\b")
_VMRSS = re.compile(r"^VmRSS:\s+(\d+) kB", re.MULTILINE)


@dataclass(frozen=True)
class Lease:
    address: str
    online: bool
    identity: str


@dataclass(frozen=True)
class Snapshot:
    ike_sas: int
    half_open: int
    child_sas: int
    leases: tuple[Lease, ...]

    def online(self) -> list[Lease]:
        return [lease for lease in self.leases if lease.online]

    @property
    def idle(self) -> bool:
        """No SA of any kind and no address handed out."""
        return not (self.ike_sas or self.half_open or self.child_sas or self.online())


def parse_leases(list_pools_leases: str) -> tuple[Lease, ...]:
    """Leases in ``swanctl --list-pools --leases`` output."""
    found = []
    for line in list_pools_leases.splitlines():
        match = _LEASE.match(line)
        if match:
            found.append(Lease(match.group(1), match.group(2) == "online", match.group(3)))
    return tuple(found)


def parse_ike_sas(stats: str) -> tuple[int, int]:
    """(total, half-open) IKE_SAs in ``swanctl --stats`` output."""
    match = _IKE_SAS.search(stats)
    if match is None:
        raise HelperError("swanctl --stats did not report IKE_SAs")
    return int(match.group(1)), int(match.group(2))


def count_child_sas(list_sas_raw: str) -> int:
    """CHILD_SAs in ``swanctl --list-sas --raw`` output (IKE_SAs say ESTABLISHED etc.)."""
    return len(_CHILD_SA.findall(list_sas_raw))


def parse_vmrss_kib(proc_status: str) -> int:
    match = _VMRSS.search(proc_status)
    if match is None:
        raise HelperError("no VmRSS line in /proc/<pid>/status")
    return int(match.group(1))


def snapshot(container: Container) -> Snapshot:
    total, half_open = parse_ike_sas(eng.run_checked(container, ["swanctl", "--stats"]))
    return Snapshot(
        ike_sas=total,
        half_open=half_open,
        child_sas=count_child_sas(eng.run_checked(container, ["swanctl", "--list-sas", "--raw"])),
        leases=parse_leases(eng.run_checked(container, ["swanctl", "--list-pools", "--leases"])),
    )


def charon_pid(container: Container) -> int:
    return int(eng.run_checked(container, ["cat", CHARON_PID_FILE]).strip())


def charon_rss_kib(container: Container) -> int:
    """Resident memory of the server's charon process, in KiB."""
    pid = charon_pid(container)
    # cat, not get_archive: /proc files report a size of 0 and would arrive empty.
    return parse_vmrss_kib(eng.run_checked(container, ["cat", f"/proc/{pid}/status"]))
