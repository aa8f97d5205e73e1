"""A headless browser for the web console's tests: Debian's Chromium driven by Selenium.

The image is the Debian base with ``chromium``, ``chromium-driver`` and ``python3-selenium``
(no download at test time: Selenium's own driver manager is never used, the driver is
Debian's). A test runs a script in it (:func:`start_browser`) on the lab's networks; the
browser reaches the server by its name through a host-resolver rule, and trusts exactly
the server's key (Chromium's SPKI pin list), like a person who compared the fingerprint.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import docker
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from docker.models.containers import Container

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper.base import DEFAULT_BASE, Log
from ikev2_vpn_helper.image import ensure_tool_image

BROWSER_IMAGE = "ikev2-vpn-browser:trixie"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
WORK = "/home/browser"  # the script, its log and what it reports; the browser user's home

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        chromium chromium-driver python3-selenium fonts-dejavu-core ca-certificates \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
RUN useradd --create-home browser
USER browser
WORKDIR /home/browser
"""


def ensure_browser_image(
    engine: docker.DockerClient,
    log: Log = print,
    *,
    tag: str = BROWSER_IMAGE,
    base: str = DEFAULT_BASE,
) -> str:
    """Build the browser image when the engine does not have it yet; return its tag."""
    return ensure_tool_image(
        engine, tag=tag, dockerfile=DOCKERFILE, what="browser", log=log, base=base
    )


def spki_pin(certificate_pem: bytes) -> str:
    """Chromium's pin of a certificate's key: base64 of SHA-256 over its SubjectPublicKeyInfo."""
    leaf = x509.load_pem_x509_certificate(certificate_pem)
    spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def start_browser(
    engine: docker.DockerClient,
    *,
    name: str,
    networks: Sequence[str],
    labels: dict[str, str],
    image: str = BROWSER_IMAGE,
) -> Container:
    """An idle browser container on ``networks``; :func:`run_script` runs a script in it."""
    container = engine.containers.create(
        image,
        ["sleep", "infinity"],
        name=name,
        labels=labels,
        network=networks[0],
        shm_size="256m",  # Chromium's shared memory: Docker's 64 MiB default crashes tabs
    )
    for network in networks[1:]:
        engine.networks.get(network).connect(container)
    container.start()
    return container


def run_script(container: Container, script: str, args: Sequence[str]) -> None:
    """Start ``script`` (Python) in the container in the background; it reports in files
    under WORK, its output goes to WORK/script.log."""
    put_file(container, f"{WORK}/script.py", script.encode())
    container.exec_run(
        [
            "sh",
            "-c",
            f'exec python3 {WORK}/script.py "$@" >{WORK}/script.log 2>&1',
            "script",
            *args,
        ],
        detach=True,
    )


def put_file(container: Container, path: str, content: bytes, mode: int = 0o644) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        info = tarfile.TarInfo(Path(path).name)
        info.size, info.mode, info.uid, info.gid = len(content), mode, 1000, 1000
        archive.addfile(info, io.BytesIO(content))
    container.put_archive(str(Path(path).parent), data.getvalue())


def get_files(container: Container, path: str, into: Path) -> list[Path]:
    """Copy the files of directory ``path`` out of the container into ``into``."""
    stream, _ = container.get_archive(path)
    data = io.BytesIO(b"".join(stream))
    into.mkdir(parents=True, exist_ok=True)
    found = []
    with tarfile.open(fileobj=data) as archive:
        for member in archive.getmembers():
            if member.isfile():
                source = archive.extractfile(member)
                if source is None:
                    continue
                target = into / Path(member.name).name
                target.write_bytes(source.read())
                found.append(target)
    return found


def read_file(container: Container, path: str) -> bytes | None:
    result = eng.run_in(container, ["cat", path])
    return result.stdout.encode() if result.exit_code == 0 else None
