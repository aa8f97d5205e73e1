"""Runs as the check's target container: reports who reached it.

Copied in by ikev2-vpn-helper and run with the image's python3 (standard library only).
Every TCP connection gets one JSON line: the connection's source address and the source
addresses of the ICMP echo requests seen since the previous report. Behind a working VPN
server both are the server's egress address (NAT), never the client's virtual or real
address. ``--report`` asks the running service from inside the container (for when the
client's own request could not get an answer).
"""

from __future__ import annotations

import argparse
import json
import socket
import socketserver
import sys
import threading

_icmp_sources: list[str] = []
_lock = threading.Lock()


def watch_icmp(family: int = socket.AF_INET) -> None:
    """Record the source of each ICMP echo request (the kernel answers them itself). Raw
    ICMPv6 sockets get the ICMPv6 message without the IP header."""
    if family == socket.AF_INET:
        protocol, request = socket.IPPROTO_ICMP, 8
    else:
        protocol, request = socket.IPPROTO_ICMPV6, 128
    with socket.socket(family, socket.SOCK_RAW, protocol) as sock:
        while True:
            data, peer = sock.recvfrom(2048)
            offset = (data[0] & 0x0F) * 4 if family == socket.AF_INET else 0
            if len(data) > offset and data[offset] == request:
                with _lock:
                    if peer[0] not in _icmp_sources:
                        _icmp_sources.append(peer[0])


class ReporterV6(socketserver.ThreadingTCPServer):
    """The same service on IPv6 alone (the IPv4 one keeps reporting plain IPv4 peers)."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


def serve_ipv6(port: int) -> None:
    """Also answer over IPv6 where the container has it (silently skipped otherwise)."""
    try:
        server = ReporterV6(("::", port), Reporter)
        threading.Thread(target=watch_icmp, args=(socket.AF_INET6,), daemon=True).start()
    except OSError:
        return
    threading.Thread(target=server.serve_forever, daemon=True).start()


class Reporter(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with _lock:
            report = {"peer": self.client_address[0], "icmp_sources": list(_icmp_sources)}
            _icmp_sources.clear()
        self.request.sendall(json.dumps(report).encode() + b"\n")


def main() -> int:
    parser = argparse.ArgumentParser(prog="target")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--report", action="store_true", help="print the running service's report")
    args = parser.parse_args()
    if args.report:
        with socket.create_connection(("127.0.0.1", args.port), timeout=3) as conn:
            sys.stdout.write(conn.makefile().readline())
        return 0
    threading.Thread(target=watch_icmp, daemon=True).start()
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    serve_ipv6(args.port)
    with socketserver.ThreadingTCPServer(("0.0.0.0", args.port), Reporter) as server:  # noqa: S104
        print(f"target listening on TCP port {args.port}", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
