"""The Kubernetes manifests (deploy/kubernetes/) rendered, and their pod as a Docker container.

No cluster runs here, so the pod spec is proven by starting the image with exactly what
the manifest declares: its capabilities, sysctls, devices, environment, Secret files and
data volume. :func:`pod_stand_in` translates a rendered variant into that, and refuses
anything it cannot translate faithfully, so a manifest change the stand-in would ignore
fails instead of passing unnoticed.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.server import Privileges

Resource = Mapping[str, Any]

# Kubernetes leaves the kernel's default here; Docker lowers it to 0 in every container,
# which would hide a missing NET_BIND_SERVICE (ports 500 and 80).
KERNEL_UNPRIVILEGED_PORT_START = "1024"


def render(variant: Path) -> list[Resource]:
    """The resources of a kustomize directory, rendered by kubectl's built-in kustomize
    (what ``kubectl apply -k`` would send)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise HelperError(
            "kubectl is not installed; install kubectl 1.27 or later, whose "
            "`kubectl kustomize` renders the variants"
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(variant)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise HelperError(f"kubectl kustomize {variant} failed: {result.stderr.strip()}")
    return [item for item in yaml.safe_load_all(result.stdout) if item]


def find(resources: Sequence[Resource], kind: str, name: str | None = None) -> Resource:
    """The one resource of ``kind`` (whose name starts with ``name``: generated names carry
    a hash suffix)."""
    found = [
        item
        for item in resources
        if item["kind"] == kind and (name is None or item["metadata"]["name"].startswith(name))
    ]
    if len(found) != 1:
        raise HelperError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


@dataclass(frozen=True)
class PodStandIn:
    """A pod's single container as :meth:`ikev2_vpn_lab.lab.Lab.start_server` takes it."""

    env: Mapping[str, str]
    files: Mapping[str, bytes]  # Secret volume files, by their path in the container
    privileges: Privileges
    data_mount: str  # where the PersistentVolumeClaim is mounted
    probes: Mapping[str, Sequence[str]]  # probe kind -> exec command
    ports: frozenset[str]  # "500/udp", as in the image's EXPOSE
    memory: Mapping[str, int]  # "requests" and "limits", in bytes


def pod_stand_in(resources: Sequence[Resource]) -> PodStandIn:
    """Translate the Deployment of a rendered variant (with the ConfigMaps and Secrets it
    refers to) into a Docker container's settings."""
    deployment = find(resources, "Deployment")
    pod: Resource = deployment["spec"]["template"]["spec"]
    containers = pod["containers"]
    if len(containers) != 1 or pod.get("initContainers"):
        raise HelperError("the stand-in runs pods with exactly one container")
    container: Resource = containers[0]
    if pod.get("hostNetwork"):
        raise HelperError("hostNetwork has no faithful Docker stand-in here")
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    files: dict[str, bytes] = {}
    devices: list[str] = []
    data_mount = ""
    for mount in container.get("volumeMounts", []):
        if mount.get("subPath"):
            raise HelperError(f"volume mount {mount['name']} uses subPath (not translated)")
        volume = volumes[mount["name"]]
        path = mount["mountPath"]
        if "persistentVolumeClaim" in volume:
            data_mount = path
        elif "secret" in volume:
            files.update(_secret_files(resources, volume["secret"], path))
        elif volume.get("hostPath", {}).get("type") == "CharDevice":
            devices.append(f"{volume['hostPath']['path']}:{path}:rwm")
        else:
            raise HelperError(f"volume {mount['name']} is of a kind the stand-in cannot mount")
    return PodStandIn(
        env=_environment(resources, container),
        files=files,
        privileges=_privileges(pod, container, devices),
        data_mount=data_mount,
        probes={
            kind: probe["exec"]["command"]
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if (probe := container.get(kind)) is not None
        },
        ports=frozenset(
            f"{port['containerPort']}/{port.get('protocol', 'TCP').lower()}"
            for port in container.get("ports", [])
        ),
        memory={
            kind: memory_bytes(values["memory"])
            for kind, values in container.get("resources", {}).items()
            if "memory" in values
        },
    )


_BINARY_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in binary units ("96Mi") as bytes."""
    number, unit = quantity[:-2], quantity[-2:]
    if unit not in _BINARY_UNITS or not number.isdigit():
        raise HelperError(f"memory quantity {quantity!r} is not translated (use Ki, Mi or Gi)")
    return int(number) * _BINARY_UNITS[unit]


def _environment(resources: Sequence[Resource], container: Resource) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if set(source) != {"configMapRef"}:
            raise HelperError(f"envFrom {sorted(source)} is not translated (ConfigMaps only)")
        config_map = find(resources, "ConfigMap", source["configMapRef"]["name"])
        env.update({str(k): str(v) for k, v in config_map.get("data", {}).items()})
    for variable in container.get("env", []):
        if "value" not in variable:
            raise HelperError(f"env {variable['name']} is not a plain value (not translated)")
        env[variable["name"]] = str(variable["value"])
    return env


def secret_data(secret: Resource) -> dict[str, bytes]:
    """A Secret's keys and their decoded values (``data`` and ``stringData`` together)."""
    values = {key: base64.b64decode(value) for key, value in secret.get("data", {}).items()}
    values.update({key: value.encode() for key, value in secret.get("stringData", {}).items()})
    return values


def _secret_files(
    resources: Sequence[Resource], volume: Resource, directory: str
) -> dict[str, bytes]:
    values = secret_data(find(resources, "Secret", volume["secretName"]))
    if volume.get("items"):
        return {f"{directory}/{item['path']}": values[item["key"]] for item in volume["items"]}
    return {f"{directory}/{key}": value for key, value in values.items()}


# What the stand-in translates; any other security setting stops it (see the module doc).
_POD_SECURITY = {"seccompProfile", "sysctls"}
_CONTAINER_SECURITY = {"privileged", "allowPrivilegeEscalation", "capabilities", "seccompProfile"}


def _privileges(pod: Resource, container: Resource, devices: Sequence[str]) -> Privileges:
    context: Resource = container.get("securityContext", {})
    untranslated = sorted(
        (set(pod.get("securityContext", {})) - _POD_SECURITY) | (set(context) - _CONTAINER_SECURITY)
    )
    if untranslated:
        raise HelperError(f"security settings {untranslated} are not translated")
    if context.get("privileged"):
        raise HelperError("privileged containers fail on this engine and are not translated")
    seccomp = {
        **pod.get("securityContext", {}).get("seccompProfile", {}),
        **context.get("seccompProfile", {}),
    }
    if seccomp.get("type") not in (None, "RuntimeDefault"):
        raise HelperError(f"seccomp profile {seccomp.get('type')} is not translated")
    sysctls = {"net.ipv4.ip_unprivileged_port_start": KERNEL_UNPRIVILEGED_PORT_START}
    for item in pod.get("securityContext", {}).get("sysctls", []):
        sysctls[item["name"]] = str(item["value"])
    no_escalation = context.get("allowPrivilegeEscalation") is False
    capabilities: Resource = context.get("capabilities", {})
    return Privileges(
        cap_add=tuple(capabilities.get("add", ())),
        cap_drop=tuple(capabilities.get("drop", ())),
        sysctls=sysctls,
        devices=tuple(devices),
        # RuntimeDefault is Docker's default seccomp profile: nothing to add for it.
        security_opt=("no-new-privileges",) if no_escalation else (),
    )
