"""An attacker container that floods a server with IKE_SA_INIT requests.

It runs the server's image with the entrypoint replaced, on the network it shares with the
server, and sends with this package's ``client/ike_flood.py`` (as the helper's clients use
its ``client/probe.py``). For a flood from many addresses it adds addresses from the top
of that network's subnet to its own interface (Docker hands out addresses from the
bottom), so it needs NET_ADMIN. Only the lab's own server is ever the destination.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import docker
import jinja2
from docker.models.containers import Container

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.vpnclient import (
    SWANCTL_CONF,
    TOOLS_DIR,
    VpnClient,
    address_on,
    create_tool_container,
    swanctl_value,
)

FLOOD_SCRIPT = f"{TOOLS_DIR}/ike_flood.py"


def lab_client_file(name: str) -> bytes:
    """A file of this package's ``client/`` directory (what runs inside the attacker)."""
    return resources.files(__package__).joinpath("client", name).read_bytes()


IDLE = ["python3", "-c", "import time; time.sleep(1e9)"]


@dataclass(frozen=True)
class FloodResult:
    """What one flood sent and what came back."""

    sent: int
    seconds: float
    rate: float
    sources: int
    send_errors: int = 0
    answers: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_script(cls, answer: dict[str, Any]) -> FloodResult:
        return cls(
            sent=int(answer["sent"]),
            seconds=float(answer["seconds"]),
            rate=float(answer["rate"]),
            sources=int(answer["sources"]),
            send_errors=int(answer.get("send_errors", 0)),
            answers={str(k): int(v) for k, v in dict(answer.get("answers", {})).items()},
        )


def spare_addresses(subnet: ipaddress.IPv4Network, count: int) -> list[str]:
    """``count`` addresses from the top of ``subnet`` (below broadcast), highest first."""
    hosts = subnet.num_addresses - 2
    if not 0 < count <= hosts // 2:
        raise HelperError(f"{subnet} has no room for {count} extra attacker addresses")
    top = int(subnet.broadcast_address) - 1
    return [str(ipaddress.IPv4Address(top - i)) for i in range(count)]


class Attacker:
    """A container on ``network`` that sends IKE_SA_INITs to ``server_address``."""

    def __init__(self, container: Container, network: str, server_address: str) -> None:
        self.container = container
        self.network = network
        self.server_address = server_address
        self.addresses = [address_on(container, network)]

    @classmethod
    def start(
        cls,
        engine: docker.DockerClient,
        *,
        image: str,
        network: str,
        server_address: str,
        name: str,
        run_id: str | None,
    ) -> Attacker:
        container = create_tool_container(
            engine,
            image,
            name,
            network,
            entrypoint=IDLE,
            cap_add=["NET_ADMIN"],
            labels=eng.labels(run_id, "attacker"),
        )
        eng.put_files(container, [eng.FileSpec(FLOOD_SCRIPT, lab_client_file("ike_flood.py"))])
        container.start()
        return cls(container, network, server_address)

    def add_addresses(self, count: int) -> list[str]:
        """Give the attacker ``count`` more source addresses on its network's subnet."""
        route = json.loads(
            eng.run_checked(self.container, ["ip", "-j", "-4", "route", "get", self.server_address])
        )
        device = str(route[0]["dev"])
        info = json.loads(
            eng.run_checked(self.container, ["ip", "-j", "-4", "addr", "show", device])
        )
        local = info[0]["addr_info"][0]
        subnet = ipaddress.IPv4Network(f"{local['local']}/{local['prefixlen']}", strict=False)
        added = [a for a in spare_addresses(subnet, count) if a not in self.addresses]
        for address in added:
            eng.run_checked(
                self.container,
                ["ip", "addr", "add", f"{address}/{subnet.prefixlen}", "dev", device],
            )
        self.addresses.extend(added)
        return added

    def flood(
        self,
        *,
        rate: float,
        duration_s: float,
        sources: list[str] | None = None,
        group: int | None = None,
        answer_cookies: bool = False,
    ) -> FloodResult:
        """Flood for ``duration_s`` seconds at ``rate`` packets per second (blocks).
        ``group``: the key exchange group offered (None: one the server accepts);
        ``answer_cookies``: resend each request with the cookie the server asks for."""
        argv = ["python3", FLOOD_SCRIPT, "--server", self.server_address]
        for source in sources or self.addresses:
            argv += ["--source", source]
        argv += ["--rate", str(rate), "--duration", str(duration_s)]
        if group is not None:
            argv += ["--group", str(group)]
        if answer_cookies:
            argv.append("--answer-cookies")
        output = eng.run_checked(self.container, argv)
        try:
            return FloodResult.from_script(json.loads(output))
        except (ValueError, KeyError) as error:
            raise HelperError(f"the flood in {self.container.name} said: {output!r}") from error

    def remove(self) -> None:
        self.container.remove(force=True, v=True)


# --- a burst from one address ------------------------------------------------------------------

BURST_PREFIX = "burst"
_ESTABLISHED = re.compile(rf"^{BURST_PREFIX}\d+: #\d+, ESTABLISHED", re.MULTILINE)


def render_burst_conf(
    server_address: str,
    server_id: str,
    users: Sequence[str],
    password: str,
    prefix: str = BURST_PREFIX,
) -> str:
    """swanctl.conf for one client that dials as every one of ``users`` at once."""
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - configuration text, not HTML
    )
    environment.filters["swanctl_value"] = swanctl_value
    template = environment.from_string(lab_client_file("burst.conf.j2").decode())
    return template.render(
        prefix=prefix,
        server_address=swanctl_value(server_address),
        server_id=server_id,
        users=list(users),
        password_hex=password.encode().hex(),
    )


def established_count(list_sas: str) -> int:
    """Burst IKE_SAs that ``swanctl --list-sas`` shows as established."""
    return len(_ESTABLISHED.findall(list_sas))


def burst(
    client: VpnClient, users: Sequence[str], password: str, timeout_s: float = 60.0
) -> tuple[int, float]:
    """Dial as all ``users`` at once from ``client``'s one address; wait until every IKE_SA
    is established or ``timeout_s`` passes. Returns (established, seconds)."""
    conf = render_burst_conf(client.server_address, client.server_id, users, password)
    eng.put_files(client.container, [eng.FileSpec(SWANCTL_CONF, conf.encode(), 0o600)])
    start = time.monotonic()
    eng.run_checked(client.container, ["swanctl", "--load-all", "--noprompt"])
    established = 0
    while time.monotonic() - start < timeout_s:
        listing = eng.run_in(client.container, ["swanctl", "--list-sas", "--noblock"]).stdout
        established = established_count(listing)
        if established >= len(users):
            break
        time.sleep(0.2)
    return established, time.monotonic() - start


# --- password guessing ---------------------------------------------------------------------------

MODP_768 = 1  # a key exchange group no server accepts: IKE_SA_INITs charon logs and refuses


def dial_all(client: VpnClient, users: Sequence[str], password: str, prefix: str) -> None:
    """Dial as every one of ``users`` at once from ``client``, without waiting for answers.
    A new ``prefix`` each time makes new connections (the previous ones are unloaded)."""
    conf = render_burst_conf(client.server_address, client.server_id, users, password, prefix)
    eng.put_files(client.container, [eng.FileSpec(SWANCTL_CONF, conf.encode(), 0o600)])
    eng.run_checked(client.container, ["swanctl", "--load-all", "--noprompt"])


SLOW_LOGINS_FILE = f"{TOOLS_DIR}/slow_logins.nft"
# IKE_AUTH requests (exchange type 35) with message ID 3: the strongSwan client's third,
# which carries the EAP-MSCHAPv2 response (1: IDi, 2: the EAP identity). Every other one is
# dropped, so the password reaches the server one retransmit after the EAP identity.
SLOW_LOGINS_NFT = """\
table inet slow_logins {
    chain output {
        type filter hook output priority filter; policy accept;
        udp dport 500 @th,208,8 35 @th,224,32 3 numgen inc mod 2 == 0 drop
        udp dport 4500 @th,64,32 0 @th,240,8 35 @th,256,32 3 numgen inc mod 2 == 0 drop
    }
}
"""


def slow_logins(client: VpnClient) -> None:
    """Make each login of ``client`` wait one retransmit between its EAP identity and its
    password (4 s with strongSwan's timers, the client's ``retransmit`` otherwise): its
    every other password message is dropped on the way out. charon gives up on a login
    that takes longer than its half-open timeout (20 s here)."""
    eng.put_files(client.container, [eng.FileSpec(SLOW_LOGINS_FILE, SLOW_LOGINS_NFT.encode())])
    eng.run_checked(client.container, ["nft", "-f", SLOW_LOGINS_FILE])
