"""A real strongSwan client connects through the real server container.

Each test is something a user would notice: they can connect and browse, a wrong password
is refused, any password works, a restart changes nothing for their devices, a bad setting
stops the server with one clear line.
"""

from __future__ import annotations

import ipaddress
import re
import time
from pathlib import Path

import docker
import pytest

from ikev2_vpn.state import pki
from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.server import Server
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"  # a DNS name: the IKE identity and the certificate's SAN
DNS = "198.51.100.53"  # documentation address: pushed to clients, never queried
POOL = ipaddress.IPv4Network("10.10.10.0/24")
# A stock Windows connection made in the GUI (docs/clients.md): only MODP-1024 for IKE,
# SHA-1 for ESP, no PFS. (tests/e2e/test_compat.py replays the full lists, DES and NULL too.)
WINDOWS_IKE = "3des-aes128-aes192-aes256-sha1-sha256-sha384-modp1024"
WINDOWS_ESP = "aes256-aes128-3des-sha1"


def start(
    lab: Lab,
    role: str,
    env: dict[str, str] | None = None,
    *,
    volume: str | None = None,
    secret_files: dict[str, bytes] | None = None,
    files: dict[str, bytes] | None = None,
    wait: bool = True,
    restart: str | None = "unless-stopped",
) -> Server:
    """A server named after its role in the test, with its own state volume by default."""
    return lab.start_server(
        {"VPN_HOST": HOST, "VPN_DNS": DNS, **(env or {})},
        name=lab.name(role),
        volume=volume or lab.name(f"{role}-data"),
        secret_files=secret_files,
        files=files,
        wait=wait,
        restart=restart,
    )


def logs(container: docker.models.containers.Container) -> str:
    return str(container.logs(stdout=True, stderr=True).decode(errors="replace"))


@pytest.fixture(scope="module")
def alice(lab: Lab) -> Server:
    """A server with one account, the password passed as a secret file."""
    return start(
        lab, "alice", {"VPN_USER": "alice"}, secret_files={"VPN_PASSWORD_FILE": b"correct horse\n"}
    )


def test_client_connects_and_reaches_the_target_through_nat(lab: Lab, alice: Server) -> None:
    report = lab.check(alice, "alice", "correct horse")
    assert report.ok, [f for f in report.findings if not f.ok]
    assert report.connection.virtual_ip is not None
    assert ipaddress.ip_address(report.connection.virtual_ip) in POOL
    assert report.connection.dns == [DNS]
    assert report.traffic is not None
    # The target saw the server's address: the client's traffic went through the tunnel
    # and was masqueraded out of the egress interface.
    assert report.traffic.tcp_source == report.egress_address
    assert report.traffic.icmp_received == report.traffic.icmp_sent > 0


def test_wrong_password_is_refused_and_logged_without_the_password(lab: Lab, alice: Server) -> None:
    client = lab.start_client(alice)
    result = client.connect("alice", "incorrect horse", timeout_s=15)
    assert not result.connected
    assert result.virtual_ip is None
    server_log = logs(alice.container)
    assert "EAP_MSCHAPV2" in server_log and "alice" in server_log
    assert "incorrect horse" not in server_log
    assert "correct horse" not in server_log


def test_several_devices_share_one_account(lab: Lab, alice: Server) -> None:
    phone, laptop = lab.start_client(alice), lab.start_client(alice)
    first = phone.connect("alice", "correct horse")
    second = laptop.connect("alice", "correct horse")
    assert first.connected and second.connected
    assert first.virtual_ip != second.virtual_ip
    target = lab.target(alice)
    for device in (phone, laptop):  # both tunnels carry traffic at the same time
        traffic = device.send_traffic(target)
        assert traffic.tcp_source == alice.egress().address
    phone.disconnect()
    laptop.disconnect()


def test_a_client_offering_strongswan_defaults_connects(lab: Lab, alice: Server) -> None:
    """The Linux and Android-app case: the client's own default proposals."""
    result = lab.start_client(alice).connect("alice", "correct horse")
    assert result.connected, result.error


def test_plain_password_hashed_by_strongswan_matches(lab: Lab, alice: Server) -> None:
    """The server stores NT hashes; a client that hashes the typed password itself (as
    strongSwan does for ASCII) must get in too."""
    result = lab.start_client(alice).connect("alice", "correct horse", plain_secret=True)
    assert result.connected, result.error


SPECIAL_USERS = {
    "quote.user": 'it\'s "quoted" {braced} #hash ;semi \\back\\slash',
    "space@example.test": "  leading and trailing spaces  ",
    "uni+code": "pässwörd-ünïcødé-日本語-🔐",
    "colons": "a:b:c=d,e}{",
    "x": "0xdeadbeef",  # looks like swanctl's hex syntax: must stay a literal password
}


def test_passwords_with_any_characters_work(lab: Lab) -> None:
    users_file = "".join(f"{name}:{password}\n" for name, password in SPECIAL_USERS.items())
    server = start(lab, "special", {}, secret_files={"VPN_USERS_FILE": users_file.encode("utf-8")})
    for name, password in SPECIAL_USERS.items():
        result = lab.start_client(server).connect(name, password)
        assert result.connected, f"{name}: {result.error}"
        assert result.virtual_ip is not None and ipaddress.ip_address(result.virtual_ip) in POOL
    # One character off is refused: the passwords really are compared.
    refused = lab.start_client(server).connect("x", "0xdeadbeeF", timeout_s=15)
    assert not refused.connected
    server_log = logs(server.container)
    inspect = str(server.container.attrs)
    for password in SPECIAL_USERS.values():
        assert password not in server_log
        assert password not in inspect


def test_restart_and_recreate_keep_ca_users_and_clients(lab: Lab) -> None:
    """No user configured: one is generated and shown once. Restarting the container, or
    replacing it (an image upgrade) with the same volume, changes nothing for clients."""
    volume = lab.name("keep-data")
    server = start(lab, "keep", {}, volume=volume)
    first_log = logs(server.container)
    found = re.search(r"created user 'vpnuser' with password (\S+)", first_log)
    assert found, first_log
    password = found.group(1)
    ca = server.ca_certificate()
    client = lab.start_client(server)  # imports the CA once, like a phone would
    assert client.connect("vpnuser", password).connected
    client.disconnect()

    server.restart()
    assert server.ca_certificate() == ca
    assert logs(server.container).count(password) == 1  # printed once, at first start
    again = client.connect("vpnuser", password)
    assert again.connected, again.error
    client.disconnect()

    server.remove()
    replacement = start(lab, "keep-new", {}, volume=volume)
    assert replacement.ca_certificate() == ca
    assert password not in logs(replacement.container)
    moved = lab.start_client(replacement, ca_pem=ca).connect("vpnuser", password)
    assert moved.connected, moved.error


def test_unset_host_falls_back_to_the_container_address(lab: Lab) -> None:
    """VPN_HOST unset and detection off: the server says which address it chose and why,
    and a client dialling that address (the IP as identity and SAN) gets in."""
    server = lab.start_server(
        {"VPN_HOST_DETECT": "off", "VPN_DNS": DNS, "VPN_USERS": "ip:Ip-pw"},
        name=lab.name("iphost"),
        volume=lab.name("iphost-data"),
    )
    egress = server.egress()
    output = logs(server.container)
    assert (
        f"server identity: {egress.address} (VPN_HOST unset and VPN_HOST_DETECT=off; using "
        f"the container's address on {egress.interface}"
    ) in output
    assert server.identity() == egress.address
    result = lab.start_client(server).connect("ip", "Ip-pw")
    assert result.connected, result.error


INVALID = {
    "pool host bits": (
        {"VPN_POOL_V4": "10.10.10.1/24"},
        "VPN_POOL_V4: '10.10.10.1/24' has host bits set; use 10.10.10.0/24",
    ),
    "user name": ({"VPN_USERS": "bad/name:Secret-1"}, "VPN_USERS: user name 'bad/name'"),
    "user without password": (
        {"VPN_USER": "alice"},
        "VPN_PASSWORD: VPN_USER is set without a password",
    ),
    "entry without password": (
        {"VPN_USERS": "carol:Secret-2 dave"},
        "VPN_USERS: entry 2 has no colon",
    ),
    "proposals": (
        {"VPN_PROPOSALS": "fast"},
        "VPN_PROPOSALS: 'fast' is not a known value; use one of: compatible, modern",
    ),
    "dns": ({"VPN_DNS": "dns.example.test"}, "VPN_DNS: 'dns.example.test' is not an IP address"),
    "host": (
        {"VPN_HOST": "https://vpn.example.test"},
        "VPN_HOST: 'https://vpn.example.test' is neither an IP address nor a DNS name",
    ),
    "missing certificate files": ({"VPN_CERT": "files"}, "VPN_CERT_PATH: /certs/fullchain.pem"),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_settings_stop_the_server_with_one_line(lab: Lab, case: str) -> None:
    env, expected = INVALID[case]
    server = start(lab, "bad-" + case.replace(" ", "-"), env, wait=False, restart=None)
    assert server.wait_exit() == 2
    output = logs(server.container)
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1, output
    assert expected in errors[0]
    assert "charon started" not in output
    for secret in ("Secret-1", "Secret-2"):
        assert secret not in output


def test_bad_settings_leave_existing_state_untouched(lab: Lab) -> None:
    volume = lab.name("state-data")

    def state_of_good_server(role: str) -> str:
        server = start(
            lab,
            role,
            {"VPN_USER": "erin"},
            secret_files={"VPN_PASSWORD_FILE": b"Erin-pw-1"},
            volume=volume,
        )
        digest = eng.run_checked(
            server.container, ["sh", "-c", "cd /data && sha256sum ca.crt pki/*"]
        )
        server.remove()
        return digest

    before = state_of_good_server("state")
    bad = start(
        lab, "state-bad", {"VPN_POOL_V4": "300.1.1.0/24"}, volume=volume, wait=False, restart=None
    )
    assert bad.wait_exit() == 2
    bad.remove()
    assert state_of_good_server("state-good") == before


def test_ipsec_backend_follows_the_kernel(lab: Lab, alice: Server) -> None:
    """auto picks kernel IPsec when the kernel has ESP, userspace otherwise; asking for
    kernel IPsec where the kernel cannot do it is refused before charon starts."""
    chosen = re.search(r"IPsec backend: (\w+) \((.*)\)", logs(alice.container))
    assert chosen, logs(alice.container)
    backend, reason = chosen.groups()
    kernel = start(
        lab,
        "kernel",
        {"VPN_IPSEC_BACKEND": "kernel", "VPN_USERS": "k:Kernel-pw"},
        wait=False,
        restart=None,
    )
    if backend == "userspace":
        assert "cannot carry ESP" in reason
        assert kernel.wait_exit() == 2
        assert "VPN_IPSEC_BACKEND: kernel was requested but this kernel cannot carry ESP" in logs(
            kernel.container
        )
    else:
        kernel.wait_healthy()
        assert lab.start_client(kernel).connect("k", "Kernel-pw").connected
    userspace = start(
        lab, "userspace", {"VPN_IPSEC_BACKEND": "userspace", "VPN_USERS": "u:User-pw"}
    )
    assert "IPsec backend: userspace (requested" in logs(userspace.container)
    assert lab.start_client(userspace).connect("u", "User-pw").connected


def test_proposal_sets(lab: Lab, alice: Server) -> None:
    """compatible (the default) lets a stock Windows connection in; modern refuses it with
    a log line saying why, and still accepts strong clients."""
    windows = lab.start_client(alice).connect(
        "alice", "correct horse", ike_proposals=WINDOWS_IKE, esp_proposals=WINDOWS_ESP
    )
    assert windows.connected, windows.error

    modern = start(lab, "modern", {"VPN_PROPOSALS": "modern", "VPN_USERS": "m:Modern-pw"})
    refused = lab.start_client(modern).connect(
        "m", "Modern-pw", ike_proposals=WINDOWS_IKE, esp_proposals=WINDOWS_ESP, timeout_s=15
    )
    assert not refused.connected
    assert "received proposals unacceptable" in logs(modern.container)
    assert lab.start_client(modern).connect("m", "Modern-pw").connected


def test_operator_certificate_files(lab: Lab, tmp_path: Path) -> None:
    """VPN_CERT=files: the operator's key and chain are checked, then used."""
    made = pki.ensure_self_signed(tmp_path, HOST)  # stands in for any CA's certificate
    ca_pem = (tmp_path / "ca.crt").read_bytes()
    files = {
        "/certs/fullchain.pem": (tmp_path / "pki" / "server.crt").read_bytes() + ca_pem,
        "/certs/privkey.pem": (tmp_path / "pki" / "server.key").read_bytes(),
    }
    server = start(lab, "files", {"VPN_CERT": "files", "VPN_USERS": "f:Files-pw"}, files=files)
    assert made.ca is not None
    result = lab.start_client(server, ca_pem=ca_pem).connect("f", "Files-pw")
    assert result.connected, result.error

    # The same files for another name: refused at start, naming the setting and the name.
    other = start(
        lab,
        "files-bad",
        {"VPN_HOST": "other.example.test", "VPN_CERT": "files", "VPN_USERS": "f:Files-pw"},
        files=files,
        wait=False,
        restart=None,
    )
    assert other.wait_exit() == 2
    assert re.search(r"VPN_CERT_PATH: .*other\.example\.test", logs(other.container))


def test_rendered_swanctl_conf_is_what_charon_runs(lab: Lab, alice: Server) -> None:
    """Loading the written swanctl.conf with swanctl gives charon the same connection as the
    entrypoint loaded over VICI, so what an operator reads is what runs."""
    loaded = eng.run_checked(alice.container, ["swanctl", "--list-conns", "--raw"])
    pools = eng.run_checked(alice.container, ["swanctl", "--list-pools", "--raw"])
    eng.run_checked(alice.container, ["swanctl", "--load-all", "--noprompt"])
    assert eng.run_checked(alice.container, ["swanctl", "--list-conns", "--raw"]) == loaded
    assert eng.run_checked(alice.container, ["swanctl", "--list-pools", "--raw"]) == pools
    assert lab.start_client(alice).connect("alice", "correct horse").connected


def test_stop_crash_and_orphans(lab: Lab) -> None:
    """docker stop is quick and clean; if charon dies the container exits non-zero (so the
    orchestrator restarts it); orphaned processes are reaped."""
    server = start(lab, "proc", {"VPN_USERS": "p:Proc-pw"}, restart=None)
    eng.run_checked(server.container, ["sh", "-c", "sleep 0.2 & exit 0"])
    time.sleep(1)
    states = eng.run_checked(server.container, ["sh", "-c", "cat /proc/[0-9]*/stat"])
    assert not [line for line in states.splitlines() if line.split(") ")[-1].startswith("Z")]

    started = time.monotonic()
    server.container.stop(timeout=10)
    assert time.monotonic() - started < 5
    assert server.wait_exit() == 0

    server.container.start()
    server.wait_healthy()
    eng.run_checked(server.container, ["sh", "-c", "kill -9 $(cat /var/run/charon.pid)"])
    assert server.wait_exit(timeout_s=10) != 0
    assert "charon exited unexpectedly" in logs(server.container)


MISSING = {
    "NET_ADMIN": ("cap_add", "add --cap-add NET_ADMIN"),
    "TUN device": ("devices", "add --device /dev/net/tun"),
}


@pytest.mark.parametrize("missing", MISSING, ids=list(MISSING))
def test_missing_privileges_are_named(lab: Lab, image: str, missing: str) -> None:
    """Started without what it needs, the server says which flag to add (userspace IPsec is
    forced so the TUN device is needed on every kernel)."""
    option, hint = MISSING[missing]
    options: dict[str, object] = {
        "cap_add": ["NET_ADMIN"],
        "devices": ["/dev/net/tun:/dev/net/tun:rwm"],
        "sysctls": {"net.ipv4.ip_forward": "1"},
    }
    del options[option]
    container = lab.engine.containers.run(
        image,
        name=lab.name("missing-" + missing.replace(" ", "-").lower()),
        environment={
            "VPN_HOST": HOST,
            "VPN_USERS": "a:Missing-pw",
            "VPN_IPSEC_BACKEND": "userspace",
        },
        tmpfs={"/data": ""},
        labels=eng.labels(lab.run_id, "server"),
        detach=True,
        **options,
    )
    assert container.wait(timeout=30)["StatusCode"] == 2
    output = logs(container)
    assert hint in output
    assert "charon started" not in output
