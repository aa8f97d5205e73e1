"""Getting a profile onto a phone: scan a QR code, tap, install.

:func:`serve` serves one user's profiles for a limited time under a fresh unguessable path,
and prints a QR code of each link. With a certificate phones trust already (Let's Encrypt,
or the operator's own files) the links are HTTPS on the container's TCP port 443, with that
certificate; with the server's own CA, which no phone trusts before it installs it, they
are plain HTTP on port 80 (published for ACME anyway) and the page and output give the
CA's fingerprint to compare. Either way the served copies never contain the password: the
device asks for it. Nothing else is served, and the port is closed again when the time is
up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import ipaddress
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TextIO
from urllib.parse import quote

import qrcode
import qrcode.constants
from cryptography.hazmat.primitives.serialization import Encoding
from qrcode.image.pure import PyPNGImage

from .. import defaults
from ..errors import SystemSetupError
from ..httpd import HttpServer, WsgiApp, client_address, plain, request_target, small_app
from ..profiles import ProfileInput, android, apple, ca_fingerprint
from ..profiles.templating import render_profile

if TYPE_CHECKING:
    from flask import Response

DEFAULT_LIFETIME_S: Final = 600.0
HTTP_PORT: Final = defaults.ACME_HTTP_PORT  # published by compose.yaml for ACME HTTP-01
HTTPS_PORT: Final = defaults.SHARE_HTTPS_PORT  # published by compose.yaml as VPN_HTTPS_PORT
CA_FILE_NAME: Final = defaults.CA_CERT_NAME
CA_CONTENT_TYPE: Final = "application/x-x509-ca-cert"
# Outside /data/clients: the profile writer keeps only the files it makes in there.
PNG_DIR: Final = defaults.DATA_DIR / "share"


def png_dir(user: str) -> Path:
    """Where :func:`serve` puts one user's QR code PNGs (user names are path-safe)."""
    return PNG_DIR / user


@dataclasses.dataclass(frozen=True)
class SharedFile:
    name: str  # last part of the URL and the downloaded file's name
    content: bytes
    content_type: str
    label: str  # who it is for, as printed next to its QR code


def shared_files(profile: ProfileInput) -> tuple[SharedFile, ...]:
    """What a phone may fetch: the profiles without the password, and the CA if self-signed."""
    anonymous = dataclasses.replace(profile, password=None)
    files = [
        SharedFile(
            apple.FILE_NAME,
            apple.mobileconfig(anonymous),
            apple.CONTENT_TYPE,
            "iPhone, iPad, Mac",
        ),
        SharedFile(
            android.SSWAN_FILE_NAME,
            android.sswan(anonymous),
            android.SSWAN_CONTENT_TYPE,
            "Android, strongSwan VPN Client app",
        ),
    ]
    if profile.ca is not None:
        files.append(
            SharedFile(
                CA_FILE_NAME,
                profile.ca.public_bytes(Encoding.PEM),
                CA_CONTENT_TYPE,
                "Android built-in client: the CA certificate to install first",
            )
        )
    return (*files, _page(profile, files))


PAGE_LABEL: Final = "This page: every link, and how to check what you install"


def _page(profile: ProfileInput, files: Sequence[SharedFile]) -> SharedFile:
    """The share's own page (its link ends in ``/``): the files, and with the server's own
    CA, its fingerprint and why the links are plain HTTP."""
    html = render_profile(
        "share.html.j2",
        user=escape(profile.user),
        host=escape(profile.host),
        files=[
            {"href": quote(shared.name), "name": escape(shared.name), "label": escape(shared.label)}
            for shared in files
        ],
        fingerprint=ca_fingerprint(profile.ca) if profile.ca is not None else None,
    )
    return SharedFile("", html.encode(), "text/html; charset=utf-8", PAGE_LABEL)


# --- QR codes --------------------------------------------------------------------------


def _qr(text: str, border: int) -> Any:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=border)
    code.add_data(text)
    code.make(fit=True)
    return code


def qr_png(text: str, box_size: int = 8) -> bytes:
    """A PNG of the QR code (pure Python: pypng, no imaging library)."""
    code = _qr(text, border=4)
    code.box_size = box_size
    buffer = io.BytesIO()
    code.make_image(image_factory=PyPNGImage).save(buffer)
    return buffer.getvalue()


def qr_text(text: str) -> str:
    """The QR code as block characters, for a terminal with light text on a dark background
    (modules are left dark, the background drawn light, as on paper)."""
    out = io.StringIO()
    _qr(text, border=4).print_ascii(out=out, invert=True)
    return out.getvalue()


# --- The server ------------------------------------------------------------------------


def _app(
    files: Mapping[str, SharedFile],
    deadline: float,
    on_download: Callable[[SharedFile, str], None],
) -> WsgiApp:
    from flask import request

    def share() -> Response:
        method = request.method
        found = files.get(request_target(request.environ))
        shared = found if time.monotonic() < deadline else None
        if shared is None or method not in {"GET", "HEAD"}:
            return plain(404, b"not found\n")
        response = plain(
            200,
            shared.content,
            shared.content_type,
            [("Cache-Control", "no-store")]
            + (
                [("Content-Disposition", f'attachment; filename="{shared.name}"')]
                if shared.name
                else []
            ),
        )
        if method == "GET":
            on_download(shared, client_address(request.environ))
        return response

    return small_app(__name__, share)


class ShareServer:
    """Serves ``files`` under ``/<token>/<name>`` until ``lifetime`` seconds have passed.

    Use as a context manager: the port is open inside the block only. Every other path,
    and every path once the time is up, gets 404. With ``tls`` it is HTTPS (and ``port``
    defaults to 443), else plain HTTP (port 80).
    """

    def __init__(
        self,
        files: Sequence[SharedFile],
        *,
        port: int | None = None,
        lifetime: float = DEFAULT_LIFETIME_S,
        on_download: Callable[[SharedFile, str], None] = lambda shared, client: None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.token = secrets.token_urlsafe(16)  # 128 bits, new for every share
        self.files = tuple(files)
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.default_port = HTTPS_PORT if tls else HTTP_PORT
        self.port = self.default_port if port is None else port
        self.lifetime = lifetime
        self.deadline = 0.0
        self._on_download = on_download
        self._stop = threading.Event()

    def path(self, shared: SharedFile) -> str:
        return f"/{self.token}/{quote(shared.name)}"

    def url(self, host: str, shared: SharedFile, public_port: int | None = None) -> str:
        """The link a phone opens, with ``host`` as VPN_HOST (IPv6 in brackets) and the
        host port published for the listener (None: the scheme's own, 443 or 80)."""
        try:
            literal = ipaddress.ip_address(host).version == 6
        except ValueError:
            literal = False
        authority = f"[{host}]" if literal else host
        port = self.default_port if public_port is None else public_port
        if port != self.default_port:
            authority += f":{port}"
        return f"{self.scheme}://{authority}{self.path(shared)}"

    def __enter__(self) -> ShareServer:
        self.deadline = time.monotonic() + self.lifetime
        files = MappingProxyType({self.path(shared): shared for shared in self.files})
        try:
            self._server = HttpServer(
                self.port, _app(files, self.deadline, self._on_download), "share", tls=self.tls
            )
        except OSError as exc:
            holder = (
                "a Let's Encrypt renewal holds it only while the CA validates"
                if self.port == HTTP_PORT
                else "another share may be running"
            )
            raise SystemSetupError(
                f"cannot listen on TCP port {self.port} to share profiles ({exc.strerror}); "
                f"stop what uses it ({holder}) and try again"
            ) from None
        return self

    def wait(self) -> bool:
        """Block until the time is up (True) or :meth:`stop` was called (False)."""
        remaining = self.deadline - time.monotonic()
        return not self._stop.wait(max(remaining, 0.0))

    def stop(self) -> None:
        self._stop.set()

    def __exit__(self, *exc_info: object) -> None:
        self._server.close()


# --- The command -----------------------------------------------------------------------


def serve(
    profile: ProfileInput,
    *,
    tls: ssl.SSLContext | None = None,
    port: int | None = None,
    public_port: int | None = None,
    lifetime: float = DEFAULT_LIFETIME_S,
    png_dir: Path | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Share ``profile``'s files for ``lifetime`` seconds, printing a QR code of each link.

    With ``tls`` (the server's certificate, when it is a public one) the links are HTTPS.
    ``port`` is where the container listens (443 or 80 by default), ``public_port`` the
    host port published for it (compose.yaml's VPN_HTTPS_PORT or VPN_HTTP_PORT), which goes
    into the links. With ``png_dir``, each QR code is also written there as
    ``qr-<file>.png`` while the links work, and removed afterwards. Ctrl-C stops early.
    """
    files = shared_files(profile)

    def report(shared: SharedFile, client: str) -> None:
        print(f"{_now()} {client} downloaded {shared.name}", file=out, flush=True)

    with ShareServer(files, port=port, lifetime=lifetime, on_download=report, tls=tls) as server:
        until = datetime.now(UTC) + timedelta(seconds=lifetime)
        print(
            f"Sharing the VPN profiles of {profile.user} for {_duration(lifetime)}, until "
            f"{until:%H:%M:%S} UTC. Scan a code with the phone's camera and open the link.",
            file=out,
        )
        if tls is not None:
            print(
                "The links are HTTPS with the server's certificate, which the phone checks. "
                "These copies contain no password: the device asks for it. Each link works "
                "only until the time is up (or Ctrl-C).",
                file=out,
            )
        else:
            print(
                "The links are plain HTTP, so these copies contain no password: the device "
                "asks for it. Each link works only until the time is up (or Ctrl-C).",
                file=out,
            )
        if profile.ca is not None:
            print(
                "They are plain HTTP because the server's certificate comes from its own CA, "
                "which phones do not trust yet: before trusting that CA on a device, compare "
                f"its SHA-256 fingerprint with this one:\n  {ca_fingerprint(profile.ca)}",
                file=out,
            )
        if profile.signer is not None:
            print(
                "The Apple profile is signed by the server's certificate: iOS and macOS "
                "refuse it if it was changed on the way.",
                file=out,
            )
        urls = {shared.name: server.url(profile.host, shared, public_port) for shared in files}
        for shared in files:
            print(f"\n{shared.label}:\n{urls[shared.name]}\n", file=out)
            print(qr_text(urls[shared.name]), file=out)
        with _pngs(png_dir, urls) as written:
            if written:
                print("QR codes as PNG: " + ", ".join(map(str, written)), file=out)
            out.flush()
            try:
                expired = server.wait()
            except KeyboardInterrupt:
                expired = False
    reason = "the time is up" if expired else "stopped"
    print(f"{_now()} Sharing ended ({reason}); the links no longer work.", file=out, flush=True)


@contextlib.contextmanager
def _pngs(png_dir: Path | None, urls: Mapping[str, str]) -> Iterator[list[Path]]:
    """QR code PNGs for the duration of the share (the links die with it)."""
    written: list[Path] = []
    try:
        if png_dir is not None:
            png_dir.mkdir(parents=True, exist_ok=True)
            for name, url in urls.items():
                path = png_dir / f"qr-{name or 'page'}.png"
                path.write_bytes(qr_png(url))
                written.append(path)
        yield written
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    return f"{seconds:g} seconds"


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")
