"""deploy/kubernetes/: valid for the Kubernetes versions it targets, and what the image needs.

Each variant is rendered by kubectl's kustomize (as `kubectl apply -k` would) and every
resource is checked against the JSON schema of the target version, strictly (an unknown or
misplaced field is an error, as with `kubectl apply --validate=strict`). The pod spec is
then compared with the image (Dockerfile) and the server's settings model.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ikev2_vpn import defaults
from ikev2_vpn.settings import known_variables, unknown_variables
from ikev2_vpn_helper import kubernetes as k8s
from ikev2_vpn_helper.errors import HelperError

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
VARIANTS = ("loadbalancer", "hostport")
TARGET = "1.31"  # the oldest version the manifests are written for (README: Kubernetes)
VERSIONS = (TARGET, kubernetes_validate.utils.latest_version())
USERS = b"alice:correct horse battery staple\nbob:pa:ss word\n"
Resource = Mapping[str, Any]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifests as an operator has them: with a users.txt of their own."""
    copy_of = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(MANIFESTS, copy_of)
    (copy_of / "base" / "users.txt").write_bytes(USERS)
    return copy_of


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Resource]]:
    """Each variant; "node-forwarding": an operator's own variant with that component."""
    own = tree / "node-forwarding"
    own.mkdir()
    (own / "kustomization.yaml").write_text(
        "resources: [../loadbalancer]\ncomponents: [../components/node-forwarding]\n"
    )
    return {name: k8s.render(tree / name) for name in ("base", *VARIANTS, "node-forwarding")}


def validate(resource: Resource, version: str) -> None:
    kubernetes_validate.validate(dict(resource), version, strict=True)


def dockerfile_instruction(name: str) -> str:
    """The arguments of a Dockerfile instruction, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s+(.*)$", text, re.MULTILINE)
    assert match, f"the Dockerfile has no {name}"
    return match.group(1)


def pod(resources: list[Resource]) -> Resource:
    spec: Resource = k8s.find(resources, "Deployment")["spec"]["template"]["spec"]
    return spec


# --- schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", ("base", *VARIANTS, "node-forwarding"))
def test_every_rendered_resource_is_valid_for_the_target_version(
    rendered: dict[str, list[Resource]], variant: str, version: str
) -> None:
    kinds = []
    for resource in rendered[variant]:
        validate(resource, version)
        kinds.append(resource["kind"])
    expected = {"Namespace", "ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment"}
    if variant in {"loadbalancer", "node-forwarding"}:
        expected.add("Service")
    assert sorted(kinds) == sorted(expected)


def test_every_manifest_file_is_valid_on_its_own() -> None:
    """Each file a kustomization lists as a resource is a complete object (patches are
    checked as rendered)."""
    checked = []
    for kustomization in MANIFESTS.glob("*/kustomization.yaml"):
        listed = yaml.safe_load(kustomization.read_text())["resources"]
        for name in listed:
            path = kustomization.parent / name
            if path.is_dir():
                continue
            for resource in yaml.safe_load_all(path.read_text()):
                validate(resource, TARGET)
                checked.append(path.name)
    assert sorted(checked) == ["deployment.yaml", "namespace.yaml", "pvc.yaml", "service.yaml"]


@pytest.mark.parametrize(
    ("what", "breakage"),
    [
        ("a misspelt field", lambda pod: pod["containers"][0].update(privilegd=True)),
        (
            "a sysctl in the container's securityContext",
            lambda pod: pod["containers"][0]["securityContext"].update(sysctls=[]),
        ),
        (
            "a port as text",
            lambda pod: pod["containers"][0]["ports"][0].update(containerPort="500"),
        ),
        ("a probe without a handler", lambda pod: pod["containers"][0].update(livenessProbe=[])),
    ],
)
def test_a_broken_manifest_is_rejected(
    rendered: dict[str, list[Resource]], what: str, breakage: Any
) -> None:
    deployment = copy.deepcopy(dict(k8s.find(rendered["loadbalancer"], "Deployment")))
    validate(deployment, TARGET)
    breakage(deployment["spec"]["template"]["spec"])
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, TARGET)


# --- what the image and the server expect ------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_environment_variable_is_a_setting_of_the_server(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    env = k8s.pod_stand_in(rendered[variant]).env
    assert env, "the pod sets no settings"
    assert set(env) <= known_variables()
    assert unknown_variables(env) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_passwords_come_from_secret_files_that_the_file_settings_point_at(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    stand_in = k8s.pod_stand_in(rendered[variant])
    file_settings = {name: path for name, path in stand_in.env.items() if name.endswith("_FILE")}
    assert file_settings == {"VPN_USERS_FILE": "/run/secrets/ikev2-vpn/users"}
    assert set(file_settings.values()) == set(stand_in.files)
    assert stand_in.files["/run/secrets/ikev2-vpn/users"] == USERS
    # Where a *_FILE variant exists, the secret is never an environment value.
    assert not {"VPN_PASSWORD", "VPN_USERS"} & set(stand_in.env)
    volume = next(v for v in pod(rendered[variant])["volumes"] if "secret" in v)
    assert volume["secret"]["defaultMode"] == 0o400


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_run_the_images_health_check(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    healthcheck = dockerfile_instruction("HEALTHCHECK")
    command = yaml.safe_load(healthcheck.split(" CMD ", 1)[1])
    assert command == ["/opt/ikev2-vpn/bin/python3", "-m", "ikev2_vpn.health"]
    probes = k8s.pod_stand_in(rendered[variant]).probes
    assert probes == {
        "startupProbe": command,
        "readinessProbe": command,
        "livenessProbe": [*command, "--alive"],  # a certificate problem is no restart reason
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_ports_are_the_images_exposed_ports(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    exposed = frozenset(dockerfile_instruction("EXPOSE").split())
    assert exposed == {"500/udp", "4500/udp", "80/tcp"}
    assert k8s.pod_stand_in(rendered[variant]).ports == exposed


def test_the_load_balancer_keeps_client_addresses_and_reaches_the_pod(
    rendered: dict[str, list[Resource]],
) -> None:
    service = k8s.find(rendered["loadbalancer"], "Service")
    container = pod(rendered["loadbalancer"])["containers"][0]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    labels = k8s.find(rendered["loadbalancer"], "Deployment")["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= labels["labels"].items()
    named = {port["name"]: port for port in container["ports"]}
    offered = {
        (port["port"], port["protocol"], named[port["targetPort"]]["containerPort"])
        for port in service["spec"]["ports"]
    }
    assert offered == {(500, "UDP", 500), (4500, "UDP", 4500), (80, "TCP", 80)}


def test_the_host_port_variant_differs_only_in_host_ports(
    rendered: dict[str, list[Resource]],
) -> None:
    balanced = copy.deepcopy(dict(k8s.find(rendered["loadbalancer"], "Deployment")))
    on_host = copy.deepcopy(dict(k8s.find(rendered["hostport"], "Deployment")))
    ports = on_host["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {(p["hostPort"], p["protocol"]) for p in ports} == {
        (p["containerPort"], p["protocol"]) for p in ports
    }
    for port in ports:
        del port["hostPort"]
    assert on_host == balanced
    assert "Service" not in {resource["kind"] for resource in rendered["hostport"]}


# --- least privilege and the server's needs ---------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_pod_is_not_privileged_and_holds_only_what_the_server_needs(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    spec = pod(rendered[variant])
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["privileged"] is False
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {
            "drop": ["ALL"],
            "add": ["NET_ADMIN", "NET_BIND_SERVICE"],
        }
    privileges = k8s.pod_stand_in(rendered[variant]).privileges
    assert {**privileges.sysctls} == {
        **defaults.SYSCTLS,
        "net.ipv4.ip_unprivileged_port_start": "1024",  # Kubernetes' (the kernel's) default
    }
    assert privileges.devices == ("/dev/net/tun:/dev/net/tun:rwm",)


def test_the_node_forwarding_component_only_leaves_out_the_sysctls(
    rendered: dict[str, list[Resource]],
) -> None:
    """For kubelets that allow no unsafe sysctls: nothing else about the pod changes."""
    plain = copy.deepcopy(dict(k8s.find(rendered["loadbalancer"], "Deployment")))
    inherited = k8s.find(rendered["node-forwarding"], "Deployment")
    del plain["spec"]["template"]["spec"]["securityContext"]["sysctls"]
    assert inherited == plain
    assert {**k8s.pod_stand_in(rendered["node-forwarding"]).privileges.sysctls} == {
        "net.ipv4.ip_unprivileged_port_start": "1024"
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_pod_at_a_time_with_its_state_on_a_claim(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    deployment = k8s.find(rendered[variant], "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    claim = k8s.find(rendered[variant], "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    volume = next(v for v in pod(rendered[variant])["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert k8s.pod_stand_in(rendered[variant]).data_mount == str(defaults.DATA_DIR)


@pytest.mark.parametrize("variant", VARIANTS)
def test_resources_are_bounded_with_room_above_the_measured_use(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    """The figures: see README.md, "Kubernetes" (measured by the Docker stand-in)."""
    resources = pod(rendered[variant])["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "100m", "memory": "96Mi"}
    assert resources["limits"] == {"memory": "256Mi"}  # no CPU limit: it throttles tunnels
    assert k8s.pod_stand_in(rendered[variant]).memory == {
        "requests": 96 * 1024 * 1024,
        "limits": 256 * 1024 * 1024,
    }


@pytest.mark.parametrize(
    ("quantity", "size"), [("96Mi", 96 << 20), ("1Gi", 1 << 30), ("512Ki", 512 << 10)]
)
def test_memory_quantities_in_binary_units(quantity: str, size: int) -> None:
    assert k8s.memory_bytes(quantity) == size


@pytest.mark.parametrize("quantity", ["100M", "1e3", "Mi", "1.5Gi"])
def test_other_memory_quantities_are_refused(quantity: str) -> None:
    with pytest.raises(HelperError, match="not translated"):
        k8s.memory_bytes(quantity)


@pytest.mark.parametrize("variant", VARIANTS)
def test_everything_lives_in_one_namespace_exempt_from_baseline_enforcement(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    namespace = k8s.find(rendered[variant], "Namespace")
    name = namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for resource in rendered[variant]:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == name, resource["kind"]


def test_users_change_rolls_the_server(tree: Path, tmp_path: Path) -> None:
    """The Secret's name carries a hash of users.txt, so a change restarts the pod with it."""
    before = k8s.find(k8s.render(tree / "loadbalancer"), "Secret")["metadata"]["name"]
    changed = tmp_path / "kubernetes"
    shutil.copytree(tree, changed)
    (changed / "base" / "users.txt").write_bytes(USERS + b"carol:another one\n")
    after_resources = k8s.render(changed / "loadbalancer")
    after = k8s.find(after_resources, "Secret")["metadata"]["name"]
    assert before != after
    volume = next(v for v in pod(after_resources)["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == after


def test_users_txt_is_never_committed() -> None:
    ignored = (MANIFESTS / ".gitignore").read_text().split()
    assert "base/users.txt" in ignored
    assert not (MANIFESTS / "base" / "users.txt").exists()


# --- the Docker stand-in refuses what it cannot translate -------------------------------


def mount_scratch_space(pod: dict[str, Any]) -> None:
    pod["volumes"].append({"name": "scratch", "emptyDir": {}})
    pod["containers"][0]["volumeMounts"].append({"name": "scratch", "mountPath": "/scratch"})


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda pod: pod.update(hostNetwork=True), "hostNetwork"),
        (lambda pod: pod["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (
            lambda pod: pod["containers"][0]["securityContext"].update(readOnlyRootFilesystem=True),
            "readOnlyRootFilesystem",
        ),
        (lambda pod: pod["containers"][0]["volumeMounts"][0].update(subPath="x"), "subPath"),
        (
            lambda pod: pod["containers"][0]["env"].append(
                {"name": "VPN_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
            ),
            "VPN_HOST",
        ),
        (mount_scratch_space, "scratch"),
    ],
)
def test_the_stand_in_refuses_what_it_cannot_translate(
    rendered: dict[str, list[Resource]], change: Any, refusal: str
) -> None:
    resources = copy.deepcopy(rendered["loadbalancer"])
    deployment = k8s.find(resources, "Deployment")
    change(deployment["spec"]["template"]["spec"])
    with pytest.raises(HelperError, match=refusal):
        k8s.pod_stand_in(resources)
