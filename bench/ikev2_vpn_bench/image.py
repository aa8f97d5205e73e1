"""The image for clients, targets and the flood in benchmarks: the server's image plus
iperf3 from Debian (over the same mirror the base image came from)."""

from __future__ import annotations

import docker
from docker.errors import ImageNotFound

from ikev2_vpn_helper.base import Log
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.image import build_text

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
