"""Client profiles from a real server: written for every user at start, fetched with the host
helper, and rewritten when the server's address changes (same volume, new settings)."""

from __future__ import annotations

import base64
import plistlib
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from ikev2_vpn.profiles import ca_fingerprint, linux
from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.profiles import fetch_profiles
from ikev2_vpn_helper.server import Server
from ikev2_vpn_lab import readback
from ikev2_vpn_lab.lab import Lab
from ikev2_vpn_lab.profile_replay import mobileconfig_plist, parse_nmconnection, parse_settings

CmsVerify = Callable[[bytes, bytes], subprocess.CompletedProcess[bytes]]  # conftest's

HOST = "vpn.example.test"
NEW_HOST = "moved.vpn.example.test"  # under HOST: the CA, constrained to HOST, signs for it
DNS = "198.51.100.53"
USERS = {"alice": "Alice pw 1", "first.last+x@example.test": 'it\'s "quoted" ünï'}


def profile_names(user: str) -> set[str]:
    return {
        "apple.mobileconfig",
        "android.sswan",
        "android-builtin.txt",
        "windows.ps1",
        "windows-manual.txt",
        f"{user}.swanctl.conf",
        f"{user}.nmconnection",
        "ca.crt",
        "README.txt",
    }


def start(lab: Lab, role: str, volume: str, users: dict[str, str], **env: str) -> Server:
    users_file = "".join(f"{name}:{password}\n" for name, password in users.items())
    return lab.start_server(
        {"VPN_DNS": DNS, **env},
        name=lab.name(role),
        volume=volume,
        secret_files={"VPN_USERS_FILE": users_file.encode()},
    )


def logs(server: Server) -> str:
    return str(server.container.logs().decode(errors="replace"))


def fetch(server: Server, user: str, out: Path) -> dict[str, bytes]:
    files = fetch_profiles(server.container, user, out)
    return {path.name: path.read_bytes() for path in files}


def remote_address(files: dict[str, bytes]) -> dict[str, str]:
    """What each profile dials."""
    apple = plistlib.loads(mobileconfig_plist(files["apple.mobileconfig"]))
    vpn = next(p for p in apple["PayloadContent"] if p["PayloadType"] == "com.apple.vpn.managed")
    script = files["windows.ps1"].decode("utf-8-sig")
    swanctl = next(name for name in files if name.endswith(linux.SWANCTL_SUFFIX))
    conf = parse_settings(files[swanctl].decode())
    connections = conf["connections"]
    assert isinstance(connections, dict)
    (connection,) = connections.values()
    assert isinstance(connection, dict) and isinstance(connection["remote_addrs"], str)
    keyfile = next(name for name in files if name.endswith(linux.NMCONNECTION_SUFFIX))
    return {
        "apple": vpn["IKEv2"]["RemoteAddress"],
        "windows": re.findall(r"-ServerAddress '([^']*)'", script)[0],
        "swanctl": connection["remote_addrs"],
        "nm": parse_nmconnection(files[keyfile]).remote_address or "",
    }


@pytest.fixture(scope="module")
def volume(lab: Lab) -> str:
    return lab.volume(lab.name("profiles-data"))


@pytest.fixture(scope="module")
def first(lab: Lab, volume: str) -> tuple[Server, str]:
    """The first start on a new volume, and its log."""
    server = start(lab, "profiles", volume, USERS, VPN_HOST=HOST)
    return server, logs(server)


def test_every_user_gets_every_profile(first: tuple[Server, str], tmp_path: Path) -> None:
    server, output = first
    assert "client profiles written to /data/clients (2 users)" in output
    assert "client profiles changed for: alice, first.last+x@example.test" in output
    listing = eng.run_checked(
        server.container, ["sh", "-c", "stat -c '%a %n' /data/clients /data/clients/*/*"]
    )
    for line in listing.splitlines():
        permissions, path = line.split(" ", 1)
        expected = "644" if path.endswith("/ca.crt") else "600"
        assert permissions == ("700" if path == "/data/clients" else expected), line

    ca = server.ca_certificate()
    for user, password in USERS.items():
        files = fetch(server, user, tmp_path / user)
        assert set(files) == profile_names(user)
        assert set(remote_address(files).values()) == {HOST}
        assert files["ca.crt"] == ca
        script = files["windows.ps1"].decode("utf-8-sig")
        assert password not in script
        readback.parse_ipsec_configuration(script)  # one machine-readable line
        apple = plistlib.loads(mobileconfig_plist(files["apple.mobileconfig"]))
        vpn = next(p for p in apple["PayloadContent"] if p["PayloadType"].endswith("managed"))
        assert vpn["IKEv2"]["AuthName"] == user
        assert vpn["IKEv2"]["AuthPassword"] == password  # VPN_PROFILE_PASSWORDS=include
        readme = files["README.txt"].decode()
        assert all(name in readme for name in profile_names(user) - {"README.txt"})
    for password in USERS.values():
        assert password not in output


def test_a_new_address_rewrites_them_and_removed_users_lose_theirs(
    lab: Lab, volume: str, first: tuple[Server, str], tmp_path: Path
) -> None:
    """The container is replaced (same volume) with another VPN_HOST, one user fewer and
    passwords left out: the profiles follow, and a restart that changes nothing changes
    no file."""
    first[0].remove()
    alice = {"alice": USERS["alice"]}
    server = start(
        lab, "profiles-moved", volume, alice, VPN_HOST=NEW_HOST, VPN_PROFILE_PASSWORDS="omit"
    )
    output = logs(server)
    assert "client profiles written to /data/clients (1 user)" in output
    assert "client profiles changed for: alice" in output
    assert "profiles removed for users that no longer exist: first.last+x@example.test" in output

    files = fetch(server, "alice", tmp_path / "alice")
    assert set(remote_address(files).values()) == {NEW_HOST}
    for content in files.values():
        assert USERS["alice"].encode() not in content
    with pytest.raises(HelperError, match="it has profiles for: alice"):
        fetch(server, "first.last+x@example.test", tmp_path / "gone")

    before = eng.run_checked(server.container, ["sh", "-c", "ls -li /data/clients/alice"])
    server.restart()
    assert logs(server).count("client profiles changed for") == 1  # only the first start
    assert eng.run_checked(server.container, ["sh", "-c", "ls -li /data/clients/alice"]) == before


SHARE_FETCH = """
import base64, sys, urllib.request, urllib.error
url = sys.argv[1]
with urllib.request.urlopen(url, timeout=5) as reply:
    print(reply.headers.get_content_type())
    print(base64.b64encode(reply.read()).decode())
"""


def test_share_serves_password_free_phone_profiles_by_a_one_time_link(
    lab: Lab, cms_verify: CmsVerify
) -> None:
    """`ikev2-vpn share alice` inside the container: a phone (here: another container on the
    server's network) fetches the profiles from the printed link; nothing else is served."""
    alice = {"alice": USERS["alice"]}
    server = start(lab, "share", lab.name("share-data"), alice, VPN_HOST=HOST)
    address = server.networks()[lab.topology.wan]
    phone = lab.start_client(server)  # any container of the image on that network
    api = server.container.client.api
    run = api.exec_create(
        server.container.id, ["ikev2-vpn", "share", "alice", "--minutes", "1"], tty=False
    )
    output = api.exec_start(run["Id"], stream=True)
    printed = ""
    for chunk in output:
        printed += chunk.decode(errors="replace")
        if (
            len(re.findall(r"http://\S+/(?:apple\.mobileconfig|android\.sswan|ca\.crt)", printed))
            == 3
        ):
            break  # self-signed: both profiles and the CA
    links = {name: path for path, name in re.findall(r"http://[^/\s]+(/[\w-]+/([\w.]+))", printed)}
    assert {"apple.mobileconfig", "android.sswan", "ca.crt"} <= set(links), printed
    assert f"http://{HOST}/" in printed  # the links use the name phones dial

    def get(path: str) -> tuple[str, bytes]:
        url = f"http://{address}{path}"
        result = eng.run_in(phone.container, ["python3", "-c", SHARE_FETCH, url])
        assert result.exit_code == 0, result.stderr
        kind, _, body = result.stdout.partition("\n")
        return kind, base64.b64decode(body)

    kind, body = get(links["apple.mobileconfig"])
    assert kind == "application/x-apple-aspen-config"
    # Signed by the server certificate: verified against the server's own CA, which the
    # printed fingerprint lets a person check; a changed byte breaks the signature.
    ca_pem = server.ca_certificate()
    assert ca_fingerprint(x509.load_pem_x509_certificate(ca_pem)) in printed
    verified = cms_verify(body, ca_pem)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == mobileconfig_plist(body)
    assert cms_verify(body.replace(HOST.encode(), b"x" + HOST.encode()[1:], 1), ca_pem).returncode
    payloads = plistlib.loads(verified.stdout)["PayloadContent"]
    vpn = next(p for p in payloads if p["PayloadType"].endswith("managed"))
    assert vpn["IKEv2"]["RemoteAddress"] == HOST
    assert "AuthPassword" not in vpn["IKEv2"]  # plain HTTP: the device asks for it
    assert USERS["alice"].encode() not in get(links["android.sswan"])[1]
    refused = eng.run_in(
        phone.container, ["python3", "-c", SHARE_FETCH, f"http://{address}/apple.mobileconfig"]
    )
    assert refused.exit_code != 0 and "404" in refused.stderr
