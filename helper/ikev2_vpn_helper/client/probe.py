"""Runs inside the check's client container: connect, disconnect, send test traffic.

Copied in by ikev2-vpn-helper and run with the image's python3 (standard library only).
Each command prints one JSON object on standard output. It never reads or prints the
password: charon gets it from conf.d/secret.conf, which is deleted once loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from typing import Any

CONNECTION = "vpn"
SECRET_FILE = "/etc/swanctl/conf.d/secret.conf"  # noqa: S105 - a path
RESOLV_CONF = "/etc/resolv.conf"
# Lines of swanctl's log that explain a failed attempt.
_PROBLEM = re.compile(
    r"failed|error|giving up|no trusted|constraint|not found|unable|invalid|"
    r"_FAILED|NO_PROPOSAL|TS_UNACCEPTABLE|INTERNAL_ADDRESS|retransmit",
    re.IGNORECASE,
)


def swanctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swanctl", *args], capture_output=True, text=True, check=False)


def log_lines(text: str) -> list[str]:
    """swanctl's output without the noise of plugins it cannot find."""
    return [line for line in text.splitlines() if line.strip() and "failed to load" not in line]


def connect(timeout_s: int) -> dict[str, Any]:
    # One tunnel per client: a new attempt replaces whatever is left of the last one.
    swanctl("--terminate", "--ike", CONNECTION, "--force", "--timeout", "2")
    loaded = swanctl("--load-all", "--noprompt")
    secret_present = os.path.exists(SECRET_FILE)
    if secret_present:
        os.unlink(SECRET_FILE)
    if loaded.returncode != 0:
        lines = log_lines(loaded.stdout + loaded.stderr)
        return {"connected": False, "error": "; ".join(lines[-3:]), "log": lines}
    started = time.monotonic()
    initiated = swanctl("--initiate", "--child", CONNECTION, "--timeout", str(timeout_s))
    elapsed_ms = (time.monotonic() - started) * 1000
    lines = log_lines(initiated.stdout + initiated.stderr)
    if initiated.returncode != 0:
        # Stop retransmits to a server that did not answer; harmless when nothing is left.
        swanctl("--terminate", "--ike", CONNECTION, "--force", "--timeout", "2")
        problems = [line for line in lines if _PROBLEM.search(line)]
        return {
            "connected": False,
            "error": "; ".join((problems or lines)[-4:]) or "swanctl --initiate failed",
            "log": lines,
        }
    return {
        "connected": True,
        "connect_ms": round(elapsed_ms, 1),
        "virtual_ips": virtual_ips(),
        "dns": pushed_dns(),
        "log": lines,
    }


def virtual_ips() -> list[str]:
    listed = swanctl("--list-sas", "--ike", CONNECTION, "--raw")
    match = re.search(r"local-vips=\[([^\]]*)\]", listed.stdout)
    return match.group(1).split() if match else []


def pushed_dns() -> list[str]:
    try:
        with open(RESOLV_CONF, encoding="utf-8") as handle:
            return parse_pushed_dns(handle.read())
    except OSError:
        return []


def parse_pushed_dns(resolv_conf: str) -> list[str]:
    """Servers strongSwan's resolve plugin wrote: the lines it marks with 'by strongSwan'."""
    servers = []
    for line in resolv_conf.splitlines():
        words = line.split()
        if len(words) > 1 and words[0] == "nameserver" and "strongSwan" in line:
            servers.append(words[1])
    return servers


def cycles(count: int, timeout_s: int) -> dict[str, Any]:
    """Connect and disconnect ``count`` times in a row (the soak test: one exec per client,
    not one per cycle). The secret was loaded with the configuration before the first."""
    loaded = swanctl("--load-all", "--noprompt")
    if os.path.exists(SECRET_FILE):
        os.unlink(SECRET_FILE)
    if loaded.returncode != 0:
        return {"done": 0, "failed": count, "errors": log_lines(loaded.stdout + loaded.stderr)}
    done, errors = 0, []
    started = time.monotonic()
    for _ in range(count):
        initiated = swanctl("--initiate", "--child", CONNECTION, "--timeout", str(timeout_s))
        terminated = swanctl("--terminate", "--ike", CONNECTION, "--timeout", str(timeout_s))
        if initiated.returncode == 0 and terminated.returncode == 0:
            done += 1
        else:
            output = "\n".join((initiated.stdout, initiated.stderr, terminated.stderr))
            problems = [line for line in log_lines(output) if _PROBLEM.search(line)]
            errors.append("; ".join(problems[-2:]))
            swanctl("--terminate", "--ike", CONNECTION, "--force", "--timeout", "2")
    return {
        "done": done,
        "failed": count - done,
        "seconds": round(time.monotonic() - started, 3),
        "errors": errors[:5],
    }


def disconnect() -> dict[str, Any]:
    done = swanctl("--terminate", "--ike", CONNECTION, "--timeout", "5")
    return {"disconnected": done.returncode == 0, "log": log_lines(done.stdout + done.stderr)}


# --- traffic ------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


# ICMP echo request and reply types, and whether received packets start with an IP header
# (raw IPv4 sockets deliver it, raw ICMPv6 sockets do not).
_ICMP = {4: (socket.AF_INET, socket.IPPROTO_ICMP, 8, 0, True)}
_ICMP[6] = (socket.AF_INET6, socket.IPPROTO_ICMPV6, 128, 129, False)


def _version(address: str) -> int:
    return 6 if ":" in address else 4


def ping(address: str, count: int, timeout_s: float, size: int = 15) -> dict[str, Any]:
    """ICMP echo over a raw socket (the container has CAP_NET_RAW); no ping binary needed.
    ``size``: bytes of payload per echo (an IPv4 packet carries 28 more). For IPv6 the
    kernel fills in the ICMPv6 checksum (it covers a pseudo-header)."""
    family, protocol, request, reply, ip_header = _ICMP[_version(address)]
    ident = os.getpid() & 0xFFFF
    replies, rtts = 0, []
    with socket.socket(family, socket.SOCK_RAW, protocol) as sock:
        sock.settimeout(timeout_s)
        for sequence in range(1, count + 1):
            payload = b"ikev2-vpn-check".ljust(size, b".")[:size]
            header = struct.pack("!BBHHH", request, 0, 0, ident, sequence)
            checksum = _checksum(header + payload) if family == socket.AF_INET else 0
            packet = struct.pack("!BBHHH", request, 0, checksum, ident, sequence) + payload
            sent = time.monotonic()
            sock.sendto(packet, (address, 0))
            deadline = sent + timeout_s
            while time.monotonic() < deadline:
                try:
                    data, peer = sock.recvfrom(2048)
                except TimeoutError:
                    break
                offset = (data[0] & 0x0F) * 4 if ip_header else 0
                if len(data) < offset + 8:
                    continue
                kind, _, _, reply_ident, reply_sequence = struct.unpack(
                    "!BBHHH", data[offset : offset + 8]
                )
                same = socket.inet_pton(family, peer[0]) == socket.inet_pton(family, address)
                if (kind, reply_ident, reply_sequence) == (reply, ident, sequence) and same:
                    replies += 1
                    rtts.append(round((time.monotonic() - sent) * 1000, 2))
                    break
    return {"sent": count, "received": replies, "rtt_ms": rtts}


def ask_target(address: str, port: int, timeout_s: float) -> dict[str, Any]:
    """What the target saw: the source address of this TCP connection and of ICMP echoes."""
    with socket.create_connection((address, port), timeout=timeout_s) as conn:
        chunks = []
        while chunk := conn.recv(4096):
            chunks.append(chunk)
    answer: dict[str, Any] = json.loads(b"".join(chunks))
    return answer


def traffic(address: str, port: int, count: int, timeout_s: float, size: int) -> dict[str, Any]:
    result: dict[str, Any] = {"target": address}
    try:
        result["ping"] = ping(address, count, timeout_s, size)
    except OSError as error:
        result["ping"] = {"sent": count, "received": 0, "rtt_ms": [], "error": str(error)}
    try:
        seen = ask_target(address, port, timeout_s)
        result["tcp_source"] = seen.get("peer")
        result["icmp_sources"] = seen.get("icmp_sources", [])
    except (OSError, ValueError) as error:
        result["tcp_source"] = None
        result["icmp_sources"] = []
        result["tcp_error"] = str(error) or type(error).__name__
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="probe")
    commands = parser.add_subparsers(dest="command", required=True)
    connecting = commands.add_parser("connect")
    connecting.add_argument("--timeout", type=int, default=20)
    commands.add_parser("disconnect")
    cycling = commands.add_parser("cycles")
    cycling.add_argument("--count", type=int, required=True)
    cycling.add_argument("--timeout", type=int, default=20)
    sending = commands.add_parser("traffic")
    sending.add_argument("--target", required=True)
    sending.add_argument("--port", type=int, required=True)
    sending.add_argument("--count", type=int, default=3)
    sending.add_argument("--timeout", type=float, default=3.0)
    sending.add_argument("--size", type=int, default=15)
    args = parser.parse_args()
    if args.command == "connect":
        result = connect(args.timeout)
    elif args.command == "disconnect":
        result = disconnect()
    elif args.command == "cycles":
        result = cycles(args.count, args.timeout)
    else:
        result = traffic(args.target, args.port, args.count, args.timeout, args.size)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
