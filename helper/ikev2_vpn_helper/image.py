"""Building the server image from the repository's Dockerfile with the engine's builder,
for the engine's own platform or, under emulation, for others."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException

from .base import DEFAULT_BASE, DEFAULT_MIRROR, Log, ensure_base_image, image_exists
from .errors import HelperError
from .platforms import (
    BINFMT_DIR,
    Platform,
    check_emulation,
    describe,
    host_platform,
    image_tags,
    matches,
)

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
    platform: Platform | None = None,
    verbose: bool = False,
    log: Log = print,
) -> str:
    """Build ``context``'s Dockerfile as ``tag`` (for ``platform``, default the engine's own)
    and return the image id."""
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
            platform=platform.docker if platform else None,
        )
        output = follow_build(messages, log, verbose)
    except (APIError, DockerException) as error:
        raise HelperError(f"the build failed: {error}") from None
    if output.error or output.image_id is None:
        if not verbose:
            for line in output.lines[-25:]:
                log(f"  | {line}")
        raise HelperError(f"the build failed: {output.error or 'the builder gave no image id'}")
    if platform is not None:
        attrs = engine.images.get(output.image_id).attrs
        if not matches(attrs, platform):
            raise HelperError(
                f"the build of {tag} for {platform} gave an image for {describe(attrs)}; "
                "is the base image built for that platform?"
            )
    return output.image_id


@dataclass(frozen=True)
class BuildPlan:
    """What ``build_for_platforms`` needs besides the engine, platforms and tag."""

    context: Path
    ca_pems: tuple[str, ...] = ()
    base: str = DEFAULT_BASE
    rebuild_base: bool = False
    mirror: str = DEFAULT_MIRROR
    verbose: bool = False


def build_for_platforms(
    engine: docker.DockerClient,
    platforms: list[Platform],
    tag: str,
    plan: BuildPlan,
    *,
    tag_given: bool = True,
    log: Log = print,
    report: Log = print,
    binfmt_dir: Path = BINFMT_DIR,
) -> dict[Platform, str]:
    """Build the image once per platform, one after the other; return each one's tag.

    Tags follow ``platforms.image_tags``. Emulation is checked for every foreign platform
    before anything starts. ``report`` gets one summary line per image.
    """
    host = host_platform(engine)
    check_emulation(platforms, host, binfmt_dir)
    built: dict[Platform, str] = {}
    for platform, tags in image_tags(platforms, host, tag, tag_given=tag_given).items():
        started = time.monotonic()
        choice = ensure_base_image(
            engine,
            plan.base,
            platform=platform,
            rebuild=plan.rebuild_base,
            mirror=plan.mirror,
            log=log,
        )
        base_s = time.monotonic() - started
        log(f"base: {choice.image} for {platform} ({choice.how})")
        log(f"build: {tags[0]} for {platform} from {plan.context}")
        started = time.monotonic()
        image_id = build_image(
            engine,
            context=plan.context,
            tag=tags[0],
            buildargs=build_args(choice.image, plan.ca_pems),
            platform=platform,
            verbose=plan.verbose,
            log=log,
        )
        build_s = time.monotonic() - started
        for extra in tags[1:]:
            repository, _, version = extra.rpartition(":")
            engine.api.tag(image_id, repository, version)
        size = engine.images.get(image_id).attrs.get("Size", 0)
        report(
            f"built {', '.join(tags)} for {platform} ({image_id[:19]}, {size / 1e6:.0f} MB, "
            f"base {base_s:.0f} s, build {build_s:.0f} s)"
        )
        built[platform] = tags[0]
    return built


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
