"""``ikev2-vpn-helper vm ...``: the VM lab's commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import engine as eng
from .. import image, platforms
from ..base import DEFAULT_MIRROR
from ..errors import HelperError
from . import arm, machine
from . import guest as vmguest
from .proof import format_proof, run_proof

DESCRIPTION = (
    "A Debian trixie guest under QEMU with Debian's stock kernel (ESP as a module) and "
    "Docker's engine, to run the server where users run it. The guest reaches no network "
    "outside QEMU (user networking with restrict=on); the host talks to it through two "
    "ports of its loopback (the guest's agent and its Docker API). KVM is used when it "
    "works here, else software emulation (TCG); the choice and why are printed."
)
CHECK_DESCRIPTION = (
    "Boot a fresh guest, load the server image built from this checkout, start the "
    "repository's compose.yaml there without VPN_IPSEC_BACKEND and prove the kernel IPsec "
    "path: the probe loads esp4 and picks kernel IPsec; a client using kernel IPsec connects "
    "through the published ports over an MTU 1400 link that drops ICMP frag-needed, gets a "
    "pool address and the DNS, reaches a target through NAT and downloads 20 MB; restart and "
    "down/up keep the CA and leave no XFRM state behind; then the userspace backend the same "
    "way, for throughput and connect-time ratios; then kernel IPsec with VPN_POOL_V6 and a "
    "certificate chain that IKE_AUTH carries only in fragments. Exit status 0 only when "
    "every step holds."
)

ARM_CHECK_DESCRIPTION = (
    "Boot an ARM image of the server (built with `build --platform`) on Debian's own ARM "
    "kernel under QEMU's full-system emulation (qemu-system-aarch64 for linux/arm64; "
    "qemu-system-arm with the 32-bit LPAE kernel for linux/arm/v7): the image's tree is the "
    "machine's root file system, its entrypoint, environment and health check run as the "
    "engine would run them, in network namespaces on a bridge, with no network card. The "
    "server makes its CA; a strongSwan client from the same image connects with a name and "
    "password, must get a pool address and DNS, and reach a target that sees the server's "
    "address; kernel IPsec must be chosen. Reports the start-up time under emulation. "
    "--data-out writes the guest's /data (a .tar.gz) for comparing profiles with another "
    "image. Exit status 0 only when every finding holds."
)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def add_vm_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vm = commands.add_parser(
        "vm", help="a VM with a stock Debian kernel (kernel IPsec)", description=DESCRIPTION,
        allow_abbrev=False,
    )  # fmt: skip
    actions = vm.add_subparsers(dest="vm_command", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="make (or reuse) the cached guest disk")
    build.add_argument("--mirror", default=DEFAULT_MIRROR, help="Debian mirror (%(default)s)")
    build.add_argument("--rebuild", action="store_true", help="make it again even if cached")

    start = actions.add_parser("start", help="boot the guest and wait for its Docker engine")
    start.add_argument(
        "--image", action="append", default=[], metavar="TAG",
        help="host image to load into the guest (repeatable)",
    )  # fmt: skip
    start.add_argument("--accel", choices=("kvm", "tcg"), help="skip the KVM probe and use this")

    run = actions.add_parser("exec", help="run a command in the guest (as root)")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD...")
    run.add_argument("--timeout", type=float, default=600, help="seconds (%(default)s)")

    copy = actions.add_parser("cp", help="copy a file in (HOST_FILE :GUEST_PATH) or out")
    copy.add_argument("source", help="HOST_FILE or :GUEST_PATH")
    copy.add_argument("destination", help=":GUEST_PATH or HOST_FILE")

    actions.add_parser("stop", help="power the guest off")
    actions.add_parser("status", help="whether the guest runs, and how to reach its engine")

    check = actions.add_parser(
        "check", help="the kernel IPsec proof", description=CHECK_DESCRIPTION
    )
    check.add_argument("--image", default=image.DEFAULT_IMAGE, help="server image (%(default)s)")
    check.add_argument("--accel", choices=("kvm", "tcg"), help="skip the KVM probe and use this")
    check.add_argument("--keep", action="store_true", help="leave the guest running afterwards")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    arm_check = actions.add_parser(
        "arm-check", help="an ARM image on Debian's ARM kernel", description=ARM_CHECK_DESCRIPTION
    )
    arm_check.add_argument(
        "--platform", required=True, choices=sorted(arm.TARGETS), help="the image's platform"
    )
    arm_check.add_argument("--image", help="image tag (default: ikev2-vpn:latest-<arm64|armv7>)")
    arm_check.add_argument("--mirror", default=DEFAULT_MIRROR, help="Debian mirror (%(default)s)")
    arm_check.add_argument("--data-out", type=Path, metavar="FILE", help="write /data here")
    arm_check.add_argument("--json", action="store_true", help="print the report as JSON")
    for parser in (start, run, copy, actions.choices["stop"], actions.choices["status"], check):
        parser.add_argument("--name", default=machine.DEFAULT_NAME if parser is not check
                            else "check", help="which guest (%(default)s)")  # fmt: skip


def cmd_vm(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one return per action
    action = args.vm_command
    if action == "build":
        built = vmguest.build_guest(mirror=args.mirror, rebuild=args.rebuild, log=_say)
        print(built.directory)
        return 0
    if action == "start":
        host = eng.connect_engine() if args.image else None
        running = machine.start(
            vmguest.find_guest(), name=args.name, images=args.image, host_engine=host,
            accel=args.accel, log=_say,
        )  # fmt: skip
        print(f"DOCKER_HOST={running.docker_url}")
        return 0
    if action == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise HelperError("vm exec needs a command: vm exec -- CMD [ARG...]")
        result = machine.exec_in(machine.load_running(args.name), argv, timeout_s=args.timeout)
        sys.stdout.buffer.write(result.stdout)
        sys.stderr.buffer.write(result.stderr)
        return result.rc
    if action == "cp":
        return _copy(args)
    if action == "arm-check":
        return _arm_check(args)
    if action == "stop":
        machine.stop(machine.load_running(args.name))
        return 0
    if action == "status":
        running = machine.load_running(args.name)
        print(f"running (pid {running.pid}, {running.accel}): DOCKER_HOST={running.docker_url}")
        return 0
    return _check(args)


def _copy(args: argparse.Namespace) -> int:
    running = machine.load_running(args.name)
    source, destination = args.source, args.destination
    if destination.startswith(":") and not source.startswith(":"):
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise HelperError(f"cannot read {path}: {error.strerror}") from None
        machine.copy_in(running, data, destination[1:], path.stat().st_mode & 0o777)
        return 0
    if source.startswith(":") and not destination.startswith(":"):
        Path(destination).write_bytes(machine.copy_out(running, source[1:]))
        return 0
    raise HelperError("vm cp copies between the host and the guest: HOST_FILE :GUEST_PATH or back")


def _arm_check(args: argparse.Namespace) -> int:
    target = arm.target_for(args.platform)
    tag = args.image or platforms.tag_with_suffix(image.DEFAULT_IMAGE, target.image_platform)
    report = arm.run_arm_check(
        eng.connect_engine(), tag, args.platform, mirror=args.mirror, log=_say
    )
    if args.data_out and report.data:
        args.data_out.write_bytes(report.data)
        args.data_out.chmod(0o600)
    print(json.dumps(report.to_dict(), indent=2) if args.json else arm.format_arm_report(report))
    return 0 if report.ok else 1


def _check(args: argparse.Namespace) -> int:
    host = eng.connect_engine()
    guest = vmguest.find_guest()
    if not guest.exists():
        _say("vm: no cached guest disk for this recipe; building it first")
        guest = vmguest.build_guest(log=_say)
    report = run_proof(
        guest, host, server_image=args.image, name=args.name, accel=args.accel, keep=args.keep,
        log=_say,
    )  # fmt: skip
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_proof(report))
    return 0 if report.ok else 1
