"""``ikev2-vpn``: the container's command line.

ikev2-vpn run      start the server (the image's default command)
ikev2-vpn health   exit 0 when charon answers with the configuration loaded
ikev2-vpn users    list, add, remove users, change passwords and static IPs while the
                   server runs (`ikev2-vpn users --help`)
ikev2-vpn share    serve one user's phone profiles for a few minutes, with QR codes of
                   the links (`ikev2-vpn share --help`)
ikev2-vpn ca       replace the server's own CA (`ikev2-vpn ca --help`)
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, ConfigErrors, SystemSetupError

if TYPE_CHECKING:  # imported lazily: `run` and `health` must not pay for them
    from pydantic import SecretStr

    from .run.users_live import LiveUsers
    from .settings import Settings


class _Formatter(logging.Formatter):
    """Same timestamp shape as charon's lines, which share the container log."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [VPN] %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            record.message = f"{record.levelname.lower()}: {record.message}"
        return super().formatMessage(record)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _fail(lines: list[str]) -> int:
    for line in lines:
        print(f"ikev2-vpn: error: {line}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["users"]:
        return users_main(argv[1:])
    if argv[:1] == ["share"]:
        return share_main(argv[1:])
    if argv[:1] == ["ca"]:
        return ca_main(argv[1:])
    return _server_main(argv)


def _server_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ikev2-vpn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command", nargs="?", default="run", choices=["run", "health", "users", "share", "ca"]
    )
    args = parser.parse_args(argv)
    if args.command == "health":
        from .run.health import main as health

        return health([])

    _configure_logging()
    from .run.charon import StopRequested
    from .run.vici_session import ViciError
    from .start import run

    try:
        return run()
    except ConfigErrors as exc:
        return _fail([error.line() for error in exc.errors])
    except ConfigError as exc:
        return _fail([exc.line()])
    except (SystemSetupError, ViciError) as exc:
        return _fail([str(exc)])
    except StopRequested:
        return 0


# --- ikev2-vpn users ---------------------------------------------------------------------------

USERS_DESCRIPTION = """\
Manage accounts while the server runs: changes reach charon at once (no restart, other
users stay connected) and are kept in /data/users.json. With VPN_RADIUS_SERVERS, users
live in RADIUS and are managed there: this command then only says so.

Accounts declared in the environment (VPN_USER, VPN_USERS, VPN_USERS_FILE) stay the
environment's: they cannot be removed or get a new password here. Passwords are read from
standard input (--password-stdin), never from the command line; without it one is
generated and printed once. Removing or disabling a user or changing a password ends that
user's sessions; so does changing a static IP (the next login gets the new address). A
disabled user keeps its password, static IP and profiles until it is enabled again.
"""
# The container's log (PID 1's standard output): who changed which account, for the record.
CONTAINER_LOG = Path("/proc/1/fd/1")


def _command_parser(command: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"ikev2-vpn {command}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def users_parser() -> argparse.ArgumentParser:
    parser = _command_parser("users", USERS_DESCRIPTION)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="each user's origin and static IP (no passwords)")
    listing.add_argument("--json", action="store_true", help="as JSON")
    for action, text in (("add", "add a user"), ("passwd", "give a user a new password")):
        command = actions.add_parser(action, help=text)
        command.add_argument("name")
        command.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from standard input (else one is generated and printed)",
        )
    removing = actions.add_parser("remove", help="remove a user and end its sessions")
    removing.add_argument("name")
    disabling = actions.add_parser(
        "disable", help="refuse a user's logins and end its sessions (the account stays)"
    )
    disabling.add_argument("name")
    enabling = actions.add_parser("enable", help="let a disabled user log in again")
    enabling.add_argument("name")
    static = actions.add_parser(
        "static-ip", help="give a user a fixed virtual IP from VPN_POOL_V4_STATIC"
    )
    static.add_argument("name")
    static.add_argument("address", help="an address in VPN_POOL_V4_STATIC, or 'none'")
    return parser


def users_main(argv: list[str]) -> int:
    args = users_parser().parse_args(argv)
    _configure_users_logging()
    from .run.users_live import LiveUsers, UsersError, read_facts
    from .run.vici_session import connect
    from .settings import load_settings

    try:
        settings = load_settings()
        if settings.radius_servers:
            return _fail([_in_radius(settings)])
        users = LiveUsers(settings, read_facts(), connect)
        return _users_action(users, args)
    except UsersError as exc:
        return _fail([str(exc)])
    except ConfigErrors as exc:
        return _fail([error.line() for error in exc.errors])
    except ConfigError as exc:
        return _fail([exc.line()])


def _in_radius(settings: Settings) -> str:
    servers = ", ".join(map(str, settings.radius_servers))
    return (
        f"users live in RADIUS (VPN_RADIUS_SERVERS={servers}), not on this server; "
        "add, remove and change them on the RADIUS server"
    )


def _users_action(users: LiveUsers, args: argparse.Namespace) -> int:
    from .run.users_live import UsersError

    if args.action == "list":
        views = users.list()
        if args.json:
            rows = [
                {
                    "name": v.name,
                    "origin": str(v.origin),
                    "static_ip": _text(v.static_ip),
                    "disabled": v.disabled,
                }
                for v in views
            ]
            print(json.dumps(rows, indent=2))
        else:
            width = max([4, *(len(v.name) for v in views)])
            print(f"{'NAME':<{width}}  ORIGIN     STATIC IP")
            for v in views:
                state = "  (disabled)" if v.disabled else ""
                print(f"{v.name:<{width}}  {v.origin!s:<9}  {_text(v.static_ip) or '-'}{state}")
        return 0
    if args.action == "disable":
        print(f"disabled user {args.name}{_ended(users.disable(args.name))}")
        return 0
    if args.action == "enable":
        users.enable(args.name)
        print(f"enabled user {args.name}")
        return 0
    if args.action == "static-ip":
        try:
            address = None if args.address == "none" else ipaddress.IPv4Address(args.address)
        except ValueError:
            raise UsersError(
                f"{args.address!r} is not an IPv4 address; give one in VPN_POOL_V4_STATIC, "
                "or 'none'"
            ) from None
        ended = users.static_ip(args.name, address)
        print(f"{args.name}: static IP {address or 'none (dynamic)'}{_ended(ended)}")
        return 0
    if args.action == "remove":
        print(f"removed user {args.name}{_ended(users.remove(args.name))}")
        return 0
    password = _password_from_stdin() if args.password_stdin else None
    if args.action == "add":
        generated = users.add(args.name, password)
        print(f"added user {args.name}")
    else:
        generated = users.passwd(args.name, password)
        print(f"new password for user {args.name}; its sessions were ended")
    if generated is not None:
        print(f"password: {generated.get_secret_value()} (shown once; also in its client profiles)")
    return 0


def _ended(sessions: int) -> str:
    return f" ({sessions} session{'s' if sessions != 1 else ''} ended)" if sessions else ""


def _password_from_stdin() -> SecretStr:
    """Everything on standard input; one trailing newline (what echo adds) is removed."""
    from pydantic import SecretStr

    from .run.users_live import UsersError

    try:
        text = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        raise UsersError("the password on standard input is not UTF-8 text") from None
    return SecretStr(text.removesuffix("\n").removesuffix("\r"))


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _configure_users_logging() -> None:
    """What a change did goes to the container's log; warnings also to the caller."""
    caller = logging.StreamHandler(sys.stderr)
    caller.setLevel(logging.WARNING)
    handlers: list[logging.Handler] = [caller]
    # Outside the container there is no such log: the caller's output says what happened.
    with contextlib.suppress(OSError):
        handlers.append(logging.StreamHandler(CONTAINER_LOG.open("a", buffering=1)))
    for handler in handlers:
        handler.setFormatter(_Formatter())
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)


# --- ikev2-vpn share ---------------------------------------------------------------------------

SHARE_DESCRIPTION = """\
Serve one user's Apple (.mobileconfig) and Android (.sswan) profiles for a few minutes,
under a new random link, and print a QR code of each link for the phone's camera (PNG
copies in /data/share/<user>/ while the links work). With a public certificate
(VPN_CERT=letsencrypt or files) the links are HTTPS on the container's TCP port 443, with
that certificate; with the server's own CA they are plain HTTP on port 80, and the output
and the share's page give the CA's SHA-256 fingerprint to compare. The shared copies never
contain the password: the device asks. The Apple profile is signed by the server's
certificate.
"""


def share_parser() -> argparse.ArgumentParser:
    parser = _command_parser("share", SHARE_DESCRIPTION)
    parser.add_argument("name", help="the user whose profiles to share")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="how long the links work (default 10)"
    )
    parser.add_argument(
        "--public-port",
        type=int,
        default=None,
        help="the host port published for the container's port 443 (HTTPS, compose.yaml's "
        "VPN_HTTPS_PORT) or 80 (plain HTTP, VPN_HTTP_PORT), if not the same; it goes into "
        "the links",
    )
    return parser


def share_main(argv: list[str]) -> int:
    args = share_parser().parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        return _fail(["--minutes: out of range; give more than 0 and at most 1440"])
    if args.public_port is not None and not 0 < args.public_port < 65536:
        return _fail(["--public-port: not a TCP port; give 1 to 65535"])
    _configure_users_logging()
    from pydantic import SecretStr

    from .apply.profile_writer import profile_for
    from .run import share
    from .run.users_live import LiveUsers, UsersError, read_facts
    from .run.vici_session import connect
    from .settings import Account, load_settings

    try:
        settings = load_settings()
        if settings.radius_servers:
            raise UsersError(_in_radius(settings))
        facts = read_facts()
        known = [view.name for view in LiveUsers(settings, facts, connect).list()]
        if args.name not in known:
            raise UsersError(f"there is no user {args.name!r}; `ikev2-vpn users list` shows them")
        # The shared copies never hold a password, so none is looked up.
        account = Account(name=args.name, password=SecretStr("-"), source="share")
        profile = profile_for(
            settings,
            account,
            host=facts.host,
            ca=facts.ca,
            esp_gcm=facts.esp_gcm,
            signer=facts.signer(),
        )
        share.serve(
            profile,
            tls=facts.share_tls(),
            public_port=args.public_port,
            lifetime=args.minutes * 60,
            png_dir=share.png_dir(args.name),
        )
    except UsersError as exc:
        return _fail([str(exc)])
    except ConfigErrors as exc:
        return _fail([error.line() for error in exc.errors])
    except (ConfigError, SystemSetupError) as exc:
        return _fail([exc.line() if isinstance(exc, ConfigError) else str(exc)])
    return 0


# --- ikev2-vpn ca --------------------------------------------------------------------------------

CA_DESCRIPTION = """\
rotate: replace the server's own CA (VPN_CERT=self-signed) with a new one for VPN_HOST,
and the server certificate with one it issued. The old CA, its key and the old server
certificate are kept in /data/pki/retired/<time>-<fingerprint>/ (copy them back to undo).

Run it in the running container (docker compose exec vpn ikev2-vpn ca rotate), or, when
the server cannot start (VPN_HOST changed, CA lost or expired), in a one-off container on
the same volume (docker compose run --rm vpn ca rotate). The running server keeps the old
certificate, and connected clients their tunnels, until the container restarts; from
then on only devices that imported the new CA connect. Client profiles in /data/clients
carry the new CA (rewritten now in a running container, else at the next start).
"""


def ca_parser() -> argparse.ArgumentParser:
    parser = _command_parser("ca", CA_DESCRIPTION)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("rotate", help="a new CA and server certificate; the old ones kept aside")
    return parser


def ca_main(argv: list[str]) -> int:
    ca_parser().parse_args(argv)
    _configure_users_logging()

    from . import defaults
    from .run.users_live import LiveUsers, UsersError, running_facts, save_facts, server_facts
    from .run.vici_session import connect
    from .settings import CertSource, load_settings
    from .state import pki

    try:
        settings = load_settings()
        if settings.cert is CertSource.FILES:
            raise UsersError(
                "VPN_CERT=files: the server has no CA of its own; replace the files instead"
            )
        facts = running_facts()
        host = facts.host if facts is not None else settings.host
        if host is None:
            raise UsersError(
                "VPN_HOST is not set and no server runs in this container to say which "
                "identity it uses; set VPN_HOST to the name or address clients dial"
            )
        rotation = pki.rotate(defaults.DATA_DIR, host)
        print(f"new CA for {host}: {pki.describe_ca(rotation.new)}")
        print(f"the previous CA and server certificate are kept in {rotation.retired}")
        if facts is not None and facts.ca is not None:  # the running server uses the CA
            credentials = pki.ensure_self_signed(defaults.DATA_DIR, host)  # the new ones
            facts = server_facts(host, facts.esp_gcm, credentials)
            save_facts(facts)
            if not settings.radius_servers:
                LiveUsers(settings, facts, connect, data_dir=defaults.DATA_DIR).refresh_profiles()
                print(f"client profiles in {defaults.DATA_DIR / 'clients'} carry the new CA")
            print(
                "restart the container to serve the new certificate; until then it serves "
                "the old one and connected clients stay up"
            )
        else:
            print("the next start serves the new certificate and rewrites client profiles")
        print("every device must import the new ca.crt (or a new profile) to connect again")
    except UsersError as exc:
        return _fail([str(exc)])
    except ConfigErrors as exc:
        return _fail([error.line() for error in exc.errors])
    except ConfigError as exc:
        return _fail([exc.line()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
