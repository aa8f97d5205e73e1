"""FreeRADIUS in a container on a lab network: the user database servers share in tests.

The end-to-end tests of ``VPN_RADIUS_*`` run real RADIUS exchanges against it: servers
resolve it by a Docker network alias on the egress network (their default route), relay
EAP-MSCHAPv2 to it and send it accounting. The test controls:

- the users (``Cleartext-Password``, what EAP-MSCHAPv2 needs), changed with
  :meth:`FreeRadius.set_users` while it runs (a SIGHUP makes it read them again);
- the clients (every address of the lab's egress subnet, with one shared secret);
- the accounting records, written to FreeRADIUS' ``detail`` files and read back with
  :meth:`FreeRadius.accounting` as dictionaries of attributes;
- whether it answers at all (:meth:`FreeRadius.pause`, :meth:`FreeRadius.resume`).

Only test users and a throw-away secret go in; its own log (stdout) says who logged in
("Login OK" / "Login incorrect"), never a password.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import docker
from docker.models.containers import Container

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.base import DEFAULT_BASE, Log
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.image import ensure_tool_image

RADIUS_IMAGE = "ikev2-vpn-freeradius:trixie"
DEFAULT_ALIAS = "radius.example.test"
AUTH_PORT = 1812
ACCT_PORT = 1813
CONFIG_DIR = "/etc/freeradius/3.0"
USERS_PATH = f"{CONFIG_DIR}/mods-config/files/authorize"
CLIENTS_PATH = f"{CONFIG_DIR}/clients.conf"
EAP_PATH = f"{CONFIG_DIR}/mods-enabled/eap"
ACCOUNTING_DIR = "/var/log/freeradius/radacct"  # detail files: <NAS address>/detail-<date>
READY_TIMEOUT_S = 20.0
READY_LINE = "Ready to process requests"
# After a SIGHUP: "HUP - Files loaded by a module have changed." or "HUP - No files changed."
HUP_DONE = "HUP - "
HUP_RELOADED = "have changed"

# Debian's FreeRADIUS 3.2, run in the foreground as its own user (no root, no capabilities:
# its ports are unprivileged), logging to standard output with a line per login.
DOCKERFILE = f"""\
ARG BASE_IMAGE
FROM ${{BASE_IMAGE}}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends freeradius \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
RUN sed -i -e '/^[[:space:]]*\\(user\\|group\\) = freerad/d' \\
           -e 's/^\\([[:space:]]*auth\\) = no/\\1 = yes/' {CONFIG_DIR}/radiusd.conf \\
 && mkdir -p /run/freeradius && chown freerad:freerad /run/freeradius
USER freerad
ENTRYPOINT ["freeradius", "-f", "-l", "stdout"]
"""

# EAP as IKEv2 clients speak it inside IKE_AUTH: MSCHAPv2 directly, no TLS tunnel, so the
# module needs no certificates. Replaces Debian's eap module, whose default is EAP-MD5.
EAP_CONFIG = """\
eap {
    default_eap_type = mschapv2
    timer_expire = 60
    ignore_unknown_eap_types = no
    cisco_accounting_username_bug = no
    max_sessions = ${max_requests}
    mschapv2 {
        send_error = no
    }
}
"""

# FreeRADIUS detail records:
#   Tue Dec  1 13:40:00 2026
#   \tAcct-Status-Type = Start
#   \tUser-Name = "alice"
_ATTRIBUTE = re.compile(r"^\s+([A-Za-z0-9-]+) = (.*)$")


# --- pure parts: configuration and accounting records -----------------------------------------


def quoted(text: str) -> str:
    """``text`` as a double-quoted FreeRADIUS string."""
    if any(c in text for c in "\r\n\0"):
        raise ValueError("FreeRADIUS strings cannot hold line breaks or NUL")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def users_file(users: Mapping[str, str]) -> str:
    """The ``files`` module's users: name -> cleartext password (what MSCHAPv2 needs)."""
    lines = ["# Written by ikev2_vpn_lab.radius for one test run."]
    for name, password in users.items():
        if not name or any(c.isspace() or c == '"' for c in name):
            raise ValueError(f"user name {name!r} cannot go into a users file")
        lines.append(f"{name} Cleartext-Password := {quoted(password)}")
    return "\n".join(lines) + "\n"


def clients_conf(network: ipaddress.IPv4Network | ipaddress.IPv6Network, secret: str) -> str:
    """Every address of ``network`` (the VPN servers' egress subnet) may ask, with ``secret``."""
    return (
        "# Written by ikev2_vpn_lab.radius: the VPN servers of one test run.\n"
        "client vpn-servers {\n"
        f"    ipaddr = {network}\n"
        f"    secret = {quoted(secret)}\n"
        "    shortname = vpn-servers\n"
        "}\n"
    )


def parse_detail(text: str) -> list[dict[str, str]]:
    """Accounting records of FreeRADIUS detail files, oldest first; quotes removed."""
    records: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if not line.strip():
            current = None
            continue
        found = _ATTRIBUTE.match(line)
        if found is None:  # the date line that opens a record
            current = {}
            records.append(current)
            continue
        if current is not None:
            value = found.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            current[found.group(1)] = value
    return records


# --- the image -----------------------------------------------------------------------------


def ensure_radius_image(
    engine: docker.DockerClient,
    log: Log = print,
    *,
    tag: str = RADIUS_IMAGE,
    base: str = DEFAULT_BASE,
) -> str:
    """Build the FreeRADIUS image when the engine does not have it yet; return its tag."""
    return ensure_tool_image(
        engine, tag=tag, dockerfile=DOCKERFILE, what="freeradius", log=log, base=base
    )


# --- the container -------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """One line of FreeRADIUS' log about a login (``auth = yes``)."""

    user: str
    ok: bool


_LOGIN = re.compile(r"\b(Login OK|Login incorrect)[^\[]*\[([^\]/]*)")


class FreeRadius:
    """A running FreeRADIUS: where it is, what it knows, what it recorded."""

    def __init__(self, container: Container, alias: str, secret: str) -> None:
        self.container = container
        self.alias = alias
        self.secret = secret

    @classmethod
    def start(
        cls,
        engine: docker.DockerClient,
        *,
        network: str,
        clients: ipaddress.IPv4Network | ipaddress.IPv6Network,
        secret: str,
        users: Mapping[str, str],
        name: str,
        run_id: str | None,
        alias: str = DEFAULT_ALIAS,
        image: str = RADIUS_IMAGE,
        timeout_s: float = READY_TIMEOUT_S,
    ) -> FreeRadius:
        """Start FreeRADIUS on ``network`` as ``alias``, answering ``clients`` that know
        ``secret``, with ``users`` (name -> password); wait until it serves requests."""
        container = eng.start_tool(
            engine,
            image,
            name=name,
            network=network,
            alias=alias,
            files=[
                eng.FileSpec(CLIENTS_PATH, clients_conf(clients, secret).encode()),
                eng.FileSpec(EAP_PATH, EAP_CONFIG.encode()),
                eng.FileSpec(USERS_PATH, users_file(users).encode()),
            ],
            builder="ensure_radius_image",
            labels=eng.labels(run_id, "radius"),
        )
        radius = cls(container, alias, secret)
        radius.wait_for_log(READY_LINE, timeout_s)
        return radius

    @property
    def name(self) -> str:
        return str(self.container.name)

    @property
    def address(self) -> str:
        self.container.reload()
        return next(iter(eng.network_addresses(self.container).values()))

    def set_users(self, users: Mapping[str, str], timeout_s: float = READY_TIMEOUT_S) -> None:
        """Replace the users and make FreeRADIUS read them (SIGHUP), waiting until it did."""
        eng.put_files(self.container, [eng.FileSpec(USERS_PATH, users_file(users).encode())])
        before = self.logs().count(HUP_DONE)
        self.container.kill(signal="SIGHUP")
        started = time.monotonic()
        while (log := self.logs()).count(HUP_DONE) <= before:
            if time.monotonic() - started > timeout_s:
                raise HelperError(self._failure(f"did not reload its users in {timeout_s} s"))
            time.sleep(0.2)
        last = log[log.rindex(HUP_DONE) :].splitlines()[0]
        if HUP_RELOADED not in last:  # "No files changed": the users file kept its mtime
            raise HelperError(self._failure(f"did not reload its users ({last.strip()})"))

    def accounting(self) -> list[dict[str, str]]:
        """Every accounting record received so far, oldest first (all NAS together)."""
        result = eng.run_in(
            self.container,
            ["find", ACCOUNTING_DIR, "-type", "f", "-name", "detail-*", "-exec", "cat", "{}", "+"],
        )
        if result.exit_code != 0 and "No such file" not in result.stderr:
            raise HelperError(f"cannot read the accounting records: {result.stderr.strip()}")
        return parse_detail(result.stdout)

    def logins(self) -> list[Login]:
        """Logins FreeRADIUS accepted or refused, in order."""
        return [
            Login(user=found.group(2), ok=found.group(1) == "Login OK")
            for found in _LOGIN.finditer(self.logs())
        ]

    def pause(self) -> None:
        """Freeze FreeRADIUS: requests get no answer at all (no ICMP error either)."""
        self.container.pause()

    def resume(self) -> None:
        self.container.unpause()

    def wait_for_log(self, text: str, timeout_s: float) -> float:
        """Seconds until ``text`` appears in the log; fails if FreeRADIUS stopped."""
        started = time.monotonic()
        while text not in self.logs():
            self.container.reload()
            if self.container.status not in {"created", "running"}:
                raise HelperError(self._failure(f"stopped ({self.container.status})"))
            if time.monotonic() - started > timeout_s:
                raise HelperError(self._failure(f"logged no {text!r} in {timeout_s} s"))
            time.sleep(0.2)
        return time.monotonic() - started

    def logs(self) -> str:
        return str(self.container.logs(stdout=True, stderr=True).decode(errors="replace"))

    def remove(self) -> None:
        self.container.remove(force=True, v=True)

    def _failure(self, what: str) -> str:
        tail = eng.log_tail(self.container, 15, hide=[self.secret]).rstrip()
        indented = "\n".join(f"  | {line}" for line in tail.splitlines())
        return f"FreeRADIUS {self.name} {what}; its last log lines:\n{indented}"
