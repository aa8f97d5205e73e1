"""End-to-end fixtures: real server and client containers on private Docker networks.

The tests never skip: without a Docker engine or the image they fail and say what to do.
Every container, network and volume is labelled with the run id and removed afterwards.
Test networks use the benchmarking range 198.18.0.0/15 and keep clear of every address the
host talks to; every image a test needs is built before the first of them exists (the ARM
images build beside the tests, see arm_builds, for lack of time, not of safety); nothing
is sent to public addresses.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import docker
import pytest

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_helper import platforms
from ikev2_vpn_helper.errors import HelperError
from ikev2_vpn_helper.image import (
    BuildPlan,
    build_for_platforms,
    host_extra_cas,
    read_ca_files,
    repository_root,
)
from ikev2_vpn_helper.vm import arm
from ikev2_vpn_lab.images import LabImages, ensure_lab_images
from ikev2_vpn_lab.lab import Lab

IMAGE = os.environ.get("VPN_TEST_IMAGE", "ikev2-vpn:test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
    # The ARM tests last: their images build under emulation while the others run.
    items.sort(key=lambda item: "arm_images" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    try:
        client = eng.connect_engine()
    except HelperError as error:
        pytest.fail(f"end-to-end tests need a Docker engine: {error}", pytrace=False)
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"image {IMAGE} does not exist; build it with `ikev2-vpn-helper build --tag {IMAGE}` "
            "(tests/run does)",
            pytrace=False,
        )
    return client


@pytest.fixture(scope="session")
def image(engine: docker.DockerClient) -> str:
    """The server image under test (VPN_TEST_IMAGE), known to exist."""
    return IMAGE


@pytest.fixture(scope="module")
def lab(engine: docker.DockerClient) -> Iterator[Lab]:
    """One lab (networks, target) per test module; everything it made is removed after."""
    with Lab(engine, image=IMAGE) as lab:
        yield lab


@pytest.fixture(scope="session", autouse=True)
def lab_images(request: pytest.FixtureRequest, engine: docker.DockerClient) -> LabImages:
    """Pebble, FreeRADIUS, the bench and the browser image, built when missing (about three
    minutes the first time, Chromium most of it; needs Debian's mirror once) before any
    test makes a network: a build must never download while a lab network exists. The ARM
    images and kernels, when a selected test uses them, start building here too."""
    try:
        images = ensure_lab_images(engine, IMAGE, log=print)
    except HelperError as error:
        pytest.fail(f"the end-to-end tests need the lab's images: {error}", pytrace=False)
    if any("arm_images" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("arm_builds")
    return images


@pytest.fixture(scope="session")
def arm_builds() -> Iterator[dict[str, Future[str]]]:
    """The server's linux/arm64 and linux/arm/v7 images built from this checkout under
    binfmt emulation (VPN_TEST_IMAGE plus -arm64 / -armv7, the first time each on a new
    Debian base of its architecture), and Debian's kernel for each, in the background.

    Each build is one emulated CPU's work (dpkg runs one maintainer script at a time) for up
    to about 20 minutes, so they run beside the other tests, which go first (see
    pytest_collection_modifyitems). They download from Debian's mirror while lab networks
    exist: the lab's subnets keep clear of every address this host talks to, the mirror's
    included (ikev2_vpn_helper.hostnet), so a network cannot cut them off."""
    wanted = [platforms.ARM64, platforms.ARMV7]
    plan = BuildPlan(context=repository_root(), ca_pems=tuple(read_ca_files(host_extra_cas())))

    def build(platform: platforms.Platform) -> str:
        own = eng.connect_engine()  # a client per thread
        tag = platforms.tag_with_suffix(IMAGE, platform)
        tags = build_for_platforms(
            own, [platform], tag, plan, log=lambda line: print(f"[{platform.suffix}] {line}")
        )
        arm.ensure_kit(arm.target_for(platform.docker), log=print)
        return tags[platform]

    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        yield {platform.docker: pool.submit(build, platform) for platform in wanted}


@pytest.fixture(scope="session")
def arm_images(arm_builds: dict[str, Future[str]]) -> dict[str, str]:
    """The ARM images' tags, once both are built (see arm_builds)."""
    try:
        return {name: future.result() for name, future in arm_builds.items()}
    except HelperError as error:
        pytest.fail(f"the ARM tests need their images and kernels: {error}", pytrace=False)


@pytest.fixture(scope="session")
def pebble_image(lab_images: LabImages) -> str:
    """The image of Pebble, the test ACME server."""
    return lab_images.pebble


@pytest.fixture(scope="session")
def radius_image(lab_images: LabImages) -> str:
    """The image of FreeRADIUS (Debian's package)."""
    return lab_images.radius


CmsVerify = Callable[[bytes, bytes], "subprocess.CompletedProcess[bytes]"]


@pytest.fixture(scope="session")
def cms_verify(tmp_path_factory: pytest.TempPathFactory) -> CmsVerify:
    """`openssl cms -verify` on the host: a signed profile (DER) against one trusted root
    (PEM) and nothing else; the signed content on success."""
    directory = tmp_path_factory.mktemp("cms")

    def verify(signed: bytes, root_pem: bytes) -> subprocess.CompletedProcess[bytes]:
        (directory / "signed.der").write_bytes(signed)
        (directory / "root.pem").write_bytes(root_pem)
        command = ["openssl", "cms", "-verify", "-inform", "DER", "-binary", "-purpose", "any"]
        command += ["-in", str(directory / "signed.der"), "-CAfile", str(directory / "root.pem")]
        return subprocess.run(command, capture_output=True, check=False)

    return verify
