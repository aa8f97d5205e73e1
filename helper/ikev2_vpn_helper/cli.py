"""``ikev2-vpn-helper``: build the image, run the server, check it end to end, clean up."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import docker
from docker.errors import NotFound

from . import __version__, base, image, platforms
from . import engine as eng
from .check import CheckOptions, format_report
from .errors import HelperError
from .profiles import describe as describe_profiles
from .profiles import fetch_profiles
from .server import DEFAULT_NAME, HEALTH_TIMEOUT_S, Server, ServerSpec, start_server
from .session import run_check
from .topology import ensure_topology
from .users import read_password, run_users, users_argv
from .vm.cli import add_vm_parser, cmd_vm

PASSWORD_ENV = "VPN_CHECK_PASSWORD"  # noqa: S105 - a variable name
# Settings whose values are secrets, and the *_FILE setting that carries them as a file.
SECRET_SETTINGS = {
    "VPN_PASSWORD": "VPN_PASSWORD_FILE",
    "VPN_USERS": "VPN_USERS_FILE",
    "VPN_RADIUS_SECRET": "VPN_RADIUS_SECRET_FILE",
}


DESCRIPTIONS = {
    "build": (
        "Build the server image from the repository's Dockerfile. The base is --base when "
        "the engine has it or a registry answers, else a local Debian base made with "
        "debootstrap (needs root). The CAs added to this host are trusted by the build stage, "
        "so pip works behind a TLS-intercepting proxy. --platform builds for other CPUs "
        "under QEMU emulation (binfmt_misc with the F flag), one image per platform, "
        "each on a base of its own architecture."
    ),
    "run": (
        "Start a server container with least privilege (NET_ADMIN, /dev/net/tun, the sysctls "
        "it needs) and a named volume on /data, and wait until the engine reports it healthy. "
        "Passwords given as settings are copied into the container as *_FILE files, never "
        "put in its environment."
    ),
    "check": (
        "Start a strongSwan client container and a target on the server's egress network, "
        "connect as a user, send TCP and ICMP to the target, and report the virtual IP (must "
        "be in the server's pool), the pushed DNS, whether the target saw the server's egress "
        "address (NAT), and the connect time. Exit status 0 only when all of that holds."
    ),
    "profiles": (
        "Copy a user's client profiles (Apple .mobileconfig, Android .sswan, Windows PowerShell "
        "script, Linux swanctl.conf and NetworkManager keyfile, the CA certificate, README.txt) "
        "out of the server's /data/clients/USER/ into a directory, and list them. The server "
        "rewrites them at every start. Some may hold the password: they are written 0600 and "
        "only their names are shown."
    ),
    "users": (
        "List, add and remove VPN users, change their passwords and static IPs, in a running "
        "server (it runs `ikev2-vpn users` there). Changes apply at once, without a restart "
        "and without disconnecting other users. Passwords go to the server over the "
        "command's standard input, never on a command line: give --password-file FILE ('-' "
        "reads this command's standard input) or --prompt; without either the server "
        "generates one and prints it once. Users declared in the server's environment are "
        "listed but cannot be changed here."
    ),
    "clean": (
        "Remove the containers, networks and volumes labelled ikev2-vpn.test=RUN_ID: what a "
        "check with --keep, a test session or `run --topology RUN_ID` created."
    ),
}


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- argument parsing --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ikev2-vpn-helper",
        description="Build, run and check the ikev2-vpn server container (Docker SDK).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build",
        help="build the server image from the repository",
        allow_abbrev=False,
        description=DESCRIPTIONS["build"],
    )
    build.add_argument(
        "--tag",
        help=f"image tag ({image.DEFAULT_IMAGE}); with several platforms each image is "
        "TAG-SUFFIX (amd64, arm64, armv7) and the engine's own platform's also TAG",
    )
    build.add_argument(
        "--platform",
        metavar="P",
        help=f"{platforms.supported()}, a comma list or all (default: the engine's own); "
        "another CPU than the engine's needs QEMU emulation",
    )
    build.add_argument(
        "--base",
        default=base.DEFAULT_BASE,
        help="base image (%(default)s); pulled if missing, else made locally with debootstrap",
    )
    build.add_argument(
        "--rebuild-base",
        action="store_true",
        help="make the local debootstrap base again even if it exists",
    )
    build.add_argument(
        "--mirror", default=base.DEFAULT_MIRROR, help="Debian mirror for debootstrap"
    )
    build.add_argument("--context", type=Path, help="directory with the Dockerfile (the checkout)")
    build.add_argument(
        "--no-host-ca",
        action="store_true",
        help="do not pass this host's /usr/local/share/ca-certificates to the build",
    )
    build.add_argument(
        "--ca-cert",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="extra PEM CA the build stage trusts (repeatable)",
    )
    build.add_argument("-v", "--verbose", action="store_true", help="show the full build output")

    run = commands.add_parser(
        "run",
        help="start a server container and wait until healthy",
        allow_abbrev=False,
        description=DESCRIPTIONS["run"],
    )
    run.add_argument("--name", default=DEFAULT_NAME, help="container name (%(default)s)")
    run.add_argument("--image", default=image.DEFAULT_IMAGE, help="image (%(default)s)")
    run.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="a setting (repeatable); NAME alone takes the value from your environment",
    )
    run.add_argument(
        "--env-file",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="settings file, one NAME=VALUE per line (Docker's format)",
    )
    run.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="VPN_PASSWORD from a file, copied into the container",
    )
    run.add_argument(
        "--users-file",
        type=Path,
        metavar="FILE",
        help="VPN_USERS_FILE: one name:password per line, copied into the container",
    )
    run.add_argument("--volume", help="named volume for /data (<name>-data)")
    run.add_argument("--publish", action="store_true", help="publish UDP 500 and 4500 on the host")
    run.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="NAME",
        help="network to attach (repeatable; the first is attached at creation)",
    )
    run.add_argument(
        "--topology",
        metavar="NAME",
        help="attach to test networks NAME-egress (default route) and NAME-wan, made if missing",
    )
    run.add_argument("--replace", action="store_true", help="remove a container of that name first")
    run.add_argument(
        "--timeout",
        type=float,
        default=HEALTH_TIMEOUT_S,
        help="seconds to wait for healthy (%(default)s)",
    )

    check = commands.add_parser(
        "check",
        help="connect a test client through the server",
        allow_abbrev=False,
        description=DESCRIPTIONS["check"],
    )
    check.add_argument(
        "server", nargs="?", default=DEFAULT_NAME, help="server container (%(default)s)"
    )
    check.add_argument("--user", help="VPN user (default: the server's VPN_USER)")
    check.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help=f"the user's password (else ${PASSWORD_ENV}, else a prompt)",
    )
    check.add_argument(
        "--ca-file",
        type=Path,
        metavar="FILE",
        help="CA to trust (default: the server's /data/ca.crt)",
    )
    check.add_argument("--server-id", help="server identity (default: the server's VPN_HOST)")
    check.add_argument("--network", help="network the client shares with the server")
    check.add_argument("--image", help="image for client and target (default: the server's)")
    check.add_argument(
        "--topology",
        metavar="NAME",
        help="put the client on test network NAME-wan (attach the server to it)",
    )
    check.add_argument("--timeout", type=int, default=20, help="connect timeout in seconds")
    check.add_argument("--ike-proposals", help="client IKE proposals (default: strongSwan's)")
    check.add_argument("--esp-proposals", help="client ESP proposals (default: strongSwan's)")
    check.add_argument("--keep", action="store_true", help="keep the client and target containers")
    check.add_argument("--json", action="store_true", help="print the report as JSON")

    profiles = commands.add_parser(
        "profiles",
        help="copy a user's client profiles out of the server",
        allow_abbrev=False,
        description=DESCRIPTIONS["profiles"],
    )
    profiles.add_argument("server", metavar="CONTAINER", help="server container")
    profiles.add_argument("user", metavar="USER", help="VPN user")
    profiles.add_argument(
        "--out", type=Path, metavar="DIR", help="directory to write them to (./USER)"
    )

    _add_users_parser(commands)

    clean = commands.add_parser(
        "clean",
        help="remove what a check or test run left behind",
        allow_abbrev=False,
        description=DESCRIPTIONS["clean"],
    )
    clean.add_argument("run_id", nargs="?", help="run id (without one: list the runs)")
    clean.add_argument("--all", action="store_true", help="remove the objects of every run")
    add_vm_parser(commands)
    return parser


def _add_users_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = commands.add_parser(
        "users",
        help="manage the VPN users of a running server",
        allow_abbrev=False,
        description=DESCRIPTIONS["users"],
    )
    users.add_argument("server", metavar="CONTAINER", help="server container")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="users, their origin and static IP")
    listing.add_argument("--json", action="store_true", help="as JSON")
    for action, text in (("add", "add a user"), ("passwd", "set a user's password")):
        changing = actions.add_parser(action, help=text, allow_abbrev=False)
        changing.add_argument("name", metavar="USER")
        changing.add_argument(
            "--password-file", type=Path, metavar="FILE", help="the password ('-': stdin)"
        )
        changing.add_argument("--prompt", action="store_true", help="type the password")
    removing = actions.add_parser("remove", help="remove a user, ending its sessions")
    removing.add_argument("name", metavar="USER")
    for action, text in (
        ("disable", "refuse a user's logins, ending its sessions (the account stays)"),
        ("enable", "let a disabled user log in again"),
    ):
        actions.add_parser(action, help=text).add_argument("name", metavar="USER")
    static = actions.add_parser("static-ip", help="fix a user's virtual IP ('none': dynamic)")
    static.add_argument("name", metavar="USER")
    static.add_argument("address", metavar="ADDRESS", help="in the server's VPN_POOL_V4_STATIC")


# --- settings for `run` (pure) -------------------------------------------------------------------


def parse_env_items(items: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """``NAME=VALUE`` or ``NAME`` (value from ``environ``, skipped when unset), like docker -e."""
    env: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not name or not name.replace("_", "").isalnum():
            raise HelperError(f"setting {name!r} is not a variable name; write NAME=VALUE")
        if equals:
            env[name] = value
        elif name in environ:
            env[name] = environ[name]
    return env


def parse_env_file(text: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Docker's env-file format: NAME=VALUE lines, verbatim values, # comments."""
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return parse_env_items([line.lstrip() for line in lines], environ)


def secrets_to_files(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, bytes]]:
    """Move secret settings out of the environment into ``*_FILE`` files.

    VPN_PASSWORD becomes the file of VPN_PASSWORD_FILE (verbatim); VPN_USERS (pairs
    separated by whitespace) becomes VPN_USERS_FILE's one ``name:password`` per line.
    """
    plain = dict(env)
    files: dict[str, bytes] = {}
    for setting, file_setting in SECRET_SETTINGS.items():
        if setting not in plain:
            continue
        if file_setting in plain:
            raise HelperError(f"both {setting} and {file_setting} are set; keep one")
        value = plain.pop(setting)
        if setting == "VPN_USERS":
            value = "".join(pair + "\n" for pair in value.split())
        files[file_setting] = value.encode()
    return plain, files


def user_given(env: Mapping[str, str], files: Mapping[str, bytes]) -> bool:
    return "VPN_USER" in env or "VPN_USERS_FILE" in env or "VPN_USERS_FILE" in files


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise HelperError(f"cannot read {what} {path}: {error.strerror}") from None


def server_settings(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, bytes]]:
    env: dict[str, str] = {}
    for path in args.env_file:
        env.update(parse_env_file(_read_bytes(path, "env file").decode(), environ))
    env.update(parse_env_items(args.env, environ))
    for setting in SECRET_SETTINGS:
        if any(item.startswith(f"{setting}=") for item in args.env):
            _say(
                f"warning: {setting} on the command line is visible to every user of this host; "
                f"prefer --password-file/--users-file or -e {setting} (from your environment)"
            )
    env, files = secrets_to_files(env)
    if args.password_file:
        if "VPN_PASSWORD_FILE" in files:
            raise HelperError("VPN_PASSWORD and --password-file are both given; keep one")
        files["VPN_PASSWORD_FILE"] = _read_bytes(args.password_file, "password file")
    if args.users_file:
        if "VPN_USERS_FILE" in files:
            raise HelperError("VPN_USERS and --users-file are both given; keep one")
        files["VPN_USERS_FILE"] = _read_bytes(args.users_file, "users file")
    # Never let the server ask an outside service for its address unless told to.
    if "VPN_HOST" not in env and "VPN_HOST_DETECT" not in env:
        env["VPN_HOST_DETECT"] = "off"
        _say(
            "VPN_HOST is not set: the server uses its own address as its name "
            "(set -e VPN_HOST=<name clients dial>, or -e VPN_HOST_DETECT=on)"
        )
    return env, files


# --- commands ---------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace, engine: docker.DockerClient) -> int:
    chosen = (
        platforms.parse_platforms(args.platform)
        if args.platform
        else [platforms.host_platform(engine)]
    )
    context = (args.context or image.repository_root()).resolve()
    ca_files = [] if args.no_host_ca else image.host_extra_cas()
    ca_pems = image.read_ca_files([*ca_files, *args.ca_cert])
    if ca_pems:
        _say(f"build: trusting {len(ca_pems)} extra CA certificate(s) in the build stage")
    plan = image.BuildPlan(
        context=context,
        ca_pems=tuple(ca_pems),
        base=args.base,
        rebuild_base=args.rebuild_base,
        mirror=args.mirror,
        verbose=args.verbose,
    )
    image.build_for_platforms(
        engine,
        chosen,
        args.tag or image.DEFAULT_IMAGE,
        plan,
        tag_given=args.tag is not None,
        log=_say,
        report=print,
    )
    return 0


def cmd_run(args: argparse.Namespace, engine: docker.DockerClient) -> int:
    env, files = server_settings(args, os.environ)
    networks = list(args.network)
    labels: dict[str, str] = {}
    if args.topology:
        topology = ensure_topology(engine, args.topology, run_id=args.topology)
        networks = [topology.egress, topology.wan, *networks]
        labels = eng.labels(args.topology, "server")
    _make_room(engine, args.name, args.replace)
    spec = ServerSpec(
        image=args.image,
        name=args.name,
        env=env,
        secret_files=files,
        volume=args.volume,
        networks=networks,
        publish=args.publish,
        labels=labels,
    )
    server = start_server(engine, spec)
    _say(f"started {server.name}; waiting until healthy (up to {args.timeout:.0f} s)")
    seconds = server.wait_healthy(args.timeout)
    egress = server.egress()
    if args.topology and egress.network != networks[0]:
        raise HelperError(
            f"server {server.name} routes via {egress.interface} ({egress.network}), "
            f"not {networks[0]}"
        )
    print(
        f"{server.name} is healthy after {seconds:.1f} s "
        f"(egress {egress.address} on {egress.network})"
    )
    print(f"clients trust the CA in /data/ca.crt: docker cp {server.name}:/data/ca.crt .")
    if not user_given(env, files) and not env.get("VPN_RADIUS_SERVERS"):
        print(f"no user given: the generated login is in `docker logs {server.name}` (shown once)")
    return 0


def _make_room(engine: docker.DockerClient, name: str, replace: bool) -> None:
    try:
        existing = engine.containers.get(name)
    except NotFound:
        return
    if not replace:
        raise HelperError(f"a container named {name} exists; add --replace or choose --name")
    existing.remove(force=True, v=True)  # its named state volume stays


def check_password(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """From --password-file (one trailing newline removed), the environment, or a prompt."""
    if args.password_file:
        text = _read_bytes(args.password_file, "password file").decode()
        return text.removesuffix("\n").removesuffix("\r")
    if environ.get(PASSWORD_ENV):
        return environ[PASSWORD_ENV]
    if sys.stdin.isatty():
        return getpass.getpass(f"password of {args.user}: ")
    raise HelperError(f"no password: use --password-file FILE or set {PASSWORD_ENV}")


def cmd_check(args: argparse.Namespace, engine: docker.DockerClient) -> int:
    server = Server.find(engine, args.server)
    if server.state().get("Status") != "running":
        raise HelperError(f"server {server.name} is not running")
    args.user = args.user or eng.container_env(server.container).get("VPN_USER")
    if not args.user:
        raise HelperError("which user? give --user (the server has no VPN_USER)")
    password = check_password(args, os.environ)
    options = CheckOptions(
        ca_pem=_read_bytes(args.ca_file, "CA file") if args.ca_file else None,
        server_id=args.server_id,
        client_network=args.network,
        image=args.image,
        timeout_s=args.timeout,
        keep=args.keep,
        topology=args.topology,
        ike_proposals=args.ike_proposals,
        esp_proposals=args.esp_proposals,
    )
    report = run_check(engine, server, user=args.user, password=password, options=options, log=_say)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def cmd_clean(args: argparse.Namespace, engine: docker.DockerClient) -> int:
    runs = eng.list_runs(engine)
    if args.all:
        chosen = sorted(runs)
    elif args.run_id:
        chosen = [args.run_id]
    else:
        for run_id, names in sorted(runs.items()):
            print(f"{run_id}: {', '.join(sorted(names))}")
        if not runs:
            print("nothing to clean")
        return 0
    for run_id in chosen:
        removed = eng.remove_run(engine, run_id)
        print(f"{run_id}: removed {', '.join(removed) if removed else 'nothing'}")
    return 0


def cmd_profiles(args: argparse.Namespace, engine: docker.DockerClient) -> int:
    server = Server.find(engine, args.server)
    out_dir = args.out or Path(args.user)
    files = fetch_profiles(server.container, args.user, out_dir)
    for line in describe_profiles(files):
        print(line)
    _say(
        f"{len(files)} files for {args.user} in {out_dir}; README.txt says which device takes which"
    )
    return 0


def cmd_users(args: argparse.Namespace, engine: docker.DockerClient) -> int:
    server = Server.find(engine, args.server)
    if server.state().get("Status") != "running":
        raise HelperError(f"server {server.name} is not running")
    password = None
    if args.action in ("add", "passwd"):
        password = read_password(args.password_file, args.prompt, args.name)
    extra = ["--json"] if getattr(args, "json", False) else []
    if args.action == "static-ip":
        extra = [args.address]
    argv = users_argv(args.action, getattr(args, "name", None), extra, password is not None)
    result = run_users(server.container, argv, None if password is None else password.encode())
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.exit_code


COMMANDS = {
    "build": cmd_build,
    "run": cmd_run,
    "check": cmd_check,
    "profiles": cmd_profiles,
    "users": cmd_users,
    "clean": cmd_clean,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "vm":  # the guest has its own engine; the host's only for images
            return cmd_vm(args)
        engine = eng.connect_engine()
        return COMMANDS[args.command](args, engine)
    except HelperError as error:
        print(f"ikev2-vpn-helper: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        return 1
    except KeyboardInterrupt:
        print("ikev2-vpn-helper: interrupted", file=sys.stderr)
        return 130
