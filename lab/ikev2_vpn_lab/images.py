"""Every image the lab's tests and the benchmark run, built before any lab network exists.

An image build downloads from Debian's mirror; while a lab network exists, a mistake in its
choice of subnet could cut that download off (and a build mid-test costs that test its
time limit). So a test session, and the benchmark, ensure all of them first:

- the Pebble and FreeRADIUS images (:mod:`ikev2_vpn_lab.pebble`, :mod:`ikev2_vpn_lab.radius`);
- the bench image for clients, targets and the flood in benchmarks: the server's image
  plus iperf3 from Debian (over the same mirror the base image came from);
- the browser image for the web console's tests (:mod:`ikev2_vpn_lab.browser`).
"""

from __future__ import annotations

from dataclasses import dataclass

import docker
from docker.errors import ImageNotFound

from ikev2_vpn_helper.base import Log
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.image import build_text

from .browser import ensure_browser_image
from .pebble import ensure_pebble_image
from .radius import ensure_radius_image

DOCKERFILE = """\
ARG SERVER_IMAGE
FROM ${SERVER_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iperf3 \\
 && rm -rf /var/lib/apt/lists/*
"""
REPOSITORY = "ikev2-vpn-bench"
LABEL_SERVER = "ikev2-vpn.bench.server-image"


def ensure_bench_image(engine: docker.DockerClient, server_image: str, log: Log = print) -> str:
    """The bench image for ``server_image``: reused while that image is unchanged."""
    try:
        server_id = str(engine.images.get(server_image).id)
    except ImageNotFound:
        raise HelperError(f"image {server_image} does not exist; bench/run builds it") from None
    tag = f"{REPOSITORY}:{server_id.removeprefix('sha256:')[:12]}"
    try:
        found = engine.images.get(tag)
        if (found.labels or {}).get(LABEL_SERVER) == server_id:
            return tag
    except ImageNotFound:
        pass
    log(f"bench: building {tag} (iperf3 on {server_image})")
    build_text(
        engine,
        DOCKERFILE,
        tag=tag,
        buildargs={"SERVER_IMAGE": server_image},
        what="bench",
        log=log,
        labels={LABEL_SERVER: server_id},
    )
    return tag


@dataclass(frozen=True)
class LabImages:
    """The tags of the tool images a test session uses."""

    pebble: str
    radius: str
    bench: str
    browser: str


def ensure_lab_images(
    engine: docker.DockerClient, server_image: str, log: Log = print
) -> LabImages:
    """Build whichever of the lab's images is missing (each reused while it exists)."""
    return LabImages(
        pebble=ensure_pebble_image(engine, log=log),
        radius=ensure_radius_image(engine, log=log),
        bench=ensure_bench_image(engine, server_image, log),
        browser=ensure_browser_image(engine, log=log),
    )
