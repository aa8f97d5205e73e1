"""PID 1 of the ARM check's guest (standard library only, the image's /usr/bin/python3).

The guest is the ARM image's own file tree, unpacked by the kernel from the initramfs, plus
Debian's kernel modules and kmod; it has no network card. This script makes three hosts
out of network namespaces on one bridge, as the Docker lab does with containers:

- ``server``: the image's entrypoint and command with the image's
  environment and the check's settings, the sysctls compose.yaml sets, an empty ``/data``;
- ``target``: the lab's target service, which reports who reached it;
- ``client``: strongSwan's charon from the same image, in its own mount
  namespace (its own /etc/swanctl, /etc/strongswan.conf, /etc/resolv.conf and /run), driven
  by the lab's probe: connect with a name and password, then TCP and ICMP to the target.

Everything it learns goes to the console as lines ``IKEV2-VPN-ARM <kind> <json>``, then
it powers the machine off. ``client`` as the first argument runs the client's part (in
the client's namespaces).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

MARK = "IKEV2-VPN-ARM"
LAB = Path("/lab")
CONFIG = LAB / "config.json"  # the host's settings: addresses, the server's command and env
TARGET_PORT = 8080
SERVER_SYSCTLS = {  # what compose.yaml sets
    "net/ipv4/ip_forward": "1",
    "net/ipv4/conf/all/accept_redirects": "0",
    "net/ipv4/conf/all/send_redirects": "0",
}
MODULES = ("bridge", "veth")
DATA_CHUNK = 3000  # base64 characters per console line
LOGS = Path("/var/log/lab")  # on the guest's root file system, which is in its memory


def say(kind: str, payload: object) -> None:
    print(f"{MARK} {kind} {json.dumps(payload, separators=(',', ':'))}", flush=True)


def run(
    argv: list[str], *, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=timeout, **kwargs
    )


def must(argv: list[str], **kwargs: Any) -> str:
    done = run(argv, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


def in_ns(name: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


# --- the machine ----------------------------------------------------------------------------


def mount_basics() -> None:
    for fstype, target in (
        ("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev"),
        ("tmpfs", "/run"), ("tmpfs", "/tmp"),  # noqa: S108 - the guest's own, empty
    ):  # fmt: skip
        os.makedirs(target, exist_ok=True)
        must(["mount", "-t", fstype, fstype, target])
    os.makedirs("/dev/pts", exist_ok=True)
    must(["mount", "-t", "devpts", "devpts", "/dev/pts"])


def make_hosts(config: dict[str, Any]) -> None:
    bridge, prefix = config["bridge"], config["prefix"]
    must(["modprobe", "-a", *MODULES])
    must(["ip", "link", "add", "br0", "type", "bridge"])
    must(["ip", "address", "add", f"{bridge}/{prefix}", "dev", "br0"])
    must(["ip", "link", "set", "br0", "up"])
    for name, address in config["hosts"].items():
        must(["ip", "netns", "add", name])
        must(["ip", "link", "add", f"h-{name}", "type", "veth", "peer", "name", "eth0",
              "netns", name])  # fmt: skip
        must(["ip", "link", "set", f"h-{name}", "master", "br0", "up"])
        must(["ip", "-n", name, "address", "add", f"{address}/{prefix}", "dev", "eth0"])
        must(["ip", "-n", name, "link", "set", "eth0", "up"])
        must(["ip", "-n", name, "link", "set", "lo", "up"])
        must(["ip", "-n", name, "route", "add", "default", "via", bridge])


def power_off() -> None:
    os.sync()
    with open("/proc/sysrq-trigger", "w", encoding="ascii") as trigger:
        trigger.write("o")
    time.sleep(60)


# --- the server -----------------------------------------------------------------------------


def start_server(config: dict[str, Any]) -> tuple[subprocess.Popen[bytes], float]:
    for key, value in SERVER_SYSCTLS.items():
        must(in_ns("server", ["sh", "-c", f"echo {value} > /proc/sys/{key}"]))
    os.makedirs("/data", exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log = (LOGS / "server.log").open("wb")
    started = time.monotonic()
    server = subprocess.Popen(
        in_ns("server", [*config["entrypoint"], *config["cmd"]]),
        env=config["env"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    return server, started


def wait_healthy(
    config: dict[str, Any], server: subprocess.Popen[bytes], started: float
) -> float | None:
    deadline = started + float(config["health_timeout_s"])
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return None
        try:
            checked = run(in_ns("server", config["healthcheck"]), env=config["env"], timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if checked.returncode == 0:
            return time.monotonic() - started
        time.sleep(1)
    return None


def server_log_tail(lines: int = 40) -> list[str]:
    try:
        text = (LOGS / "server.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def profile_hashes() -> dict[str, str]:
    root = Path("/data/clients")
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def send_data() -> None:
    """/data as a tar archive, in base64 lines, for the host to compare against amd64."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add("/data", arcname="data")
    text = base64.b64encode(buffer.getvalue()).decode("ascii")
    chunks = [text[i : i + DATA_CHUNK] for i in range(0, len(text), DATA_CHUNK)]
    for index, chunk in enumerate(chunks):
        say("data", {"part": index, "of": len(chunks), "b64": chunk})


def xfrm_states(name: str) -> int:
    listed = run(["ip", "-n", name, "xfrm", "state"])
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("src "))


# --- the client (its own mount namespace: ``init.py client``) -------------------------------


def client_part() -> int:
    config = json.loads(CONFIG.read_text(encoding="utf-8"))
    for target in ("/run", "/etc/swanctl"):
        must(["mount", "-t", "tmpfs", "tmpfs", target])
    for directory in ("conf.d", "x509ca", "x509", "private", "rsa", "ecdsa", "pkcs12"):
        os.makedirs(f"/etc/swanctl/{directory}", exist_ok=True)
    client = LAB / "client"
    for name, target in (("strongswan.conf", "/etc/strongswan.conf"),
                         ("resolv.conf", "/etc/resolv.conf")):  # fmt: skip
        must(["mount", "--bind", str(client / name), target])
    Path("/etc/swanctl/swanctl.conf").write_bytes((client / "swanctl.conf").read_bytes())
    secret = Path("/etc/swanctl/conf.d/secret.conf")
    secret.write_bytes((client / "secret.conf").read_bytes())
    secret.chmod(0o600)
    Path("/etc/swanctl/x509ca/server-ca.pem").write_bytes(Path("/data/ca.crt").read_bytes())
    log = (LOGS / "charon-client.log").open("wb")
    subprocess.Popen(
        ["/usr/lib/ipsec/charon"], stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while run(["swanctl", "--stats"]).returncode != 0:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "the client's charon did not answer in 120 s"}))
            return 1
        time.sleep(1)
    probe = ["python3", str(LAB / "probe.py")]
    connected = json.loads(must([*probe, "connect", "--timeout", "120"], timeout=300))
    answer: dict[str, Any] = {"connect": connected}
    if connected.get("connected"):
        traffic = must(
            [*probe, "traffic", "--target", config["hosts"]["target"], "--port", str(TARGET_PORT),
             "--count", "3", "--timeout", "10"],
            timeout=120,
        )  # fmt: skip
        answer["traffic"] = json.loads(traffic)
    print(json.dumps(answer))
    return 0


# --- the whole check ------------------------------------------------------------------------


def check(config: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": os.uname().machine, "kernel": os.uname().release}
    make_hosts(config)
    subprocess.Popen(
        in_ns("target", ["python3", str(LAB / "target_service.py"), "--port", str(TARGET_PORT)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    server, started = start_server(config)
    ready = wait_healthy(config, server, started)
    if ready is None:
        result["error"] = (
            f"the server exited with status {server.returncode}"
            if server.returncode is not None
            else f"the server was not healthy after {config['health_timeout_s']} s"
        )
        result["server_log"] = server_log_tail()
        return result
    result["startup_s"] = round(ready, 1)
    result["profiles"] = profile_hashes()
    started_client = time.monotonic()
    done = run(
        in_ns("client", ["unshare", "--mount", "--propagation", "private",
                         "python3", "/init", "client"]),
        timeout=600,
    )  # fmt: skip
    result["client_s"] = round(time.monotonic() - started_client, 1)
    try:
        result["client"] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        result["client"] = {"error": (done.stderr or done.stdout).strip()[-500:]}
    result["xfrm_states"] = {"server": xfrm_states("server"), "client": xfrm_states("client")}
    result["tun_devices"] = [
        line.split(":")[1].strip()
        for line in run(
            ["ip", "-n", "server", "-o", "link", "show", "type", "tun"]
        ).stdout.splitlines()
        if ":" in line
    ]
    result["server_log"] = server_log_tail(60)
    result["server_running"] = server.poll() is None
    send_data()
    return result


def main() -> int:
    if sys.argv[1:] == ["client"]:
        return client_part()
    os.environ["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    try:
        mount_basics()
        console = os.open("/dev/console", os.O_RDWR)
        for descriptor in (0, 1, 2):
            os.dup2(console, descriptor)
        say("up", {"uptime_s": float(Path("/proc/uptime").read_text().split()[0])})
        config = json.loads(CONFIG.read_text(encoding="utf-8"))
        result = check(config)
    except Exception as error:  # PID 1 reports and powers off, whatever happened
        result = {"error": f"{type(error).__name__}: {error}"}
    say("result", result)
    power_off()
    return 0


if __name__ == "__main__":
    sys.exit(main())
