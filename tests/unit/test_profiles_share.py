"""Sharing by QR code, as a phone sees it: the link downloads the file with the right type,
nothing else is served, no password travels over plain HTTP, the links expire, and with a
public certificate they are HTTPS with it."""

from __future__ import annotations

import io
import json
import plistlib
import re
import socket
import ssl
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import png
import pytest
from certfactory import current_chain, make_ca
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from ports import free_port, refused
from profilefactory import HOST, PASSWORD, ca, make_profile

from ikev2_vpn.errors import SystemSetupError
from ikev2_vpn.profiles import ca_fingerprint
from ikev2_vpn.run import share
from ikev2_vpn.run.users_live import ServerFacts

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(url: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of one request."""
    try:
        sent = urllib.request.Request(url, method=method)  # noqa: S310 - http:// built here
        with _opener.open(sent, timeout=5) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(), dict(error.headers)


def local(server: share.ShareServer, shared: share.SharedFile) -> str:
    return f"http://127.0.0.1:{server.port}{server.path(shared)}"


@pytest.fixture(scope="module")
def files() -> tuple[share.SharedFile, ...]:
    return share.shared_files(make_profile())


@pytest.fixture(scope="module")
def serving(files: tuple[share.SharedFile, ...]) -> Iterator[share.ShareServer]:
    with share.ShareServer(files, port=free_port(), lifetime=60) as server:
        yield server


def by_name(files: tuple[share.SharedFile, ...], name: str) -> share.SharedFile:
    return next(shared for shared in files if shared.name == name)


# --- What is shared ---------------------------------------------------------------------


def test_shared_copies_never_contain_the_password(files: tuple[share.SharedFile, ...]) -> None:
    assert make_profile().password is not None
    for shared in files:
        assert PASSWORD.encode() not in shared.content
    mobileconfig = plistlib.loads(by_name(files, "apple.mobileconfig").content)
    assert "AuthPassword" not in mobileconfig["PayloadContent"][-1]["IKEv2"]


def test_shares_apple_and_android_profiles_and_the_ca_in_self_signed_mode(
    files: tuple[share.SharedFile, ...],
) -> None:
    names = [shared.name for shared in files]
    assert names == ["apple.mobileconfig", "android.sswan", "ca.crt", ""]  # "": the page
    assert json.loads(by_name(files, "android.sswan").content)["remote"]["addr"] == HOST
    assert by_name(files, "ca.crt").content.startswith(b"-----BEGIN CERTIFICATE-----")


def test_no_ca_file_with_a_public_ca() -> None:
    names = [shared.name for shared in share.shared_files(make_profile(self_signed=False))]
    assert names == ["apple.mobileconfig", "android.sswan", ""]
    page = by_name(share.shared_files(make_profile(self_signed=False)), "").content.decode()
    assert "plain HTTP" not in page and "fingerprint" not in page


def test_the_page_links_every_file_and_shows_the_ca_fingerprint(
    serving: share.ShareServer, files: tuple[share.SharedFile, ...]
) -> None:
    status, body, headers = request(f"http://127.0.0.1:{serving.port}/{serving.token}/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Content-Disposition" not in headers
    page = body.decode()
    for name in ("apple.mobileconfig", "android.sswan", "ca.crt"):
        assert f'<a href="{name}">' in page
    assert ca_fingerprint(ca()) in page
    assert "plain HTTP" in page


# --- QR codes ---------------------------------------------------------------------------

URL = "http://vpn.example.com/Xq3b1v8k2n4m6p8r0t2v4w/apple.mobileconfig"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"  # the PNG signature (RFC 2083)


def test_qr_png_is_a_square_black_and_white_png() -> None:
    data = share.qr_png(URL, box_size=8)
    assert data.startswith(PNG_MAGIC)
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width == height
    assert width % 8 == 0
    modules = width // 8 - 2 * 4  # 4 modules of quiet zone on each side
    assert (modules - 17) % 4 == 0  # a QR code of version v has 17 + 4v modules

    columns, rows, pixels, _ = png.Reader(bytes=data).read()
    image = [list(row) for row in pixels]
    assert (columns, rows) == (width, height)
    quiet, finder = 4 * 8, 4 * 8 + 4  # into the top-left finder pattern's dark border
    assert image[0][0] == 1  # white quiet zone
    assert image[finder][finder] == 0  # dark module
    assert image[quiet + 2 * 8 + 4][quiet + 2 * 8 + 4] == 0  # the finder's dark centre
    assert image[quiet + 8 + 4][quiet + 8 + 4] == 1  # and its light ring


def test_qr_text_draws_the_same_code_for_a_terminal() -> None:
    text = share.qr_text(URL)
    lines = text.splitlines()
    width = struct.unpack(">I", share.qr_png(URL, box_size=1)[16:20])[0]  # in modules
    assert {len(line) for line in lines} == {width}
    assert len(lines) == (width + 1) // 2  # two module rows per text line
    assert set(text) <= {"\n", "\u00a0", "▀", "▄", "█"}
    assert lines[0] == "█" * width  # light quiet zone on a dark terminal


# --- The server -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("apple.mobileconfig", "application/x-apple-aspen-config"),
        ("android.sswan", "application/vnd.strongswan.profile"),
        ("ca.crt", "application/x-x509-ca-cert"),
    ],
)
def test_each_link_downloads_its_file_with_its_type(
    serving: share.ShareServer, files: tuple[share.SharedFile, ...], name: str, content_type: str
) -> None:
    shared = by_name(files, name)
    status, body, headers = request(local(serving, shared))
    assert status == 200
    assert body == shared.content
    assert headers["Content-Type"] == content_type
    assert headers["Content-Disposition"] == f'attachment; filename="{name}"'
    assert headers["Cache-Control"] == "no-store"


def test_head_is_answered_without_body(
    serving: share.ShareServer, files: tuple[share.SharedFile, ...]
) -> None:
    status, body, headers = request(local(serving, files[0]), method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Type"] == "application/x-apple-aspen-config"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/{token}",
        "/{token}//",
        "/{token}/apple.mobileconfig/",
        "/{token}/apple.mobileconfig?download=1",
        "/{token}/users.json",
        "/{token}/../ca.crt",
        "/apple.mobileconfig",
        "/AAAAAAAAAAAAAAAAAAAAAA/apple.mobileconfig",
        "/.well-known/acme-challenge/x",
    ],
)
def test_anything_else_is_not_found(serving: share.ShareServer, path: str) -> None:
    status, body, _ = request(f"http://127.0.0.1:{serving.port}" + path.format(token=serving.token))
    assert status == 404
    assert b"BEGIN CERTIFICATE" not in body
    assert b"plist" not in body


def test_every_share_gets_a_new_unguessable_token(files: tuple[share.SharedFile, ...]) -> None:
    tokens = {share.ShareServer(files).token for _ in range(20)}
    assert len(tokens) == 20
    assert all(len(token) >= 22 for token in tokens)  # 128 bits


@pytest.mark.parametrize(
    ("host", "public_port", "expected"),
    [
        ("vpn.example.com", 80, "http://vpn.example.com/{token}/apple.mobileconfig"),
        ("203.0.113.5", 8080, "http://203.0.113.5:8080/{token}/apple.mobileconfig"),
        ("2001:db8::5", 80, "http://[2001:db8::5]/{token}/apple.mobileconfig"),
    ],
)
def test_links_use_the_host_clients_dial(
    files: tuple[share.SharedFile, ...], host: str, public_port: int, expected: str
) -> None:
    server = share.ShareServer(files)
    assert server.url(host, files[0], public_port) == expected.format(token=server.token)


def test_links_stop_working_when_the_time_is_up(files: tuple[share.SharedFile, ...]) -> None:
    with share.ShareServer(files, port=free_port(), lifetime=0.5) as server:
        assert request(local(server, files[0]))[0] == 200
        assert server.wait() is True  # blocks until the time is up
        assert request(local(server, files[0]))[0] == 404
    assert refused(server.port)


def test_stop_ends_the_wait_early(files: tuple[share.SharedFile, ...]) -> None:
    with share.ShareServer(files, port=free_port(), lifetime=60) as server:
        threading.Timer(0.1, server.stop).start()
        started = time.monotonic()
        assert server.wait() is False
        assert time.monotonic() - started < 5


def test_a_busy_port_is_one_clear_error(files: tuple[share.SharedFile, ...]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(SystemSetupError, match=f"TCP port {port}"),
            share.ShareServer(files, port=port, lifetime=1),
        ):
            pass


# --- The command ------------------------------------------------------------------------


def test_serve_prints_links_and_codes_writes_pngs_and_reports_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    port = free_port()
    seen: dict[str, object] = {}

    def phone_scans(self: share.ShareServer) -> bool:
        """Instead of waiting: what a phone does while the share runs."""
        urls = re.findall(r"http://\S+", out.getvalue())
        seen["urls"] = urls
        seen["pngs"] = sorted(path.name for path in tmp_path.iterdir())
        seen["png_data"] = (tmp_path / "qr-apple.mobileconfig.png").read_bytes()
        local_url = urls[0].replace(f"http://{HOST}", f"http://127.0.0.1:{port}")
        seen["download"] = request(local_url)
        return True

    monkeypatch.setattr(share.ShareServer, "wait", phone_scans)
    share.serve(make_profile(), port=port, lifetime=600, png_dir=tmp_path, out=out)

    printed = out.getvalue()
    assert "for 10 minutes" in printed
    assert "contain no password" in printed
    assert PASSWORD not in printed
    urls = seen["urls"]
    assert isinstance(urls, list)
    assert [url.rsplit("/", 1)[1] for url in urls] == [
        "apple.mobileconfig",
        "android.sswan",
        "ca.crt",
        "",  # the page
    ]
    assert all(url.startswith(f"http://{HOST}/") for url in urls)
    assert printed.count("█" * 20) >= 4  # a QR code per link
    assert seen["pngs"] == [
        "qr-android.sswan.png",
        "qr-apple.mobileconfig.png",
        "qr-ca.crt.png",
        "qr-page.png",
    ]
    assert ca_fingerprint(ca()) in printed
    assert seen["png_data"] == share.qr_png(urls[0])
    download = seen["download"]
    assert isinstance(download, tuple)
    assert download[0] == 200
    assert re.search(r"127\.0\.0\.1 downloaded apple\.mobileconfig", printed)
    assert "Sharing ended (the time is up)" in printed
    assert list(tmp_path.iterdir()) == []  # the PNGs go with the links
    assert refused(port)


def test_serve_for_real_until_the_time_is_up(tmp_path: Path) -> None:
    out = io.StringIO()
    port = free_port()
    started = time.monotonic()
    share.serve(make_profile(self_signed=False), port=port, lifetime=0.3, png_dir=tmp_path, out=out)
    assert 0.3 <= time.monotonic() - started < 5
    assert "0.3 seconds" in out.getvalue()
    assert "ca.crt" not in out.getvalue()
    assert refused(port)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_stops_sharing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: share.ShareServer) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(share.ShareServer, "wait", interrupted)
    out = io.StringIO()
    port = free_port()
    share.serve(make_profile(), port=port, png_dir=tmp_path, out=out)
    assert "Sharing ended (stopped)" in out.getvalue()
    assert refused(port)
    assert list(tmp_path.iterdir()) == []


def test_pngs_live_outside_the_profile_directories() -> None:
    """The profile writer removes files it did not make from /data/clients/<user>/."""
    assert share.png_dir("alice") == Path("/data/share/alice")


# --- With a public certificate: HTTPS ----------------------------------------------------


class PublicChain:
    """A certificate for HOST from a "public" root (one the phone trusts already), valid now,
    with the facts a running server leaves for the command."""

    def __init__(self, directory: Path) -> None:
        self.root, intermediate, leaf = current_chain(HOST)
        key = directory / "server.key"
        key.write_bytes(leaf.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        chain = b"".join(cert.cert.public_bytes(Encoding.PEM) for cert in (leaf, intermediate))
        self.facts = ServerFacts(HOST, True, None, chain.decode(), str(key))

    def phone(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.root.cert.public_bytes(Encoding.PEM).decode())


def https_get(url: str, port: int, context: ssl.SSLContext) -> tuple[int, bytes]:
    """What a phone does with the link: ``HOST`` resolves here to 127.0.0.1:``port``."""
    target = url.replace(f"https://{HOST}/", "/", 1)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with context.wrap_socket(raw, server_hostname=HOST) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_facts_give_https_only_with_a_public_certificate(tmp_path: Path) -> None:
    public = PublicChain(tmp_path)
    assert isinstance(public.facts.share_tls(), ssl.SSLContext)
    own_ca = ServerFacts(HOST, True, "-----BEGIN CERTIFICATE-----", "", str(tmp_path / "k"))
    assert own_ca.share_tls() is None  # phones do not trust it yet: plain HTTP, fingerprint


def test_a_key_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    public = PublicChain(tmp_path)
    broken = ServerFacts(HOST, True, None, public.facts.signer_pem, str(tmp_path / "gone.key"))
    with pytest.raises(Exception, match=r"cannot use the server certificate and key .*gone\.key"):
        broken.share_tls()


def test_with_a_public_certificate_the_links_are_https_and_the_phone_verifies_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = PublicChain(tmp_path)
    out = io.StringIO()
    port = free_port()
    seen: dict[str, object] = {}

    def phone_scans(self: share.ShareServer) -> bool:
        urls = re.findall(r"https?://\S+", out.getvalue())
        seen["urls"] = urls
        seen["download"] = https_get(urls[0], port, public.phone())
        seen["page"] = https_get(urls[-1], port, public.phone())
        stranger = ssl.create_default_context(
            cadata=make_ca("Attacker Root").cert.public_bytes(Encoding.PEM).decode()
        )
        try:
            https_get(urls[0], port, stranger)
            seen["stranger"] = "accepted"
        except ssl.SSLCertVerificationError:
            seen["stranger"] = "refused"
        return True

    monkeypatch.setattr(share.ShareServer, "wait", phone_scans)
    profile = make_profile(self_signed=False)
    share.serve(profile, tls=public.facts.share_tls(), port=port, lifetime=600, out=out)

    printed = out.getvalue()
    urls = seen["urls"]
    assert isinstance(urls, list)
    assert [url.rsplit("/", 1)[1] for url in urls] == ["apple.mobileconfig", "android.sswan", ""]
    assert all(url.startswith(f"https://{HOST}/") for url in urls)  # 443: no port in them
    assert "HTTPS with the server's certificate" in printed
    assert "plain HTTP" not in printed
    assert seen["download"] == (200, share.shared_files(profile)[0].content)
    page = seen["page"]
    assert isinstance(page, tuple) and page[0] == 200 and b"plain HTTP" not in page[1]
    assert seen["stranger"] == "refused"  # a swapped server fails the phone's check
    assert refused(port)


def test_https_links_carry_a_published_port_other_than_443(
    files: tuple[share.SharedFile, ...], tmp_path: Path
) -> None:
    server = share.ShareServer(files, tls=PublicChain(tmp_path).facts.share_tls())
    assert server.port == 443
    assert server.url(HOST, files[0]) == f"https://{HOST}/{server.token}/apple.mobileconfig"
    assert server.url(HOST, files[0], 8443) == (
        f"https://{HOST}:8443/{server.token}/apple.mobileconfig"
    )
