"""deploy/kubernetes/: valid for the Kubernetes versions it targets, and what the image needs.

Each variant is rendered by kubectl's kustomize (as `kubectl apply -k` would) and every
resource is checked against the JSON schema of the target version, strictly (an unknown or
misplaced field is an error, as with `kubectl apply --validate=strict`). The pod spec is
then compared with the image (Dockerfile) and the server's settings model.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ikev2_vpn import defaults
from ikev2_vpn.errors import ConfigErrors
from ikev2_vpn.settings import Settings, known_variables, load_settings, unknown_variables
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_lab import kubernetes as k8s

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
VARIANTS = ("loadbalancer", "hostport")
# An operator's own variants: loadbalancer/ with one component each (see `rendered`).
COMPONENTS = ("node-forwarding", "radius", "metrics", "web")
# Pods that must run as they are: every variant but "radius-without-servers" (on purpose).
PODS = (*VARIANTS, *COMPONENTS)
TARGET = "1.31"  # the oldest version the manifests are written for (docs/kubernetes.md)
VERSIONS = (TARGET, kubernetes_validate.utils.latest_version())
USERS = b"alice:correct horse battery staple\nbob:pa:ss word\n"
RADIUS_SECRET = b"radius: shared #1 secret\n"
WEB_PASSWORD = b"console: admin #1 pw\n"
WEB_SECRET_DIR = "/run/secrets/ikev2-vpn-web"
RADIUS_SERVERS = "radius1.example.com,radius2.example.com:1812"
SECRET_DIR = "/run/secrets/ikev2-vpn"
Resource = Mapping[str, Any]


def with_own_variants(tree: Path) -> Path:
    """An operator's own variants, as docs/kubernetes.md shows them: loadbalancer/ plus a component
    (named after it). Their kustomizations set no namespace, as an operator's need not."""
    for component in COMPONENTS:
        own = tree / component
        own.mkdir()
        (own / "kustomization.yaml").write_text(
            f"resources: [../loadbalancer]\ncomponents: [../components/{component}]\n"
        )
    return tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifests as an operator has them: a users.txt and a radius-secret of their own,
    settings.env as committed (no VPN_RADIUS_SERVERS)."""
    copy_of = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(MANIFESTS, copy_of)
    (copy_of / "base" / "users.txt").write_bytes(USERS)
    (copy_of / "components" / "radius" / "radius-secret").write_bytes(RADIUS_SECRET)
    (copy_of / "components" / "web" / "web-password").write_bytes(WEB_PASSWORD)
    return with_own_variants(copy_of)


@pytest.fixture(scope="module")
def radius_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As an operator with users in RADIUS has it (docs/kubernetes.md): VPN_RADIUS_SERVERS in
    settings.env, and the empty users.txt that base still reads."""
    copy_of = tmp_path_factory.mktemp("deploy-radius") / "kubernetes"
    shutil.copytree(MANIFESTS, copy_of)
    (copy_of / "base" / "users.txt").write_bytes(b"")
    (copy_of / "components" / "radius" / "radius-secret").write_bytes(RADIUS_SECRET)
    settings = copy_of / "base" / "settings.env"
    settings.write_text(settings.read_text() + f"VPN_RADIUS_SERVERS={RADIUS_SERVERS}\n")
    return with_own_variants(copy_of)


@pytest.fixture(scope="module")
def rendered(tree: Path, radius_tree: Path) -> dict[str, list[Resource]]:
    """Each variant; "radius-without-servers": the radius component with the committed
    settings.env, and users.txt left from a local setup."""
    variants = {name: k8s.render(tree / name) for name in ("base", *VARIANTS, *COMPONENTS)}
    variants["radius-without-servers"] = variants["radius"]
    variants["radius"] = k8s.render(radius_tree / "radius")
    return variants


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
@pytest.mark.parametrize("variant", ("base", *PODS, "radius-without-servers"))
def test_every_rendered_resource_is_valid_for_the_target_version(
    rendered: dict[str, list[Resource]], variant: str, version: str
) -> None:
    kinds = []
    for resource in rendered[variant]:
        validate(resource, version)
        kinds.append(resource["kind"])
    expected = ["Namespace", "ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment"]
    expected.append("NetworkPolicy")  # what clients may reach (egress)
    if variant not in {"base", "hostport"}:
        expected.append("Service")
    if variant == "metrics":
        expected.append("NetworkPolicy")  # who may scrape (ingress)
    if variant == "web":
        expected.append("Secret")  # the console's password
    assert sorted(kinds) == sorted(expected)  # one Secret: with RADIUS, not the users one


def test_every_manifest_file_is_valid_on_its_own() -> None:
    """Each file a kustomization lists as a resource is a complete object (patches are
    checked as rendered)."""
    checked = []
    for kustomization in [
        *MANIFESTS.glob("*/kustomization.yaml"),
        *MANIFESTS.glob("components/*/kustomization.yaml"),
    ]:
        listed = yaml.safe_load(kustomization.read_text()).get("resources", [])
        for name in listed:
            path = kustomization.parent / name
            if path.is_dir():
                continue
            for resource in yaml.safe_load_all(path.read_text()):
                validate(resource, TARGET)
                checked.append(path.name)
    assert sorted(checked) == [
        "deployment.yaml",
        "namespace.yaml",
        "network-policy-egress.yaml",
        "network-policy.yaml",
        "pvc.yaml",
        "service.yaml",
    ]


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


@pytest.mark.parametrize("variant", PODS)
def test_every_environment_variable_is_a_setting_of_the_server(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    env = k8s.pod_stand_in(rendered[variant]).env
    assert env, "the pod sets no settings"
    assert set(env) <= known_variables()
    assert unknown_variables(env) == []


@pytest.mark.parametrize("variant", PODS)
def test_secrets_come_from_secret_files_that_the_file_settings_point_at(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    stand_in = k8s.pod_stand_in(rendered[variant])
    file_settings = {name: path for name, path in stand_in.env.items() if name.endswith("_FILE")}
    if variant == "radius":
        setting, path, content = (
            "VPN_RADIUS_SECRET_FILE",
            f"{SECRET_DIR}/radius-secret",
            RADIUS_SECRET,
        )
    else:
        setting, path, content = "VPN_USERS_FILE", f"{SECRET_DIR}/users", USERS
    expected_settings, expected_files = {setting: path}, {path: content}
    if variant == "web":
        web = f"{WEB_SECRET_DIR}/web-password"
        expected_settings["VPN_WEB_PASSWORD_FILE"] = web
        expected_files[web] = WEB_PASSWORD
    assert file_settings == expected_settings
    assert stand_in.files == expected_files
    # Where a *_FILE variant exists, the secret is never an environment value.
    secrets = {"VPN_PASSWORD", "VPN_USERS", "VPN_RADIUS_SECRET", "VPN_WEB_PASSWORD"}
    assert not secrets & set(stand_in.env)
    volumes = [v for v in pod(rendered[variant])["volumes"] if "secret" in v]
    assert len(volumes) == len(expected_files)
    assert all(volume["secret"]["defaultMode"] == 0o400 for volume in volumes)


def load_pod_settings(
    stand_in: k8s.PodStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Settings:
    """The server's settings model reading the pod's environment, with the Secret files at
    a path of this machine in place of their mount path."""
    for name in list(os.environ):
        if name.upper().startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)
    for name, value in stand_in.env.items():
        here = tmp_path / Path(value).name
        if name.endswith("_FILE"):
            here.write_bytes(stand_in.files[value])
        monkeypatch.setenv(name, str(here) if name.endswith("_FILE") else value)
    return load_settings()


@pytest.mark.parametrize("variant", PODS)
def test_the_server_accepts_the_rendered_settings(
    rendered: dict[str, list[Resource]],
    variant: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    settings = load_pod_settings(k8s.pod_stand_in(rendered[variant]), monkeypatch, tmp_path)
    assert settings.host == "vpn.example.com"
    if variant == "radius":
        assert [str(server) for server in settings.radius_servers] == [
            "radius1.example.com:1812",
            "radius2.example.com:1812",
        ]
        assert settings.radius_secret is not None
        assert settings.radius_secret.get_secret_value() == RADIUS_SECRET.decode().strip()
        assert settings.accounts() == ()
    else:
        assert [account.name for account in settings.accounts()] == ["alice", "bob"]
    assert settings.metrics_port == (9814 if variant == "metrics" else None)
    assert settings.web_port == (8443 if variant == "web" else None)
    if variant == "web":
        assert settings.web_password is not None
        assert settings.web_password.matches(WEB_PASSWORD.decode().strip())


def test_the_radius_component_without_radius_servers_stops_the_server_saying_so(
    rendered: dict[str, list[Resource]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An operator who added the component but forgot VPN_RADIUS_SERVERS in settings.env
    gets one line naming both, not a server with a generated local user nobody asked for."""
    stand_in = k8s.pod_stand_in(rendered["radius-without-servers"])
    assert "VPN_RADIUS_SERVERS" not in stand_in.env
    with pytest.raises(ConfigErrors) as caught:
        load_pod_settings(stand_in, monkeypatch, tmp_path)
    assert str(caught.value) == (
        "VPN_RADIUS_SECRET: is only used with VPN_RADIUS_SERVERS; "
        "set VPN_RADIUS_SERVERS or unset VPN_RADIUS_SECRET"
    )


def test_components_combine_as_readme_shows(
    radius_tree: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """docs/kubernetes.md's own kustomization: hostport/ with users in RADIUS and metrics."""
    mine = radius_tree / "mine"
    mine.mkdir()
    (mine / "kustomization.yaml").write_text(
        "resources: [../hostport]\ncomponents: [../components/radius, ../components/metrics]\n"
    )
    resources = k8s.render(mine)
    for resource in resources:
        for version in VERSIONS:
            validate(resource, version)
    stand_in = k8s.pod_stand_in(resources)
    assert "9814/tcp" in stand_in.ports
    assert set(stand_in.files) == {f"{SECRET_DIR}/radius-secret"}
    settings = load_pod_settings(stand_in, monkeypatch, tmp_path)
    assert settings.radius_servers and settings.metrics_port == 9814


@pytest.mark.parametrize("variant", ("radius", "radius-without-servers"))
def test_the_radius_component_only_swaps_the_users_secret_for_the_radius_secret(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    """Nothing of users.txt reaches the cluster (not even left over from a local setup),
    and the pod is loadbalancer/'s but for the one Secret."""
    swapped = copy.deepcopy(dict(k8s.find(rendered[variant], "Deployment")))
    plain = copy.deepcopy(dict(k8s.find(rendered["loadbalancer"], "Deployment")))
    for deployment in (swapped, plain):
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        del container["envFrom"]  # the ConfigMaps differ in VPN_RADIUS_SERVERS
        (secret,) = (v for v in spec["volumes"] if "secret" in v)
        del secret["secret"]["secretName"]  # checked below
        (secret_mount,) = (m for m in container["volumeMounts"] if m["name"] == secret["name"])
        secret_mount["name"] = secret["name"] = "secret"
        (file_setting,) = container["env"]
        file_setting["name"] = file_setting["value"] = "secret file"
    assert swapped == plain
    secrets = [resource for resource in rendered[variant] if resource["kind"] == "Secret"]
    assert [secret["metadata"]["name"] for secret in secrets] == [
        next(v for v in pod(rendered[variant])["volumes"] if "secret" in v)["secret"]["secretName"]
    ]
    assert secrets[0]["metadata"]["name"].startswith("ikev2-vpn-radius-")
    assert b"alice" not in yaml.safe_dump_all(rendered[variant]).encode()


@pytest.mark.parametrize("variant", PODS)
def test_probes_run_the_images_health_check(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    healthcheck = dockerfile_instruction("HEALTHCHECK")
    command = yaml.safe_load(healthcheck.split(" CMD ", 1)[1])
    assert command == ["/opt/ikev2-vpn/bin/python3", "-m", "ikev2_vpn.run.health"]
    probes = k8s.pod_stand_in(rendered[variant]).probes
    assert probes == {
        "startupProbe": command,
        "readinessProbe": command,
        "livenessProbe": [*command, "--alive"],  # a certificate problem is no restart reason
    }


@pytest.mark.parametrize("variant", PODS)
def test_ports_are_the_images_exposed_ports(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    exposed = frozenset(dockerfile_instruction("EXPOSE").split())
    assert exposed == {"500/udp", "4500/udp", "80/tcp", "443/tcp"}
    metrics = {"9814/tcp"} if variant == "metrics" else set()  # VPN_METRICS_PORT's, not EXPOSEd
    web = {"8443/tcp"} if variant == "web" else set()  # VPN_WEB_PORT's
    assert k8s.pod_stand_in(rendered[variant]).ports == exposed | metrics | web


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
    assert offered == {
        (500, "UDP", 500),
        (4500, "UDP", 4500),
        (80, "TCP", 80),
        (443, "TCP", 443),
    }


def test_the_load_balancer_offers_ipv6_where_the_cluster_has_it(
    rendered: dict[str, list[Resource]],
) -> None:
    """IKE over IPv6 needs a dual-stack Service. PreferDualStack, not RequireDualStack (which
    a single-stack cluster refuses), and no ipFamilies: a single-stack cluster gives the
    Service its one family, a dual-stack one keeps its primary family first."""
    spec = k8s.find(rendered["loadbalancer"], "Service")["spec"]
    assert spec["ipFamilyPolicy"] == "PreferDualStack"
    assert "ipFamilies" not in spec


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


@pytest.mark.parametrize("variant", (*VARIANTS, "radius", "metrics", "web"))
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


def test_the_metrics_component_adds_only_the_metrics_port(
    rendered: dict[str, list[Resource]],
) -> None:
    """VPN_METRICS_PORT and the pod's port named "metrics" agree (Prometheus scrapes the pod
    IP at that port); nothing else about the pod changes."""
    env = k8s.pod_stand_in(rendered["metrics"]).env
    with_metrics = copy.deepcopy(dict(k8s.find(rendered["metrics"], "Deployment")))
    plain = copy.deepcopy(dict(k8s.find(rendered["loadbalancer"], "Deployment")))
    container = with_metrics["spec"]["template"]["spec"]["containers"][0]
    port = container["ports"].pop()
    assert port == {
        "name": "metrics",
        "containerPort": int(env["VPN_METRICS_PORT"]),
        "protocol": "TCP",
    }
    for deployment in (with_metrics, plain):
        del deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert with_metrics == plain
    assert {**k8s.pod_stand_in(rendered["loadbalancer"]).env, "VPN_METRICS_PORT": "9814"} == env


def test_the_web_component_adds_the_console_port_its_password_and_nothing_else(
    rendered: dict[str, list[Resource]],
) -> None:
    """VPN_WEB_PORT, the pod's and the Service's port named "web" agree; the password is a
    Secret file; nothing else about the pod changes."""
    env = k8s.pod_stand_in(rendered["web"]).env
    with_web = copy.deepcopy(dict(k8s.find(rendered["web"], "Deployment")))
    plain = copy.deepcopy(dict(k8s.find(rendered["loadbalancer"], "Deployment")))
    spec = with_web["spec"]["template"]["spec"]
    container = spec["containers"][0]
    port = int(env["VPN_WEB_PORT"])
    assert container["ports"].pop() == {"name": "web", "containerPort": port, "protocol": "TCP"}
    assert container["env"].pop()["name"] == "VPN_WEB_PASSWORD_FILE"
    assert container["volumeMounts"].pop() == {
        "name": "web-password",
        "mountPath": WEB_SECRET_DIR,
        "readOnly": True,
    }
    assert spec["volumes"].pop()["secret"]["secretName"].startswith("ikev2-vpn-web")
    for deployment in (with_web, plain):
        del deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert with_web == plain
    service_ports = k8s.find(rendered["web"], "Service")["spec"]["ports"]
    assert service_ports[-1] == {
        "name": "web",
        "port": port,
        "targetPort": "web",
        "protocol": "TCP",
    }


def ingress_policy(resources: list[Resource]) -> Resource:
    [policy] = [
        resource
        for resource in resources
        if resource["kind"] == "NetworkPolicy" and "Ingress" in resource["spec"]["policyTypes"]
    ]
    spec: Resource = policy["spec"]
    return spec


def test_the_network_policy_lets_anyone_reach_the_vpn_and_only_prometheus_the_metrics(
    rendered: dict[str, list[Resource]],
) -> None:
    """Once a NetworkPolicy selects the pod, what it does not allow is dropped: every VPN
    port must be open to all, the metrics (they name users) to the selected pods only."""
    policy = ingress_policy(rendered["metrics"])
    labels = k8s.find(rendered["metrics"], "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]  # the pod's own connections are not limited
    container_ports = {
        port["name"]: port["protocol"]
        for port in pod(rendered["metrics"])["containers"][0]["ports"]
    }
    open_to_all: set[tuple[Any, Any]] = set()
    restricted: set[tuple[Any, Any]] = set()
    for rule in policy["ingress"]:
        named = {(port["port"], port["protocol"]) for port in rule["ports"]}
        assert named <= container_ports.items(), "a policy port the pod does not have"
        (restricted if rule.get("from") else open_to_all).update(named)
    assert open_to_all == {
        (name, proto) for name, proto in container_ports.items() if name != "metrics"
    }
    assert restricted == {("metrics", "TCP")}
    for rule in policy["ingress"]:
        for peer in rule.get("from", []):
            assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]


@pytest.mark.parametrize("variant", PODS)
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


@pytest.mark.parametrize("variant", PODS)
def test_resources_are_bounded_with_room_above_the_measured_use(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    """The figures: see docs/kubernetes.md (measured by the Docker stand-in)."""
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


@pytest.mark.parametrize("variant", PODS)
def test_everything_lives_in_one_namespace_exempt_from_baseline_enforcement(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    namespace = k8s.find(rendered[variant], "Namespace")
    name = namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for resource in rendered[variant]:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == name, resource["kind"]


@pytest.mark.parametrize(
    ("variant", "secret_file"),
    [("loadbalancer", "base/users.txt"), ("radius", "components/radius/radius-secret")],
)
def test_a_secret_change_rolls_the_server(
    tree: Path, tmp_path: Path, variant: str, secret_file: str
) -> None:
    """The Secret's name carries a hash of the file, so a change restarts the pod with it."""
    before = k8s.find(k8s.render(tree / variant), "Secret")["metadata"]["name"]
    changed = tmp_path / "kubernetes"
    shutil.copytree(tree, changed)
    (changed / secret_file).write_bytes(b"carol:another one\n")
    after_resources = k8s.render(changed / variant)
    after = k8s.find(after_resources, "Secret")["metadata"]["name"]
    assert before != after
    volume = next(v for v in pod(after_resources)["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == after


@pytest.mark.parametrize("secret_file", ["base/users.txt", "components/radius/radius-secret"])
def test_secret_files_are_never_committed(secret_file: str) -> None:
    ignored = (MANIFESTS / ".gitignore").read_text().split()
    assert secret_file in ignored
    assert not (MANIFESTS / secret_file).exists()
    assert (MANIFESTS / f"{secret_file}.example").exists()


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


# --- the egress policy: what VPN clients reach in a cluster ----------------------------------

DNS_PODS = {
    "namespace": {"kubernetes.io/metadata.name": "kube-system"},
    "pod": {"k8s-app": "kube-dns"},
}


def egress_allows(
    policy: Resource, address: str, port: int, protocol: str, peer: Mapping[str, Any] | None = None
) -> bool:
    """Whether ``policy`` lets the pod send to ``address`` (a pod with ``peer``'s namespace
    and pod labels, if given) at ``port``/``protocol``: the NetworkPolicy rules, evaluated."""
    target = ipaddress.ip_address(address)
    for rule in policy["egress"]:
        ports = rule.get("ports")
        if ports and not any(p["port"] == port and p["protocol"] == protocol for p in ports):
            continue
        for to in rule.get("to", []):
            block = to.get("ipBlock")
            if block is not None:
                cidr = ipaddress.ip_network(block["cidr"])
                excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
                if target in cidr and not any(target in e for e in excepted):
                    return True
            elif peer is not None:
                wanted_ns = to.get("namespaceSelector", {}).get("matchLabels", {})
                wanted_pod = to.get("podSelector", {}).get("matchLabels", {})
                if (
                    wanted_ns.items() <= peer["namespace"].items()
                    and wanted_pod.items() <= peer["pod"].items()
                ):
                    return True
    return False


def egress_policy(resources: list[Resource]) -> Resource:
    [policy] = [
        resource
        for resource in resources
        if resource["kind"] == "NetworkPolicy" and "Egress" in resource["spec"]["policyTypes"]
    ]
    spec: Resource = policy["spec"]
    return spec


@pytest.mark.parametrize("variant", PODS)
def test_every_variant_fences_the_pods_traffic(
    rendered: dict[str, list[Resource]], variant: str
) -> None:
    policy = egress_policy(rendered[variant])
    labels = k8s.find(rendered[variant], "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Egress"]  # who may reach the VPN is the ingress one's


@pytest.mark.parametrize(
    ("address", "port", "protocol"),
    [
        ("1.1.1.1", 53, "UDP"),  # the default VPN_DNS
        ("93.184.215.14", 443, "TCP"),  # anywhere on the internet
        ("172.65.32.248", 443, "TCP"),  # Let's Encrypt's ACME API
        ("2606:4700:4700::1111", 443, "TCP"),
    ],
)
def test_clients_and_the_server_reach_the_internet(
    rendered: dict[str, list[Resource]], address: str, port: int, protocol: str
) -> None:
    assert egress_allows(egress_policy(rendered["loadbalancer"]), address, port, protocol)


@pytest.mark.parametrize(
    ("address", "port", "what"),
    [
        ("10.96.0.1", 443, "the API server's Service (kubeadm's default range)"),
        ("172.20.0.1", 443, "the API server's Service (EKS)"),
        ("34.118.224.1", 443, "not fenced: GKE's public Service range is cluster-specific"),
        ("10.244.1.7", 8080, "a pod (Flannel's default range)"),
        ("192.168.12.3", 8080, "a pod (Calico's default range)"),
        ("100.64.3.9", 8080, "a pod in shared address space (EKS custom networking)"),
        ("10.0.0.5", 10250, "a node's kubelet"),
        ("169.254.169.254", 80, "metadata (AWS, GCP, Azure, ...)"),
        ("100.100.100.200", 80, "Alibaba Cloud metadata"),
        ("168.63.129.16", 80, "Azure WireServer"),
        ("fd00:ec2::254", 80, "AWS metadata over IPv6"),
        ("fd12:3456::1", 443, "a dual-stack cluster's ULA pod or Service"),
        ("fe80::1", 22, "link-local"),
    ],
)
def test_the_cluster_and_the_platform_are_fenced_off(
    rendered: dict[str, list[Resource]], address: str, port: int, what: str
) -> None:
    allowed = egress_allows(egress_policy(rendered["loadbalancer"]), address, port, "TCP")
    assert allowed is what.startswith("not fenced"), what


def test_dns_goes_to_the_clusters_dns_pods_only(rendered: dict[str, list[Resource]]) -> None:
    """The server resolves ACME and RADIUS names through the cluster's DNS; nothing else of
    the cluster is allowed by the pod rule."""
    policy = egress_policy(rendered["loadbalancer"])
    for protocol in ("UDP", "TCP"):
        assert egress_allows(policy, "10.96.0.10", 53, protocol, DNS_PODS)
    assert not egress_allows(policy, "10.96.0.10", 443, "TCP", DNS_PODS)
    other = {"namespace": {"kubernetes.io/metadata.name": "default"}, "pod": {"app": "db"}}
    assert not egress_allows(policy, "10.244.1.9", 53, "UDP", other)
