"""Docker engine access shared by every step: connection, labels, files and commands.

Secrets reach containers only as files copied in with ``put_archive`` (never in a command
line, an environment variable or an image layer), and every object the helper creates for
a check or a test carries ``ikev2-vpn.test=<run id>`` so :func:`remove_run` finds it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from .errors import HelperError

LABEL_RUN = "ikev2-vpn.test"  # value: the run id of a check or test session
LABEL_ROLE = "ikev2-vpn.role"  # server, client, target, wan, egress, state
ENGINE_TIMEOUT_S = 120


def connect_engine(timeout: int = ENGINE_TIMEOUT_S) -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (or the local socket), known to answer."""
    try:
        engine = docker.from_env(timeout=timeout)
        engine.ping()
    except DockerException as error:
        raise HelperError(
            f"the Docker engine does not answer ({error}); start it or set DOCKER_HOST"
        ) from None
    return engine


def engine_is_local() -> bool:
    """Whether the engine runs on this host (a Unix socket), so its networks meet ours."""
    host = os.environ.get("DOCKER_HOST", "")
    return not host or host.startswith("unix://")


def new_run_id() -> str:
    """A short id that is unique enough to share one engine between parallel runs."""
    return time.strftime("%H%M%S") + "-" + secrets.token_hex(3)


def labels(run_id: str | None, role: str) -> dict[str, str]:
    found = {LABEL_ROLE: role}
    if run_id is not None:
        found[LABEL_RUN] = run_id
    return found


def remove_run(engine: docker.DockerClient, run_id: str) -> list[str]:
    """Remove every container, network and volume labelled with ``run_id``; return their names.

    Containers go first (networks and volumes in use cannot be removed). A container that is
    not ours but was connected to one of our networks is only disconnected.
    """
    selector = {"label": f"{LABEL_RUN}={run_id}"}
    removed = []
    for container in engine.containers.list(all=True, filters=selector):
        with contextlib.suppress(NotFound):
            container.remove(force=True, v=True)  # v: anonymous volumes, never named ones
        removed.append(container.name)
    for network in engine.networks.list(filters=selector):
        network.reload()
        for attached in network.containers:
            with contextlib.suppress(NotFound):
                network.disconnect(attached, force=True)
        with contextlib.suppress(NotFound):
            network.remove()
        removed.append(network.name)
    for volume in engine.volumes.list(filters=selector):
        with contextlib.suppress(NotFound):
            volume.remove()
        removed.append(volume.name)
    return removed


def list_runs(engine: docker.DockerClient) -> dict[str, list[str]]:
    """Run ids that still own objects, with the objects' names."""
    runs: dict[str, list[str]] = {}
    selector = {"label": LABEL_RUN}
    items: list[Any] = [
        *engine.containers.list(all=True, filters=selector),
        *engine.networks.list(filters=selector),
        *engine.volumes.list(filters=selector),
    ]
    for item in items:
        found = item.labels if isinstance(item, Container) else item.attrs.get("Labels") or {}
        runs.setdefault(found.get(LABEL_RUN, "?"), []).append(item.name)
    return runs


# --- files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    """A file to copy into a container: absolute path, content, permissions."""

    path: str
    data: bytes
    mode: int = 0o644


def put_files(
    container: Container, files: Sequence[FileSpec], private_dirs: Iterable[str] = ()
) -> None:
    """Copy files into a container (created or running) in one archive.

    Missing parent directories are created by the engine (0755); ``private_dirs`` are
    created 0700 first, for secrets.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for directory in private_dirs:
            info = tarfile.TarInfo(directory.strip("/"))
            info.type = tarfile.DIRTYPE
            info.mode = 0o700
            info.mtime = int(time.time())
            archive.addfile(info)
        for spec in files:
            if not spec.path.startswith("/"):
                raise ValueError(f"container paths must be absolute: {spec.path}")
            info = tarfile.TarInfo(spec.path.lstrip("/"))
            info.size = len(spec.data)
            info.mode = spec.mode
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(spec.data))
    if not container.put_archive("/", buffer.getvalue()):
        raise HelperError(f"could not copy files into container {container.name}")


def start_tool(
    engine: docker.DockerClient,
    image: str,
    *,
    name: str,
    network: str,
    alias: str,
    files: Sequence[FileSpec],
    builder: str,
    **options: Any,
) -> Container:
    """Create a test tool's container (Pebble, FreeRADIUS) on ``network``, known there as
    ``alias``, with no capabilities; copy ``files`` in and start it. A failure removes it.
    ``builder``: the function that builds ``image``, named when it is missing."""
    try:
        container = engine.containers.create(
            image,
            name=name,
            network=network,
            networking_config={network: engine.api.create_endpoint_config(aliases=[alias])},
            cap_drop=["ALL"],  # their ports are unprivileged; they need nothing
            detach=True,
            **options,
        )
    except ImageNotFound:
        raise HelperError(f"image {image} does not exist; {builder}() builds it") from None
    except APIError as error:
        raise HelperError(f"cannot create container {name}: {error.explanation}") from None
    try:
        put_files(container, files)
        container.start()
    except (APIError, HelperError) as error:
        container.remove(force=True, v=True)
        detail = error.explanation if isinstance(error, APIError) else str(error)
        raise HelperError(f"cannot start container {name}: {detail}") from None
    return container


def read_file(container: Container, path: str) -> bytes:
    """The content of one regular file in a container."""
    try:
        chunks, _ = container.get_archive(path)
    except NotFound:
        raise HelperError(f"{path} does not exist in container {container.name}") from None
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        for member in archive:
            if member.isfile():
                handle = archive.extractfile(member)
                if handle is not None:
                    return handle.read()
    raise HelperError(f"{path} in container {container.name} is not a regular file")


# --- commands ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


def run_in(container: Container, argv: Sequence[str]) -> ExecResult:
    """Run a command (argument list, no shell) in a running container and wait for it."""
    try:
        exit_code, (stdout, stderr) = container.exec_run(list(argv), demux=True)
    except APIError as error:
        raise HelperError(
            f"cannot run {argv[0]} in container {container.name}: {error.explanation}"
        ) from None
    return ExecResult(
        exit_code=exit_code if exit_code is not None else -1,
        stdout=(stdout or b"").decode(errors="replace"),
        stderr=(stderr or b"").decode(errors="replace"),
    )


def run_checked(container: Container, argv: Sequence[str]) -> str:
    """Standard output of a command that must succeed."""
    result = run_in(container, argv)
    if result.exit_code != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise HelperError(
            f"{' '.join(argv[:3])} failed in container {container.name}: "
            f"{detail[-1] if detail else f'exit status {result.exit_code}'}"
        )
    return result.stdout


# --- inspect data ------------------------------------------------------------------------


def container_env(container: Container) -> dict[str, str]:
    """The environment a container was created with (may hold secrets: never print it)."""
    return parse_env_list(container.attrs["Config"].get("Env") or [])


def parse_env_list(items: Iterable[str]) -> dict[str, str]:
    env = {}
    for item in items:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def network_addresses(container: Container) -> dict[str, str]:
    """IPv4 address of the container on each network it is attached to, by network name."""
    networks: Mapping[str, Any] = container.attrs["NetworkSettings"].get("Networks") or {}
    return {name: data["IPAddress"] for name, data in networks.items() if data.get("IPAddress")}


def network_addresses_v6(container: Container) -> dict[str, str]:
    """Global IPv6 address of the container on each IPv6 network, by network name."""
    networks: Mapping[str, Any] = container.attrs["NetworkSettings"].get("Networks") or {}
    return {
        name: data["GlobalIPv6Address"]
        for name, data in networks.items()
        if data.get("GlobalIPv6Address")
    }


def log_tail(container: Container, lines: int = 30, hide: Iterable[str] = ()) -> str:
    """The container's last log lines with secrets masked."""
    try:
        text = container.logs(tail=lines).decode(errors="replace")
    except DockerException:
        return ""
    return redact(text, hide)


# The server prints a generated password once; a helper that shows logs must not repeat it.
_PASSWORD_PHRASE = re.compile(r"(\bpassword[ \t:=]+)(\S+)")


def redact(text: str, hide: Iterable[str] = ()) -> str:
    """Mask known secret values and anything that reads like ``password <value>``."""
    for value in sorted((v for v in hide if v), key=len, reverse=True):
        text = text.replace(value, "***")
    return _PASSWORD_PHRASE.sub(lambda match: match.group(1) + "***", text)
