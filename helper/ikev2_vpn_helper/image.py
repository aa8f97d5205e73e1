"""Building the server image from the repository's Dockerfile with the engine's builder."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException

from .base import DEFAULT_BASE, Log, ensure_base_image, image_exists
from .errors import HelperError

DEFAULT_IMAGE = "ikev2-vpn:latest"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----"
)
_STEP = re.compile(r"^Step \d+/\d+ : ")


def repository_root() -> Path:
    """The checkout this package runs from (editable install), else the working directory."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "Dockerfile").is_file() else Path.cwd()


def pem_certificates(text: str) -> list[str]:
    """Every PEM certificate block in ``text``, normalised to ``\\n`` line ends."""
    return [block.replace("\r\n", "\n") for block in _PEM_CERT.findall(text)]


def host_extra_cas(directory: Path = HOST_CA_DIR) -> list[Path]:
    """CA files added to this host's trust store by hand (what a TLS-intercepting proxy needs)."""
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.rglob("*.crt") if path.is_file())


def read_ca_files(paths: Iterable[Path]) -> list[str]:
    """PEM certificates from each file; a file without one is an operator error."""
    found: list[str] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise HelperError(f"cannot read CA file {path}: {error.strerror}") from None
        certificates = pem_certificates(text)
        if not certificates:
            raise HelperError(f"{path} holds no PEM certificate; give a PEM (.crt) file")
        found.extend(cert for cert in certificates if cert not in found)
    return found


def build_args(base_image: str, ca_pems: Iterable[str]) -> dict[str, str]:
    """The Dockerfile's build arguments: the base image and extra CAs for the build stage."""
    arguments = {"BASE_IMAGE": base_image}
    pems = list(ca_pems)
    if pems:
        arguments["EXTRA_CA_CERTS"] = "\n".join(pem.strip() for pem in pems) + "\n"
    return arguments


@dataclass
class BuildOutput:
    """What the builder said: the lines kept for an error report, and the image id."""

    image_id: str | None = None
    error: str | None = None
    lines: list[str] = field(default_factory=list)


def follow_build(messages: Iterable[Mapping[str, Any]], log: Log, verbose: bool) -> BuildOutput:
    """Print a concise build log (steps only unless verbose) and collect the outcome."""
    output = BuildOutput()
    for message in messages:
        if "stream" in message:
            for line in str(message["stream"]).splitlines():
                if not line.strip():
                    continue
                output.lines = [*output.lines[-39:], line]
                if verbose or _STEP.match(line):
                    log(line)
        if "aux" in message and isinstance(message["aux"], Mapping) and "ID" in message["aux"]:
            output.image_id = str(message["aux"]["ID"])
        if "error" in message:
            output.error = str(message["error"]).strip()
    return output


def build_image(
    engine: docker.DockerClient,
    *,
    context: Path,
    tag: str = DEFAULT_IMAGE,
    buildargs: Mapping[str, str],
    verbose: bool = False,
    log: Log = print,
) -> str:
    """Build ``context``'s Dockerfile as ``tag`` and return the image id."""
    if not (context / "Dockerfile").is_file():
        raise HelperError(f"{context} has no Dockerfile; run from the repository or give --context")
    try:
        messages = engine.api.build(
            path=str(context),
            tag=tag,
            buildargs=dict(buildargs),
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        output = follow_build(messages, log, verbose)
    except (APIError, DockerException) as error:
        raise HelperError(f"the build failed: {error}") from None
    if output.error or output.image_id is None:
        if not verbose:
            for line in output.lines[-25:]:
                log(f"  | {line}")
        raise HelperError(f"the build failed: {output.error or 'the builder gave no image id'}")
    return output.image_id


def ensure_tool_image(
    engine: docker.DockerClient,
    *,
    tag: str,
    dockerfile: str,
    what: str,
    log: Log = print,
    base: str = DEFAULT_BASE,
) -> str:
    """Build a test tool's image (Pebble, FreeRADIUS) from ``dockerfile`` and the Debian base
    when the engine does not have ``tag`` yet; return the tag.

    ``dockerfile`` starts with ``ARG BASE_IMAGE`` / ``FROM ${BASE_IMAGE}``: the base is found
    the way ``ikev2-vpn-helper build`` finds it (local, pulled, or the debootstrap base).
    """
    if image_exists(engine, tag):
        return tag
    choice = ensure_base_image(engine, base, log=log)
    log(f"{what}: building {tag} from {choice.image} ({choice.how})")
    build_text(
        engine, dockerfile, tag=tag, buildargs={"BASE_IMAGE": choice.image}, what=what, log=log
    )
    return tag


def build_text(
    engine: docker.DockerClient,
    dockerfile: str,
    *,
    tag: str,
    buildargs: Mapping[str, str],
    what: str,
    log: Log = print,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Build a Dockerfile given as text (no context) as ``tag``; return the image id."""
    try:
        messages = engine.api.build(
            fileobj=io.BytesIO(dockerfile.encode()),
            tag=tag,
            buildargs=dict(buildargs),
            labels=dict(labels or {}),
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        output = follow_build(messages, log, verbose=False)
    except (APIError, DockerException) as error:
        raise HelperError(f"the {what} image build failed: {error}") from None
    if output.error or output.image_id is None:
        for line in output.lines[-25:]:
            log(f"  | {line}")
        raise HelperError(
            f"the {what} image build failed: {output.error or 'the builder gave no image id'}"
        )
    return output.image_id
