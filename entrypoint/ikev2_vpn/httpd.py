"""The HTTP servers the container runs: on its TCP port 80 for a while, the ACME HTTP-01
responder (state) and profile sharing (run); the metrics endpoint and the web console
(run). Shared by several pipeline steps, so it belongs to none of them.

One stack for all of them: each is a Flask application (Debian's python3-flask; the small
ones through :func:`small_app`) served by waitress (Debian's python3-waitress): one thread reads
every connection without blocking and a fixed pool of two threads answers, so a connection
costs a few kilobytes, not a thread. What a client can hold is bounded (:data:`LIMITS`):

- connections in all, and from one address (more from it are closed at once);
- how long a connection may live, counted from its accept: a client that sends a byte now
  and then (slowloris) is closed when that time is up, however busy it looks;
- how long it may stay silent, and the size of a request's headers and body (431, 413).

Malformed requests get waitress's 400 and no traceback; nothing is logged per request.
One listening socket for IPv4 and IPv6 where the kernel has IPv6, IPv4 only where it does not.

HTTPS: waitress speaks plain HTTP only, so with ``tls`` each connection runs its bytes
through OpenSSL (Python's :mod:`ssl`, an ``SSLObject`` over memory buffers) on their way in
and out: the same single thread reads every connection, a handshake is bound by the same
lifetime as a request, and what waits to be sent is bounded too. Nothing else changes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

if TYPE_CHECKING:
    from flask import Flask, Response

_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL}

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Limits:
    connections: int = 64  # open at once, from everywhere
    per_address: int = 8  # open at once from one client address
    lifetime_s: float = 10.0  # from accept to close, whatever the client sends
    idle_s: float = 5.0  # silent that long: closed
    header_bytes: int = 8192
    body_bytes: int = 1024  # nothing here takes a body


LIMITS: Final = Limits()


def _dual_stack_socket(port: int) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno not in _NO_IPV6:
            raise
        return _bound(socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("0.0.0.0", port))  # noqa: S104 - the clients are remote
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too, as ::ffff:a.b.c.d
    try:
        return _bound(sock, ("::", port))
    except OSError as exc:
        if exc.errno not in _NO_IPV6:
            raise
        return _bound(socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("0.0.0.0", port))  # noqa: S104


def _bound(sock: socket.socket, address: tuple[str, int]) -> socket.socket:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def tls_context(chain_pem: str, key_path: Path) -> ssl.SSLContext:
    """A server-side TLS context for the certificate chain ``chain_pem`` (leaf first) and
    the private key in ``key_path``: TLS 1.2 and later, Python's default ciphers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # OpenSSL loads the chain from a file only; it is public, the key stays where it is.
    with tempfile.TemporaryDirectory(prefix="ikev2-vpn-tls-") as directory:
        chain = Path(directory) / "chain.pem"
        chain.write_text(chain_pem)
        context.load_cert_chain(chain, key_path)
    return context


TLS_PENDING_BYTES: Final = 256 * 1024  # encrypted bytes waiting for the socket, at most


class _TlsChannel(HTTPChannel):  # type: ignore[misc]  # waitress ships no type hints
    """waitress's connection with TLS between it and the socket.

    The server thread reads (:meth:`handle_read`) and an answering thread may write
    (:meth:`send`, under waitress's outbuf lock): one lock keeps the two apart in OpenSSL.
    A close waits until the encrypted bytes are out, but never past the lifetime.
    """

    context: ssl.SSLContext
    lifetime_s: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = self.context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._pending = bytearray()  # encrypted, not yet taken by the socket
        self._tls_lock = threading.RLock()
        self._handshaken = False
        self._socket_ok = True
        super().__init__(*args, **kwargs)

    def handle_read(self) -> None:
        try:
            raw = wasyncore.dispatcher.recv(self, self.adj.recv_bytes)
        except OSError:
            self._socket_ok = False
            self.handle_close()
            return
        if not raw:  # the client left; recv() closed the channel
            self._socket_ok = False
            return
        self.last_activity = time.time()
        plain = bytearray()
        with self._tls_lock:
            self._incoming.write(raw)
            try:
                if not self._handshaken:
                    self._tls.do_handshake()
                    self._handshaken = True
                while chunk := self._tls.read(65536):
                    plain += chunk
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLError):  # closed, or not TLS at all
                self._pending.clear()
                self._socket_ok = False
                self.will_close = True
            self._flush_pending()
        if plain and not self.will_close:
            self.received(bytes(plain))

    def send(self, data: bytes, do_close: bool = True) -> int:
        """Takes plaintext from waitress's buffers: encrypts it, and reports it sent once
        OpenSSL has it (the socket gets it as soon as it takes it)."""
        with self._tls_lock:
            self._flush_pending()
            if not self._handshaken or not self._socket_ok:
                return 0
            room = TLS_PENDING_BYTES - len(self._pending)
            if room <= 0:
                return 0
            try:
                taken: int = self._tls.write(data[:room])
            except ssl.SSLError:
                self._socket_ok = False
                self.will_close = True
                return 0
            self._flush_pending()
            return taken

    def _flush_pending(self) -> None:
        """What OpenSSL wrote goes to the socket, as much as it takes now (lock held)."""
        if self._outgoing.pending:
            self._pending += self._outgoing.read()
        if not self._pending or not self._socket_ok:
            return
        try:
            sent = self.socket.send(self._pending)
        except BlockingIOError:
            return
        except OSError:
            self._pending.clear()
            self._socket_ok = False
            return
        del self._pending[:sent]

    def writable(self) -> bool:
        return bool(super().writable() or (self._pending and self._socket_ok))

    def handle_write(self) -> None:
        with self._tls_lock:
            self._flush_pending()
        super().handle_write()

    def handle_close(self) -> None:
        # waitress closes once its buffers are empty; the encrypted copy may still wait.
        young = time.time() - self.creation_time < self.lifetime_s
        with self._tls_lock:
            self._flush_pending()
            waiting = bool(self._pending) and self._socket_ok
        if waiting and young:
            self.will_close = True  # handle_write calls again when the socket takes more
            return
        super().handle_close()


class _Server(TcpWSGIServer):  # type: ignore[misc]  # waitress ships no type hints
    """waitress's server with two limits it lacks: connections per address and a lifetime."""

    limits: Limits

    def handle_accept(self) -> None:
        try:
            pair = self.accept()
        except OSError:
            return
        if pair is None:
            return
        conn, addr = pair
        peers = (channel.addr[0] for channel in self.active_channels.values())
        if sum(peer == addr[0] for peer in peers) >= self.limits.per_address:
            conn.close()
            return
        try:
            self.set_socket_options(conn)
        except OSError:  # the client already left
            conn.close()
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # the idle ones
        born_before = now - self.limits.lifetime_s
        for channel in self.active_channels.values():
            if channel.creation_time < born_before:
                channel.will_close = True


class HttpServer:
    """``app`` served on TCP ``port`` at every address of the container, in a daemon thread
    named ``name``, from construction until :meth:`close` (or the end of a ``with`` block).
    Raises OSError when the port cannot be opened."""

    def __init__(
        self,
        port: int,
        app: WsgiApp,
        name: str,
        limits: Limits = LIMITS,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        sock = _dual_stack_socket(port)
        adjustments = Adjustments(
            sockets=[sock],
            threads=2,
            connection_limit=limits.connections,
            channel_timeout=limits.idle_s,
            cleanup_interval=0.5,  # how often idle and old connections are closed
            asyncore_loop_timeout=0.5,
            max_request_header_size=limits.header_bytes,
            max_request_body_size=limits.body_bytes,
            ident="ikev2-vpn",
            url_scheme="https" if tls else "http",
            expose_tracebacks=False,
            log_socket_errors=False,
        )
        sockinfo = (sock.family, sock.type, sock.proto, sock.getsockname())
        attributes: dict[str, Any] = {"limits": limits}
        if tls is not None:
            attributes["channel_class"] = type(
                "TlsChannel", (_TlsChannel,), {"context": tls, "lifetime_s": limits.lifetime_s}
            )
        server_class = type("Server", (_Server,), attributes)
        self._server = server_class(
            app, {}, True, sock, adj=adjustments, bind_socket=False, sockinfo=sockinfo
        )
        self.port: int = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._server.run()

    def close(self) -> None:
        """Close the port and every connection; returns when the server thread is done."""
        # The answering threads first: one that finishes a request wakes the server thread
        # through its trigger pipe, which must still be open then.
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        if not self._thread.is_alive():
            wasyncore.close_all(self._server._map, ignore_all=True)
            return

        trigger = self._server.trigger

        def stop() -> None:  # in the server's thread: only it may touch waitress's map
            for dispatcher in list(self._server._map.values()):
                with contextlib.suppress(OSError):
                    if dispatcher is self._server:  # its own close() closes the trigger too
                        wasyncore.dispatcher.close(dispatcher)
                    elif dispatcher is not trigger:
                        dispatcher.close()
            # Out of the map (the loop then ends), but open: this thunk can run before the
            # pull below has written its byte to the pipe.
            trigger.del_channel()

        trigger.pull_trigger(stop)
        self._thread.join(timeout=60)
        if not self._thread.is_alive():
            trigger.close()

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def reply(
    start_response: StartResponse,
    status: int,
    body: bytes,
    content_type: str = "text/plain",
    headers: Iterable[tuple[str, str]] = (),
    *,
    head: bool = False,
) -> list[bytes]:
    """Start a response with its length and type; the body to return (empty for HEAD)."""
    start_response(
        f"{status} {_REASONS.get(status, '')}".rstrip(),
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers],
    )
    return [] if head else [body]


# --- the framework: Flask (Debian's python3-flask) for every listener ---------------------------

_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


def small_app(import_name: str, view: Callable[[], Response]) -> Flask:
    """A Flask application whose one ``view`` answers every path and method (the small
    listeners look paths up themselves, exactly as sent): no static files, no automatic
    OPTIONS answer, no slash merging or redirects."""
    from flask import Flask

    app = Flask(import_name, static_folder=None)
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False

    def answer(path: str = "") -> Response:
        return view()

    for rule in ("/", "/<path:path>"):
        app.add_url_rule(
            rule, "answer", answer, methods=list(_METHODS), provide_automatic_options=False
        )
    return app


def plain(
    status: int,
    body: bytes,
    content_type: str = "text/plain",
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """A response with exactly this Content-Type (Flask answers HEAD without the body)."""
    from flask import Response

    response = Response(body, status=status, headers=[("Content-Type", content_type), *headers])
    return response


def request_target(environ: dict[str, Any]) -> str:
    """The path and query as the client sent them (waitress hands the path decoded)."""
    query = environ.get("QUERY_STRING", "")
    return quote(environ["PATH_INFO"]) + (f"?{query}" if query else "")


def client_address(environ: dict[str, Any]) -> str:
    """The client's address (IPv4 clients reach the dual-stack socket as ::ffff:a.b.c.d)."""
    return str(environ.get("REMOTE_ADDR", "")).removeprefix("::ffff:")


_REASONS: Final = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}

# Overloaded queues are the point of the limits, not news, and "connection limit reached"
# lines come in pairs per wave: one warning per minute at most is plenty.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class _OncePerMinute(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._last = -60.0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        now = time.monotonic()
        if now - self._last < 60:
            return False
        self._last = now
        return True


logging.getLogger("waitress").addFilter(_OncePerMinute())
