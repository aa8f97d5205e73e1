"""The image for clients, targets and the flood in benchmarks: the server's image plus
iperf3 from Debian (over the same mirror the base image came from)."""

from __future__ import annotations

import io

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from ikev2_vpn_helper.base import Log
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.image import follow_build

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
    try:
        messages = engine.api.build(
            fileobj=io.BytesIO(DOCKERFILE.encode()),
            tag=tag,
            buildargs={"SERVER_IMAGE": server_image},
            labels={LABEL_SERVER: server_id},
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        output = follow_build(messages, log, verbose=False)
    except (APIError, DockerException) as error:
        raise HelperError(f"the bench image build failed: {error}") from None
    if output.error or output.image_id is None:
        for line in output.lines[-25:]:
            log(f"  | {line}")
        raise HelperError(f"the bench image build failed: {output.error or 'no image id'}")
    return tag
