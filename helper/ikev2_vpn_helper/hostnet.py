"""What the host's own networking uses, so that lab networks keep clear of it.

A Docker bridge whose subnet holds an address the host talks to takes that address's route
away from the host: a lab network over the package mirror's address cuts every download on
the machine. So besides the host's own subnets (:mod:`ikev2_vpn_helper.topology` reads them
with ``ip``), a lab avoids every address the host is talking to or is about to:

- its resolvers (``/etc/resolv.conf``, and systemd-resolved's upstream list);
- its gateways (``/proc/net/route``, ``/proc/net/ipv6_route``);
- the proxies named in the environment (``http_proxy``, ``https_proxy``, ``all_proxy`` and
  their upper-case forms) and the hosts and networks of ``no_proxy``, which it reaches
  directly;
- the peers of its established TCP connections (``/proc/net/tcp``, ``tcp6``);
- the hosts its package sources name: apt's (``sources.list``, ``sources.list.d/*.list``
  and ``*.sources``), pip's index and extra index (pip's configuration files and
  ``PIP_INDEX_URL``/``PIP_EXTRA_INDEX_URL``), and the Debian mirrors image builds use.

Names are resolved with ``getaddrinfo``; a name that does not resolve within a few seconds
is skipped (the host cannot be talking to it either). Every reader takes the file system
root and the environment as arguments, so tests can hand it a fabricated host.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from pathlib import Path
from urllib.parse import urlsplit

from .base import DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOLV_CONFS = ("etc/resolv.conf", "run/systemd/resolve/resolv.conf")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")
PIP_INDEX_KEYS = ("index-url", "extra-index-url", "trusted-host", "find-links")
RESOLVE_TIMEOUT_S = 5.0
TCP_ESTABLISHED = "01"
RTF_GATEWAY = 0x2


Resolver = Callable[[Iterable[str]], list[Address]]


def host_peers(
    root: Path = Path("/"),
    env: Mapping[str, str] | None = None,
    resolve: Resolver | None = None,
) -> list[Network]:
    """Every address (as a /32 or /128) and network the host talks to, read under ``root``."""
    env = os.environ if env is None else env
    found = [_single(address) for address in _known_addresses(root)]
    names, networks = _named_peers(root, env)
    found.extend(networks)
    literal = {address for address in map(_address, names) if address is not None}
    found.extend(_single(address) for address in literal)
    unresolved = sorted(name for name in names if _address(name) is None)
    found.extend(_single(address) for address in (resolve or resolve_names)(unresolved))
    return found


def _known_addresses(root: Path) -> list[Address]:
    """Addresses read as addresses: resolvers, gateways, TCP peers."""
    found = [address for text in _read_all(root, RESOLV_CONFS) for address in resolvers(text)]
    return [*found, *gateways(root), *tcp_peers(root)]


def _named_peers(root: Path, env: Mapping[str, str]) -> tuple[set[str], list[Network]]:
    """Host names (or literal addresses) of proxies and package sources, and no_proxy's
    networks."""
    names, networks = proxies(env)
    names.update(apt_source_hosts(root))
    names.update(pip_index_hosts(root, env))
    names.update(_host_of(url) for url in (DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR))
    return names - {""}, networks


def resolve_names(names: Iterable[str], timeout_s: float = RESOLVE_TIMEOUT_S) -> list[Address]:
    """Every address ``getaddrinfo`` gives for ``names``, all looked up at once."""
    names = list(names)
    if not names:
        return []
    pool = ThreadPoolExecutor(max_workers=min(8, len(names)))
    futures = [pool.submit(_lookup, name) for name in names]
    done, _pending = wait_all(futures, timeout=timeout_s)
    # A resolver that hangs must not hang the lab: leave unfinished look-ups behind.
    pool.shutdown(wait=False, cancel_futures=True)
    return [address for future in done for address in future.result()]


def _lookup(name: str) -> list[Address]:
    try:
        answers = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    found = []
    for _family, _type, _proto, _canonical, sockaddr in answers:
        address = _address(str(sockaddr[0]))
        if address is not None:
            found.append(address)
    return found


# --- readers (pure: text in, addresses or names out) ---------------------------------------


def resolvers(resolv_conf: str) -> list[Address]:
    """The ``nameserver`` addresses of a resolv.conf."""
    found = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            address = _address(fields[1].split("%")[0])  # fe80::1%eth0: drop the zone
            if address is not None:
                found.append(address)
    return found


def gateways(root: Path) -> list[Address]:
    """The next hops of the host's routes (IPv4 and IPv6)."""
    found: list[Address] = []
    for line in _lines(root / "proc/net/route")[1:]:
        fields = line.split()
        if len(fields) > 3 and int(fields[3], 16) & RTF_GATEWAY:
            found.append(ipaddress.IPv4Address(bytes.fromhex(fields[2])[::-1]))
    for line in _lines(root / "proc/net/ipv6_route"):
        fields = line.split()
        if len(fields) > 8 and int(fields[8], 16) & RTF_GATEWAY:
            found.append(ipaddress.IPv6Address(bytes.fromhex(fields[4])))
    return found


def tcp_peers(root: Path) -> list[Address]:
    """The remote addresses of the host's established TCP connections."""
    found = []
    for name in ("tcp", "tcp6"):
        for line in _lines(root / "proc/net" / name)[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == TCP_ESTABLISHED:
                found.append(proc_net_address(fields[2].split(":")[0]))
    return found


def proc_net_address(hex_address: str) -> Address:
    """An address as /proc/net/tcp writes it: 32-bit words in host (little-endian) order;
    an IPv4-mapped IPv6 address becomes the IPv4 address."""
    raw = bytes.fromhex(hex_address)
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(swapped) == 4:
        return ipaddress.IPv4Address(swapped)
    address = ipaddress.IPv6Address(swapped)
    return address.ipv4_mapped or address


def proxies(env: Mapping[str, str]) -> tuple[set[str], list[Network]]:
    """(host names or addresses, networks) of the proxy variables and ``no_proxy``."""
    names: set[str] = set()
    networks: list[Network] = []
    for variable in PROXY_VARIABLES:
        for value in (env.get(variable), env.get(variable.upper())):
            if value:
                names.add(_host_of(value if "://" in value else f"http://{value}"))
    for value in (env.get("no_proxy"), env.get("NO_PROXY")):
        for raw in (value or "").split(","):
            entry = raw.strip().lstrip("*.")
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if entry:
                    names.add(_host_of(f"http://{entry}"))
    return names, networks


def apt_source_hosts(root: Path) -> set[str]:
    """The hosts of every URI in apt's sources (one-line and deb822 formats)."""
    directory = root / "etc/apt"
    files = [directory / "sources.list", *sorted(directory.glob("sources.list.d/*.list"))]
    hosts = {host for path in files for host in one_line_source_hosts(_text(path))}
    for path in sorted(directory.glob("sources.list.d/*.sources")):
        hosts.update(deb822_source_hosts(_text(path)))
    return hosts


def one_line_source_hosts(text: str) -> set[str]:
    """``deb [options] URI suite components`` lines."""
    hosts: set[str] = set()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields or fields[0] not in {"deb", "deb-src"}:
            continue
        rest = fields[1:]
        if rest and rest[0].startswith("["):
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if rest:
            hosts.add(_host_of(rest[0]))
    return hosts - {""}


def deb822_source_hosts(text: str) -> set[str]:
    """``URIs:`` fields of deb822 stanzas (a field may continue on indented lines)."""
    hosts: set[str] = set()
    in_uris = False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line[:1].isspace() and in_uris:
            hosts.update(_host_of(uri) for uri in line.split())
            continue
        name, _, value = line.partition(":")
        in_uris = name.strip().lower() == "uris"
        if in_uris:
            hosts.update(_host_of(uri) for uri in value.split())
    return hosts - {""}


def pip_index_hosts(root: Path, env: Mapping[str, str]) -> set[str]:
    """The hosts of pip's index URLs: its configuration files, then the environment."""
    paths = [root / "etc/pip.conf", root / "etc/xdg/pip/pip.conf", *_home_configs(root, env)]
    if env.get("PIP_CONFIG_FILE"):
        paths.append(root / env["PIP_CONFIG_FILE"].lstrip("/"))
    hosts: set[str] = set()
    for path in paths:
        hosts.update(pip_config_hosts(_text(path)))
    for variable in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
        hosts.update(_hosts_of_values(env.get(variable, "")))
    return hosts - {""}


def pip_config_hosts(text: str) -> set[str]:
    """Hosts named by index-url, extra-index-url, trusted-host or find-links in any section."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return set()
    hosts: set[str] = set()
    for section in parser.sections():
        for key in PIP_INDEX_KEYS:
            hosts.update(_hosts_of_values(parser.get(section, key, fallback="")))
    return hosts


def _home_configs(root: Path, env: Mapping[str, str]) -> Iterator[Path]:
    home = env.get("HOME")
    if home:
        base = root / home.lstrip("/")
        yield base / ".pip/pip.conf"
        yield base / ".config/pip/pip.conf"


def _hosts_of_values(text: str) -> set[str]:
    """Hosts of whitespace-separated URLs or bare host names (trusted-host takes names)."""
    hosts: set[str] = set()
    for value in text.split():
        if value.startswith("/") or value.startswith("file:"):
            continue  # a local directory of wheels
        hosts.add(_host_of(value if "://" in value else f"http://{value}"))
    return hosts


def _host_of(url: str) -> str:
    """The host of a URL (``mirror+http://`` and similar apt methods included)."""
    scheme, _, _ = url.partition("://")
    if "+" in scheme:
        url = url.split("+", 1)[1]
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _single(address: Address) -> Network:
    return ipaddress.ip_network(address)


def _read_all(root: Path, relative: Iterable[str]) -> list[str]:
    return [_text(root / path) for path in relative]


def _lines(path: Path) -> list[str]:
    return _text(path).splitlines()


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
