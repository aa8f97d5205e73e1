"""The Kubernetes pod spec is what the image needs: a Docker stand-in for the pod.

No cluster runs here. The loadbalancer variant of deploy/kubernetes/ is rendered with
kubectl's kustomize, as an operator would apply it, and its pod becomes one container with
exactly its capabilities (drop ALL, then the manifest's), sysctls (plus the kernel's
ip_unprivileged_port_start of 1024, which Kubernetes keeps and Docker lowers), TUN device,
environment, Secret files and data volume. A client then connects through it. Memory use is
printed (run with ``-s``) and compared with the manifest's request and limit. With
components/radius, a user who exists only in a real FreeRADIUS logs in through it.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from ikev2_vpn.defaults import SYSCTLS
from ikev2_vpn_helper.server import Server
from ikev2_vpn_lab import kubernetes as k8s
from ikev2_vpn_lab.lab import Lab
from ikev2_vpn_lab.radius import Login

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pod spec: pw #1"
USERS = f"alice:{PASSWORD}\nbob:other:pw\n"
# What an operator puts in settings.env (test addresses: nothing leaves this machine).
SETTINGS = "VPN_HOST=vpn.example.test\nVPN_DNS=203.0.113.53\nVPN_PROPOSALS=compatible\n"
RADIUS_SECRET = "pod spec: radius #1"
CAROL_PW = "Carol-in-radius-1"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/kubernetes/ as an operator has it: settings and users of their own."""
    tree = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(ROOT / "deploy" / "kubernetes", tree)
    (tree / "base" / "users.txt").write_text(USERS)
    (tree / "base" / "settings.env").write_text(SETTINGS)
    return tree


@pytest.fixture(scope="module")
def stand_in(tree: Path) -> k8s.PodStandIn:
    return k8s.pod_stand_in(k8s.render(tree / "loadbalancer"))


@pytest.fixture(scope="module")
def pod(lab: Lab, stand_in: k8s.PodStandIn) -> Iterator[Server]:
    assert stand_in.data_mount == "/data"  # where the lab mounts the state volume
    server = lab.start_server(
        dict(stand_in.env),
        files=dict(stand_in.files),
        privileges=stand_in.privileges,
        restart=None,  # the kubelet restarts pods, not the engine
    )
    yield server


def listening_udp_ports(server: Server) -> set[int]:
    tables = server.container.exec_run(["cat", "/proc/net/udp", "/proc/net/udp6"]).output
    ports = set()
    for line in tables.decode().splitlines():
        fields = line.split()
        if len(fields) > 1 and ":" in fields[1] and fields[0] != "sl":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_image_matches_the_pod_spec(
    engine: docker.DockerClient, image: str, stand_in: k8s.PodStandIn
) -> None:
    config = engine.images.get(image).attrs["Config"]
    health = config["Healthcheck"]["Test"]
    assert health[0] == "CMD"
    assert {kind: list(command) for kind, command in stand_in.probes.items()} == {
        "startupProbe": health[1:],
        "readinessProbe": health[1:],
        "livenessProbe": [*health[1:], "--alive"],
    }
    assert set(config["ExposedPorts"]) == stand_in.ports
    assert "/data" in config["Volumes"]


def test_a_client_connects_through_the_pod_as_declared(
    lab: Lab, pod: Server, stand_in: k8s.PodStandIn
) -> None:
    host = pod.container.attrs["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert host["CapAdd"] == ["NET_ADMIN", "NET_BIND_SERVICE"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Sysctls"] == stand_in.privileges.sysctls
    assert [d["PathOnHost"] for d in host["Devices"]] == ["/dev/net/tun"]
    assert "VPN_USERS_FILE=/run/secrets/ikev2-vpn/users" in pod.container.attrs["Config"]["Env"]
    assert PASSWORD not in str(pod.container.attrs)

    assert {500, 4500} <= listening_udp_ports(pod)
    for kind, command in stand_in.probes.items():  # what the kubelet would run
        result = pod.container.exec_run(list(command))
        assert result.exit_code == 0, (kind, result.output)
    report = lab.check(pod, "alice", PASSWORD)
    assert report.ok, [finding for finding in report.findings if not finding.ok]
    assert report.connection.dns == ["203.0.113.53"]
    assert report.server_id == "vpn.example.test"


def test_memory_stays_within_the_request(pod: Server, stand_in: k8s.PodStandIn) -> None:
    """The working set (what the kubelet compares with requests and limits: usage without
    inactive file pages) after a client connected, against deployment.yaml's figures."""
    stats: dict[str, Any] = pod.container.stats(stream=False)
    memory = stats["memory_stats"]
    inactive = memory["stats"].get("total_inactive_file", memory["stats"].get("inactive_file", 0))
    working_set = memory["usage"] - inactive
    charon = pod.container.exec_run(["sh", "-c", "grep VmRSS /proc/$(pidof charon)/status"])
    print(f"pod working set {working_set / MiB:.1f} MiB; charon {charon.output.decode().strip()}")
    assert working_set < stand_in.memory["requests"]
    assert working_set < stand_in.memory["limits"] / 2  # at least as much again to spare


def test_without_net_bind_service_the_pod_never_gets_ready(
    lab: Lab, stand_in: k8s.PodStandIn
) -> None:
    """Why the manifest adds NET_BIND_SERVICE: under Kubernetes' port rules charon cannot
    bind ports 500 and 4500 without it (under Docker's it can, which hides the need). charon
    still loads its configuration; the health check, and so every probe, says what is wrong."""
    privileges = dataclasses.replace(
        stand_in.privileges,
        cap_add=tuple(c for c in stand_in.privileges.cap_add if c != "NET_BIND_SERVICE"),
    )
    server = lab.start_server(
        dict(stand_in.env),
        name=lab.name("no-bind"),
        volume=lab.name("no-bind-data"),
        files=dict(stand_in.files),
        privileges=privileges,
        restart=None,
        wait=False,
    )
    try:
        deadline = time.monotonic() + 60
        answer = ""
        while "charon does not listen" not in answer and time.monotonic() < deadline:
            time.sleep(1)
            probe = server.container.exec_run(list(stand_in.probes["startupProbe"]))
            assert probe.exit_code != 0, probe.output
            answer = probe.output.decode()
        assert "unhealthy: charon does not listen on UDP 500 and 4500" in answer
        assert server.container.exec_run(list(stand_in.probes["livenessProbe"])).exit_code == 1
        assert not {500, 4500} & listening_udp_ports(server)
    finally:
        server.remove()


def test_without_pod_sysctls_the_pod_forwards_as_its_node_does(lab: Lab, tree: Path) -> None:
    """The node-forwarding component, for kubelets that allow no unsafe sysctls: the pod's
    namespace inherits forwarding from the host (this Docker host forwards, as every node
    that routes pod traffic does); the redirect sysctls it cannot set are warnings."""
    own = tree / "node-forwarding"
    own.mkdir()
    (own / "kustomization.yaml").write_text(
        "resources: [../loadbalancer]\ncomponents: [../components/node-forwarding]\n"
    )
    stand_in = k8s.pod_stand_in(k8s.render(own))
    assert set(stand_in.privileges.sysctls) == {"net.ipv4.ip_unprivileged_port_start"}
    server = lab.start_server(
        dict(stand_in.env),
        name=lab.name("node-forwarding"),
        volume=lab.name("node-forwarding-data"),
        files=dict(stand_in.files),
        privileges=stand_in.privileges,
        restart=None,
    )
    try:
        inherited = {
            name: server.container.exec_run(["cat", f"/proc/sys/{name.replace('.', '/')}"])
            .output.decode()
            .strip()
            for name in SYSCTLS
        }
        assert inherited["net.ipv4.ip_forward"] == "1"
        warned = set(re.findall(r"(net\.ipv4\.conf\.all\.\w+) is not 0", server.logs(200)))
        assert warned == {name for name, value in inherited.items() if value != SYSCTLS[name]}
        report = lab.check(server, "bob", "other:pw")
        assert report.ok, [finding for finding in report.findings if not finding.ok]
    finally:
        server.remove()


def test_a_radius_user_connects_through_the_radius_component(
    lab: Lab, radius_image: str, tree: Path, tmp_path: Path
) -> None:
    """components/radius as docs/kubernetes.md describes it: VPN_RADIUS_SERVERS in settings.env, an
    empty users.txt, the shared secret in radius-secret. The pod reads the secret from its
    Secret file, has no local users, and a user known only to RADIUS logs in."""
    radius = lab.start_radius(RADIUS_SECRET, {"carol": CAROL_PW}, image=radius_image)
    own = tmp_path / "kubernetes"
    shutil.copytree(tree, own)
    (own / "base" / "users.txt").write_text("")
    (own / "base" / "settings.env").write_text(SETTINGS + f"VPN_RADIUS_SERVERS={radius.alias}\n")
    (own / "components" / "radius" / "radius-secret").write_text(RADIUS_SECRET + "\n")
    (own / "radius").mkdir()
    (own / "radius" / "kustomization.yaml").write_text(
        "resources: [../loadbalancer]\ncomponents: [../components/radius]\n"
    )
    stand_in = k8s.pod_stand_in(k8s.render(own / "radius"))
    assert "VPN_USERS_FILE" not in stand_in.env
    server = lab.start_server(
        dict(stand_in.env),
        name=lab.name("radius"),
        volume=lab.name("radius-data"),
        files=dict(stand_in.files),
        privileges=stand_in.privileges,
        restart=None,
    )
    try:
        assert RADIUS_SECRET not in str(server.container.attrs)
        report = lab.check(server, "carol", CAROL_PW)
        assert report.ok, [finding for finding in report.findings if not finding.ok]
        assert radius.logins() == [Login("carol", ok=True)]
        assert RADIUS_SECRET not in server.container.logs().decode(errors="replace")
    finally:
        server.remove()
