"""The web console and its JSON API (``VPN_WEB_PORT``): users, live sessions, profiles.

A Flask application (Debian's python3-flask) served by :class:`ikev2_vpn.httpd.HttpServer`
over HTTPS with the server's own certificate. Every change goes through
:class:`~ikev2_vpn.run.users_live.LiveUsers`, the code of ``ikev2-vpn users``: the store,
charon over VICI, swanctl's files and the profiles change together, at once.

Who may use it: whoever knows the admin password (``VPN_WEB_PASSWORD``, kept only as a
hash). Pages log in with a form and then carry a session cookie (``Secure; HttpOnly;
SameSite=Strict``, signed with a key made at each start, so a restart logs everyone out);
every form carries a CSRF token (Flask-WTF). The API takes HTTP Basic ``admin:<password>``
or the session (then with the CSRF token in ``X-CSRFToken`` for changes). Wrong passwords
get 401 and count like failed VPN logins (VPN_BAN_AFTER, VPN_BAN_SECONDS): a banned source
gets 403 for everything until the ban ends.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import (
    Flask,
    Response,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from pydantic import SecretStr
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from .. import defaults
from ..apply.profile_writer import clients_dir, profile_for
from ..httpd import HttpServer, Limits, client_address, tls_context
from ..profiles import ca_fingerprint
from ..settings import Account, Settings
from ..state.credentials import ServerCredentials
from ..state.users import Origin
from . import share
from .bans import BanBook, source_of
from .users_live import LiveUsers, ServerFacts, UsersError, Vici, running_facts
from .vici_session import text

log = logging.getLogger(__name__)

TEMPLATES: Final = Path(__file__).parents[1] / "templates" / "web"
ADMIN: Final = "admin"  # the HTTP Basic user name
SESSION_HOURS: Final = 8
SHARE_MINUTES: Final = 10  # a QR code's link works this long, and for one profile download
REFRESH_S: Final = 10  # the users page reloads itself this often (no JavaScript)
POLL_S: Final = 30.0  # "last seen" is noted this often even when nobody looks
MAX_BODY: Final = 16 * 1024
_UP = frozenset({"ESTABLISHED", "REKEYING"})
CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


# --- what charon says about sessions ------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """One established IKE_SA of a user, as the console shows it."""

    user: str
    virtual_ips: tuple[str, ...]
    remote: str  # the client's address and port
    since: datetime
    bytes_in: int  # from the client
    bytes_out: int  # to the client

    def json(self) -> dict[str, Any]:
        return {
            "virtual_ips": list(self.virtual_ips),
            "remote": self.remote,
            "since": self.since.isoformat(timespec="seconds"),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


def read_sessions(answer: Iterable[Mapping[str, Any]], now: datetime) -> list[Session]:
    """The established IKE_SAs in ``list_sas`` answers (logins under way have no user yet)."""
    found = []
    for entry in answer:
        for ike in entry.values():
            if text(ike.get("state")) not in _UP:
                continue
            user = text(ike.get("remote-eap-id")) or text(ike.get("remote-id"))
            children = (ike.get("child-sas") or {}).values()
            found.append(
                Session(
                    user=user,
                    virtual_ips=tuple(text(ip) for ip in ike.get("remote-vips") or ()),
                    remote=_endpoint(text(ike.get("remote-host")), text(ike.get("remote-port"))),
                    since=now - timedelta(seconds=_number(ike.get("established"))),
                    bytes_in=sum(_number(child.get("bytes-in")) for child in children),
                    bytes_out=sum(_number(child.get("bytes-out")) for child in children),
                )
            )
    return found


def _endpoint(host: str, port: str) -> str:
    if not port:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _number(value: object) -> int:
    try:
        return int(text(value) or 0)
    except ValueError:
        return 0


# --- the console's state -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerInfo:
    """What the server page shows that does not change while the container runs."""

    backend: str
    proposals: str
    pools: tuple[str, ...]
    started: datetime
    version: str


@dataclass
class Counters:
    """Failed logins since start: of VPN users (from the ban guard) and of the console."""

    vpn_failed: int = 0
    admin_failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def vpn_login_failed(self, *_args: object) -> None:
        with self.lock:
            self.vpn_failed += 1


class Console:
    """Everything the web pages and the API read and change, apart from HTTP."""

    def __init__(
        self,
        settings: Settings,
        info: ServerInfo,
        connect: Callable[[], Vici],
        *,
        data_dir: Path = defaults.DATA_DIR,
        facts: Callable[[], ServerFacts | None] = running_facts,
        clock: Callable[[], float] = time.monotonic,
        counters: Counters | None = None,
    ) -> None:
        self.settings, self.info, self.connect = settings, info, connect
        self.data_dir, self._facts, self.clock = data_dir, facts, clock
        self.counters = counters or Counters()
        self.bans = BanBook(settings.ban_after, settings.ban_seconds)
        self._banned_until: dict[str, float] = {}
        self._last_seen: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._shares: dict[str, _Share] = {}
        self._tls: ssl.SSLContext | None = None

    # --- users and sessions ---

    def facts(self) -> ServerFacts:
        facts = self._facts()
        if facts is None:
            raise UsersError("the server is starting; try again in a moment")
        return facts

    def live_users(self) -> LiveUsers:
        if self.settings.radius_servers:
            servers = ", ".join(map(str, self.settings.radius_servers))
            raise UsersError(
                f"users live in RADIUS (VPN_RADIUS_SERVERS={servers}), not on this server; "
                "add, remove and change them on the RADIUS server"
            )
        return LiveUsers(self.settings, self.facts(), self.connect, data_dir=self.data_dir)

    def sessions(self) -> list[Session]:
        now = datetime.now(UTC)
        found = read_sessions(self._list_sas(), now)
        with self._lock:
            for one in found:
                self._last_seen[one.user] = now
        return found

    def _list_sas(self) -> list[dict[str, Any]]:
        """charon's IKE_SAs, over a VICI session of their own, closed right after."""
        session = self.connect()
        try:
            return list(session.list_sas())
        finally:
            transport = getattr(session, "transport", None)  # vici.Session's socket
            if transport is not None:
                with contextlib.suppress(OSError):
                    transport.close()

    def last_seen(self, name: str) -> datetime | None:
        with self._lock:
            return self._last_seen.get(name)

    def users(self) -> list[dict[str, Any]]:
        """Every user with its origin, static IP, state and live sessions."""
        try:
            sessions = self.sessions()
            charon = True
        except Exception as exc:  # the list still shows; the page says charon is silent
            log.warning("web console: cannot list sessions from charon (%s)", exc)
            sessions, charon = [], False
        if self.settings.radius_servers:
            views = [(name, Origin.ENV, None, False) for name in sorted({s.user for s in sessions})]
            rows = [self._row(n, "radius", ip, d, sessions) for n, _, ip, d in views]
        else:
            rows = [
                self._row(v.name, str(v.origin), v.static_ip, v.disabled, sessions)
                for v in self.live_users().list()
            ]
        for row in rows:
            row["charon_answered"] = charon
        return rows

    def _row(
        self,
        name: str,
        origin: str,
        static_ip: ipaddress.IPv4Address | None,
        disabled: bool,
        sessions: list[Session],
    ) -> dict[str, Any]:
        mine = [s.json() for s in sessions if s.user == name]
        seen = self.last_seen(name)
        return {
            "name": name,
            "origin": origin,
            "static_ip": str(static_ip) if static_ip else None,
            "disabled": disabled,
            "online": bool(mine),
            "sessions": mine,
            "last_seen": seen.isoformat(timespec="seconds") if seen else None,
        }

    def user_names(self) -> set[str]:
        if self.settings.radius_servers:
            return set()
        return {view.name for view in self.live_users().list()}

    def profile_file(self, name: str, file_name: str) -> Path | None:
        """One of the files of ``/data/clients/<name>/``; None when there is no such file."""
        if name not in self.user_names():
            return None
        folder = clients_dir(self.data_dir) / name
        try:
            files = {path.name: path for path in folder.iterdir() if path.is_file()}
        except OSError:
            return None
        return files.get(file_name)

    def profile_names(self, name: str) -> list[str]:
        folder = clients_dir(self.data_dir) / name
        try:
            return sorted(path.name for path in folder.iterdir() if path.is_file())
        except OSError:
            return []

    # --- the server ---

    def server(self) -> dict[str, Any]:
        facts = self._facts()
        chain = facts.signer_pem if facts and facts.signer_pem else None
        leaf = x509.load_pem_x509_certificates(chain.encode())[0] if chain else None
        try:
            ike_sas = sum(1 for entry in self._list_sas() for _ in entry)
        except Exception:
            ike_sas = None
        ca = facts.ca if facts else None
        return {
            "identity": facts.host if facts else None,
            "certificate": {
                "subject": leaf.subject.rfc4514_string() if leaf else None,
                "issuer": leaf.issuer.rfc4514_string() if leaf else None,
                "expires": leaf.not_valid_after_utc.isoformat() if leaf else None,
            },
            "ca_fingerprint": ca_fingerprint(ca) if ca else None,
            "ipsec_backend": self.info.backend,
            "proposals": self.info.proposals,
            "pools": list(self.info.pools),
            "started": self.info.started.isoformat(timespec="seconds"),
            "uptime_s": int((datetime.now(UTC) - self.info.started).total_seconds()),
            "version": self.info.version,
            "ike_sas": ike_sas,
            "failed_logins": {
                "vpn": self.counters.vpn_failed,
                "console": self.counters.admin_failed,
            },
        }

    def ca_fingerprint(self) -> str | None:
        """The own CA's SHA-256 fingerprint (None with a public certificate): what an
        operator compares with the browser's view of the certificate, and with the log."""
        facts = self._facts()
        ca = facts.ca if facts else None
        return ca_fingerprint(ca) if ca else None

    def ca_pem(self) -> bytes | None:
        facts = self._facts()
        return facts.ca_pem.encode() if facts and facts.ca_pem else None

    # --- failed logins ---

    def banned(self, address: str) -> bool:
        source = source_of(address)
        with self._lock:
            until = self._banned_until.get(source)
            if until is not None and until <= self.clock():
                del self._banned_until[source]
                self.bans.ended(self.clock())
                log.info("web console: ban of %s ended", source)
                return False
            return until is not None

    def login_failed(self, address: str, how: str) -> None:
        source = source_of(address)
        with self._lock:
            self.counters.admin_failed += 1
            verdict = self.bans.failed(source, self.clock())
            if verdict.ban:
                self._banned_until[source] = self.clock() + self.bans.ban_seconds
        log.warning(
            "web console: failed admin login (%s) from %s (%d within %d s)",
            how,
            address,
            verdict.failures,
            self.bans.window,
        )
        if verdict.ban:
            log.warning(
                "web console: banned %s for %d s after %d failed logins "
                "(VPN_BAN_AFTER, VPN_BAN_SECONDS)",
                source,
                self.bans.ban_seconds,
                self.bans.ban_after,
            )

    # --- one-time links to the phone profiles ---

    def new_share(self, name: str) -> str:
        facts = self.facts()
        account = Account(name=name, password=SecretStr("-"), source="web console")
        profile = profile_for(
            self.settings,
            account,
            host=facts.host,
            ca=facts.ca,
            esp_gcm=facts.esp_gcm,
            signer=facts.signer(),
        )
        token = secrets.token_urlsafe(24)
        files = {f.name: f for f in share.shared_files(profile)}
        with self._lock:
            now = self.clock()
            self._shares = {t: s for t, s in self._shares.items() if s.until > now}
            self._shares[token] = _Share(name, now + SHARE_MINUTES * 60, files)
        return token

    def shared(self, token: str) -> _Share | None:
        with self._lock:
            found = self._shares.get(token)
            if found is None or found.until <= self.clock():
                self._shares.pop(token, None)
                return None
            return found

    def shared_file(self, token: str, file_name: str) -> share.SharedFile | None:
        """A file of the link; the link ends once a profile (not the CA) was fetched."""
        with self._lock:
            found = self._shares.get(token)
            if found is None or found.until <= self.clock():
                self._shares.pop(token, None)
                return None
            shared = found.files.get(file_name)
            if shared is not None and file_name != share.CA_FILE_NAME:
                del self._shares[token]
        if shared is not None:
            log.info(
                "web console: %s of user %r fetched through its one-time link",
                file_name,
                found.user,
            )
        return shared

    # --- serving ---

    def serve(self, port: int, credentials: ServerCredentials) -> HttpServer:
        """The console on ``port`` over HTTPS with the server's certificate, in a daemon
        thread. Raises OSError when the port cannot be opened."""
        self._tls = console_tls(credentials)
        return HttpServer(port, create_app(self), "web", limits=WEB_LIMITS, tls=self._tls)

    def use_certificate(self, credentials: ServerCredentials) -> None:
        """A renewed certificate: new connections get it (open ones keep the old one)."""
        if self._tls is None:
            return
        try:
            console_tls(credentials)  # chain and key checked before the live context
            with tempfile.TemporaryDirectory(prefix="ikev2-vpn-web-") as directory:
                chain = Path(directory) / "chain.pem"
                chain.write_text(_chain_pem(credentials))
                self._tls.load_cert_chain(chain, credentials.key_path)
        except (OSError, ssl.SSLError) as exc:
            log.error(
                "web console: cannot use the renewed certificate (%s); it keeps the old one "
                "until the container restarts",
                exc.__class__.__name__,
            )
            return
        log.info("web console: serving the renewed certificate")

    # --- "last seen" while nobody looks ---

    def watch(self) -> None:
        threading.Thread(target=self._poll, name="web-last-seen", daemon=True).start()

    def _poll(self) -> None:
        while True:
            try:
                self.sessions()
            except Exception as exc:
                log.debug("web console: listing sessions failed (%s)", exc)
            time.sleep(POLL_S)


@dataclass(frozen=True)
class _Share:
    user: str
    until: float  # monotonic
    files: dict[str, share.SharedFile]


# --- HTTP ---------------------------------------------------------------------------------------


def create_app(console: Console) -> Flask:
    """The console's WSGI application, for HTTPS only (its cookie says so)."""
    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=str(TEMPLATES / "static"))
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # new at each start: sessions end with the process
        SESSION_COOKIE_NAME="__Host-session",  # Secure, Path=/, no Domain: browsers check it
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        MAX_CONTENT_LENGTH=MAX_BODY,
        MAX_FORM_MEMORY_SIZE=MAX_BODY,
        WTF_CSRF_CHECK_DEFAULT=False,  # checked below, for session-authenticated changes
        WTF_CSRF_TIME_LIMIT=SESSION_HOURS * 3600,
        SEND_FILE_MAX_AGE_DEFAULT=None,
    )
    app.add_template_filter(_when, "when")
    csrf = CSRFProtect(app)
    _guard(app, console, csrf)
    _pages(app, console)
    _api(app, console)
    _shares(app, console)
    return app


def _when(value: str | None, default: str = "\u2013") -> str:  # an en dash
    """An ISO time of the API as people read it: 2026-12-03 11:18 UTC."""
    if not value:
        return default
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


_OPEN = frozenset({"login", "static", "shared_index", "shared_file"})


def _guard(app: Flask, console: Console, csrf: CSRFProtect) -> None:
    @app.before_request
    def authenticate() -> BaseResponse | None:
        address = client_address(request.environ)
        if console.banned(address):
            return _plain(
                "too many failed logins from your address; wait for the ban to end "
                "(VPN_BAN_SECONDS)",
                403,
            )
        if request.endpoint in _OPEN:
            return None
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            if auth.username == ADMIN and _matches(console, auth.password or ""):
                return None
            console.login_failed(address, "HTTP Basic")
            return _unauthorized()
        if not session.get("admin"):
            return (
                _unauthorized() if request.path.startswith("/api/") else redirect(url_for("login"))
            )
        if request.method not in {"GET", "HEAD", "OPTIONS"}:
            csrf.protect()
        return None

    @app.after_request
    def headers(response: Response) -> BaseResponse:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if request.is_secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(CSRFError)
    def csrf_failed(error: CSRFError) -> BaseResponse:
        return _error(f"{error.description}; reload the page and try again", 400)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> BaseResponse:
        return _error(error.description or error.name, error.code or 500)


def _matches(console: Console, password: str) -> bool:
    hashed = console.settings.web_password
    return hashed is not None and hashed.matches(password)


def _unauthorized() -> BaseResponse:
    response = jsonify(error="wrong or missing credentials; use HTTP Basic admin:<password>")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="ikev2-vpn", charset="UTF-8"'
    return response


def _plain(message: str, status: int) -> BaseResponse:
    return Response(message + "\n", status=status, mimetype="text/plain")


def _error(message: str, status: int) -> BaseResponse:
    if request.path.startswith("/api/"):
        response = jsonify(error=message)
        response.status_code = status
        return response
    return Response(render_template("error.html", message=message, status=status), status=status)


# --- pages ---


def _pages(app: Flask, console: Console) -> None:
    @app.get("/")
    def home() -> BaseResponse:
        return redirect(url_for("users"))

    @app.route("/login", methods=["GET", "POST"])
    def login() -> BaseResponse | str:
        if request.method == "GET":
            return render_template("login.html", failed=False, fingerprint=console.ca_fingerprint())
        from flask_wtf.csrf import validate_csrf
        from wtforms.validators import ValidationError

        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError as exc:
            return _error(f"{exc}; reload the page and try again", 400)
        if not _matches(console, request.form.get("password", "")):
            console.login_failed(client_address(request.environ), "form")
            page = render_template("login.html", failed=True, fingerprint=console.ca_fingerprint())
            return Response(page, status=401)
        session.clear()
        session["admin"] = True
        session.permanent = True
        log.info("web console: admin logged in from %s", client_address(request.environ))
        return redirect(url_for("users"))

    @app.post("/logout")
    def logout() -> BaseResponse:
        session.clear()
        return redirect(url_for("login"))

    _user_pages(app, console)
    _change_pages(app, console)


def _user_pages(app: Flask, console: Console) -> None:
    @app.get("/users")
    def users() -> str:
        return render_template(
            "users.html",
            users=console.users(),
            refresh=REFRESH_S,
            radius=bool(console.settings.radius_servers),
        )

    @app.get("/users/<name>")
    def user(name: str) -> str:
        rows = [row for row in console.users() if row["name"] == name]
        if not rows:
            abort(404, f"there is no user {name!r}")
        return render_template(
            "user.html",
            user=rows[0],
            files=console.profile_names(name),
            server=console.server(),
            can_change=rows[0]["origin"] not in {"env", "radius"},
        )

    @app.get("/users/<name>/files/<file_name>")
    def download(name: str, file_name: str) -> BaseResponse:
        return _download(console, name, file_name)

    @app.get("/users/<name>/share")
    def share_page(name: str) -> str:
        if name not in console.user_names():
            abort(404, f"there is no user {name!r}")
        try:
            token = console.new_share(name)
        except UsersError as exc:
            abort(409, str(exc))
        link = url_for("shared_index", token=token, _external=True)
        return render_template(
            "share.html", name=name, link=link, token=token, minutes=SHARE_MINUTES
        )

    @app.get("/qr/<token>.png")
    def qr(token: str) -> BaseResponse:
        if console.shared(token) is None:
            abort(404, "this link has ended")
        link = url_for("shared_index", token=token, _external=True)
        return Response(share.qr_png(link), mimetype="image/png")

    @app.get("/ca.pem")
    def ca() -> BaseResponse:
        pem = console.ca_pem()
        if pem is None:
            abort(404, "the server's certificate comes from a public CA; no CA to import")
        return _attachment(pem, share.CA_FILE_NAME, share.CA_CONTENT_TYPE)

    @app.get("/server")
    def server() -> str:
        return render_template("server.html", server=console.server())


def _change_pages(app: Flask, console: Console) -> None:
    @app.post("/users")
    def add_user() -> BaseResponse | str:
        name = request.form.get("name", "").strip()
        typed = request.form.get("password", "")
        try:
            generated = console.live_users().add(name, SecretStr(typed) if typed else None)
        except UsersError as exc:
            return _form_error(str(exc))
        return render_template(
            "added.html",
            name=name,
            password=generated.get_secret_value() if generated else None,
        )

    @app.post("/users/<name>/password")
    def change_password(name: str) -> BaseResponse | str:
        typed = request.form.get("password", "")
        try:
            generated = console.live_users().passwd(name, SecretStr(typed) if typed else None)
        except UsersError as exc:
            return _form_error(str(exc))
        return render_template(
            "added.html",
            name=name,
            password=generated.get_secret_value() if generated else None,
            changed=True,
        )

    @app.post("/users/<name>/static-ip")
    def change_static_ip(name: str) -> BaseResponse:
        try:
            address = _address(request.form.get("address", "").strip() or None)
            console.live_users().static_ip(name, address)
        except UsersError as exc:
            return _form_error(str(exc))
        return redirect(url_for("user", name=name))

    @app.post("/users/<name>/disable")
    def disable(name: str) -> BaseResponse:
        try:
            console.live_users().disable(name)
        except UsersError as exc:
            return _form_error(str(exc))
        return redirect(url_for("user", name=name))

    @app.post("/users/<name>/enable")
    def enable(name: str) -> BaseResponse:
        try:
            console.live_users().enable(name)
        except UsersError as exc:
            return _form_error(str(exc))
        return redirect(url_for("user", name=name))

    @app.post("/users/<name>/remove")
    def remove(name: str) -> BaseResponse:
        try:
            console.live_users().remove(name)
        except UsersError as exc:
            return _form_error(str(exc))
        return redirect(url_for("users"))


def _form_error(message: str) -> BaseResponse:
    return _error(message, 404 if message.startswith("there is no user") else 400)


def _address(value: object) -> ipaddress.IPv4Address | None:
    """A static IP as the CLI reads it: an IPv4 address, or none (null, '' or 'none')."""
    if value is None or value in ("", "none"):
        return None
    if not isinstance(value, str):
        raise UsersError("the address is not text; give an IPv4 address in VPN_POOL_V4_STATIC")
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise UsersError(
            f"{value!r} is not an IPv4 address; give one in VPN_POOL_V4_STATIC, or none"
        ) from None


def _download(console: Console, name: str, file_name: str) -> BaseResponse:
    path = console.profile_file(name, file_name)
    if path is None:
        abort(404, f"user {name!r} has no file {file_name!r}")
    return send_file(path, as_attachment=True, download_name=file_name, max_age=0)


def _attachment(content: bytes, name: str, content_type: str) -> BaseResponse:
    response = Response(content, mimetype=content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# --- the API ---


def _json(status: int = 200, **content: Any) -> BaseResponse:
    response = jsonify(content)
    response.status_code = status
    return response


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, "the body is not a JSON object; send one with Content-Type: application/json")
    return data


def _password_of(data: Mapping[str, Any]) -> SecretStr | None:
    value = data.get("password")
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsersError("password: not a string; give text, or leave it out to generate one")
    return SecretStr(value)


def _failed(exc: UsersError) -> BaseResponse:
    message = str(exc)
    status = 400
    if message.startswith("there is no user"):
        status = 404
    elif "already exists" in message or "RADIUS" in message:
        status = 409
    return _json(status, error=message)


def _api(app: Flask, console: Console) -> None:
    @app.get("/api/users")
    def api_users() -> BaseResponse:
        return _json(users=console.users())

    @app.get("/api/users/<name>/profiles/<file_name>")
    def api_profile(name: str, file_name: str) -> BaseResponse:
        return _download(console, name, file_name)

    @app.get("/api/server")
    def api_server() -> BaseResponse:
        return _json(**console.server())

    _api_changes(app, console)


def _api_changes(app: Flask, console: Console) -> None:

    @app.post("/api/users")
    def api_add() -> BaseResponse:
        data = _body()
        name = data.get("name")
        try:
            if not isinstance(name, str):
                raise UsersError("name: missing or not a string; give the new user's name")
            generated = console.live_users().add(name, _password_of(data))
        except UsersError as exc:
            return _failed(exc)
        content: dict[str, Any] = {"name": name}
        if generated is not None:
            content["password"] = generated.get_secret_value()  # shown this once
        return _json(201, **content)

    @app.put("/api/users/<name>/password")
    def api_password(name: str) -> BaseResponse:
        data = _body()
        try:
            generated = console.live_users().passwd(name, _password_of(data))
        except UsersError as exc:
            return _failed(exc)
        content: dict[str, Any] = {"name": name}
        if generated is not None:
            content["password"] = generated.get_secret_value()
        return _json(**content)

    @app.put("/api/users/<name>/static-ip")
    def api_static_ip(name: str) -> BaseResponse:
        data = _body()
        try:
            address = _address(data.get("address"))
            ended = console.live_users().static_ip(name, address)
        except UsersError as exc:
            return _failed(exc)
        return _json(name=name, static_ip=str(address) if address else None, ended=ended)

    @app.post("/api/users/<name>/disable")
    def api_disable(name: str) -> BaseResponse:
        try:
            ended = console.live_users().disable(name)
        except UsersError as exc:
            return _failed(exc)
        return _json(name=name, disabled=True, ended=ended)

    @app.post("/api/users/<name>/enable")
    def api_enable(name: str) -> BaseResponse:
        try:
            console.live_users().enable(name)
        except UsersError as exc:
            return _failed(exc)
        return _json(name=name, disabled=False)

    @app.delete("/api/users/<name>")
    def api_remove(name: str) -> BaseResponse:
        try:
            ended = console.live_users().remove(name)
        except UsersError as exc:
            return _failed(exc)
        return _json(name=name, removed=True, ended=ended)


# --- the one-time links a phone follows (no login: the link is the secret) ---


def _shares(app: Flask, console: Console) -> None:
    @app.get("/s/<token>/")
    def shared_index(token: str) -> str:
        found = console.shared(token)
        if found is None:
            abort(404, "this link has ended; ask for a new QR code")
        files = [f for f in found.files.values()]
        return render_template("shared.html", user=found.user, token=token, files=files)

    @app.get("/s/<token>/<file_name>")
    def shared_file(token: str, file_name: str) -> BaseResponse:
        found = console.shared_file(token, file_name)
        if found is None:
            abort(404, "this link has ended; ask for a new QR code")
        return _attachment(found.content, found.name, found.content_type)


def server_info(backend: str, proposals: str, pools: Iterable[object]) -> ServerInfo:
    try:
        version = metadata.version("ikev2-vpn")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return ServerInfo(backend, proposals, tuple(str(p) for p in pools), datetime.now(UTC), version)


# A browser keeps a few connections open between clicks, and a login takes a scrypt hash:
# more time and body than the other listeners allow, the same bounds otherwise.
WEB_LIMITS: Final = Limits(lifetime_s=60.0, idle_s=15.0, body_bytes=MAX_BODY)


def console_tls(credentials: ServerCredentials) -> ssl.SSLContext:
    """The server certificate with its intermediates (not the own CA: clients have it or
    compare its fingerprint), and its key."""
    return tls_context(_chain_pem(credentials), credentials.key_path)


def _chain_pem(credentials: ServerCredentials) -> str:
    chain = [credentials.leaf, *credentials.intermediates]
    return "".join(cert.public_bytes(Encoding.PEM).decode() for cert in chain)
