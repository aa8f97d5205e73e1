"""The Debian base image the server image is built on.

In order: the requested image when the engine has it, a pull when a registry answers
within a short timeout, the local debootstrap base when one was made before, else a new
one: ``debootstrap --variant=minbase``, trimmed the way Debian's official ``-slim`` images
are (debuerreotype's slimify and minimizing config), then ``docker load`` of an image
archive written here. Each step is per platform: a local image counts only when it is built
for that architecture, and the debootstrap base of another architecture gets its own tag.

``docker import`` would be shorter, but Docker 20.10 ignores its ``--platform`` and records
the engine's own architecture; a loaded archive carries the config written for it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import DockerException, ImageNotFound

from .errors import HelperError
from .platforms import Platform, describe, host_platform, matches

DEFAULT_BASE = "debian:trixie-slim"
LOCAL_BASE_REPOSITORY = "ikev2-vpn-base"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
PULL_TIMEOUT_S = 20  # between two progress messages, not for the whole pull
# The run config of the official image: its PATH and a shell.
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
BASE_CMD = ("bash",)

# What Debian's "slim" images leave out, and keep out of later package installs
# (debuerreotype's .slimify-excludes / .slimify-includes).
SLIM_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/groff/*",
    "/usr/share/info/*",
    "/usr/share/linda/*",
    "/usr/share/lintian/overrides/*",
    "/usr/share/locale/*",
    "/usr/share/man/*",
)
SLIM_INCLUDES = (
    "/usr/share/doc/*/copyright",
    "/usr/share/doc/kde/HTML/C/*",
    "/usr/share/gnome/help/*/C/*",
    "/usr/share/locale/all_languages",
    "/usr/share/locale/currency/*",
    "/usr/share/locale/l10n/*",
    "/usr/share/locale/languages",
    "/usr/share/locale/locale.alias",
    "/usr/share/omf/*/*-C.emf",
)
# Left behind by debootstrap; caches and logs have no place in an image layer.
LEFTOVER_GLOBS = (
    "var/lib/apt/lists/*_*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/log/apt/*",
    "var/log/*.log",
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class BaseChoice:
    """The base image to build on and how it was obtained (for the build log)."""

    image: str
    how: str


def debian_suite(reference: str) -> str | None:
    """``debian:trixie-slim`` -> ``trixie``; None for anything but an official Debian image."""
    name, _, tag = reference.rpartition(":")
    if "/" in tag or name not in {"debian", "library/debian", "docker.io/library/debian"}:
        return None
    suite = tag.removesuffix("-slim")
    return suite if suite.isalpha() else None


def local_base_tag(suite: str, platform: Platform | None = None) -> str:
    """``ikev2-vpn-base:trixie`` for the engine's own platform, ``...:trixie-arm64`` else."""
    return f"{LOCAL_BASE_REPOSITORY}:{suite}" + (f"-{platform.suffix}" if platform else "")


def ensure_base_image(
    engine: docker.DockerClient,
    reference: str = DEFAULT_BASE,
    *,
    platform: Platform | None = None,
    rebuild: bool = False,
    mirror: str = DEFAULT_MIRROR,
    security_mirror: str = DEFAULT_SECURITY_MIRROR,
    log: Log = print,
) -> BaseChoice:
    """Find, pull or make the base image for ``platform`` (default: the engine's own);
    see the module docstring for the order."""
    host = host_platform(engine)
    platform = platform or host
    why_not_pulled = "not tried"
    if not rebuild:
        if image_exists(engine, reference, platform):
            return BaseChoice(reference, "present locally")
        log(f"base: {reference} for {platform} is not present locally; trying to pull it")
        why_not_pulled = try_pull(engine, reference, platform)
        if not why_not_pulled:
            return BaseChoice(reference, "pulled from the registry")
    suite = debian_suite(reference)
    if suite is None:
        raise HelperError(
            f"base image {reference} is not present and could not be pulled "
            f"({why_not_pulled}); load it into the engine or use a debian:<suite> base"
        )
    local = local_base_tag(suite, None if platform == host else platform)
    if not rebuild and image_exists(engine, local, platform):
        return BaseChoice(local, f"local debootstrap base (no registry: {why_not_pulled})")
    log(f"base: making {local} for {platform} with debootstrap from {mirror}")
    make_debootstrap_base(
        engine,
        suite,
        local,
        platform=platform,
        mirror=mirror,
        security_mirror=security_mirror,
        log=log,
    )
    return BaseChoice(local, "made with debootstrap")


def image_exists(
    engine: docker.DockerClient, reference: str, platform: Platform | None = None
) -> bool:
    """Whether the engine has ``reference``, built for ``platform`` when one is given."""
    try:
        found = engine.images.get(reference)
    except ImageNotFound:
        return False
    return platform is None or matches(found.attrs, platform)


def try_pull(engine: docker.DockerClient, reference: str, platform: Platform) -> str:
    """Pull ``reference`` for ``platform``; an empty string on success, else why it failed."""
    name, _, tag = reference.rpartition(":")
    try:
        # A client of its own (same DOCKER_HOST): its timeout bounds each wait for the
        # registry's next progress message, so an unreachable registry fails fast.
        api = docker.from_env(timeout=PULL_TIMEOUT_S).api
        messages = api.pull(name, tag=tag, stream=True, decode=True, platform=platform.docker)
        for message in messages:
            if "error" in message:
                return str(message["error"])
    except DockerException as error:  # before RequestException: APIError is both
        return str(getattr(error, "explanation", None) or error)
    except requests.RequestException as error:
        return f"no answer within {PULL_TIMEOUT_S} s ({type(error).__name__})"
    if image_exists(engine, reference, platform):
        return ""
    return "the pull ended without an image for the platform"


# --- debootstrap ---------------------------------------------------------------------------


def make_debootstrap_base(
    engine: docker.DockerClient,
    suite: str,
    tag: str,
    *,
    platform: Platform,
    mirror: str = DEFAULT_MIRROR,
    security_mirror: str = DEFAULT_SECURITY_MIRROR,
    log: Log = print,
) -> str:
    """Bootstrap, trim and load a Debian ``suite`` for ``platform`` as image ``tag``;
    return the image id. Another architecture's second stage runs under emulation."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise HelperError(
            "no Debian base image and no registry; install debootstrap on this host "
            "(apt-get install debootstrap) or load debian:trixie-slim into the engine"
        )
    if os.geteuid() != 0:
        raise HelperError(
            "no Debian base image and no registry; making one with debootstrap needs root "
            "(run `sudo ikev2-vpn-helper build`) or load debian:trixie-slim into the engine"
        )
    workdir = Path(tempfile.mkdtemp(prefix="ikev2-vpn-base-", dir="/var/tmp"))
    root = workdir / "rootfs"
    arch = platform.debian_arch
    try:
        log(f"base: debootstrap --arch={arch} --variant=minbase {suite} (minutes when emulated)")
        _run(
            [debootstrap, f"--arch={arch}", "--variant=minbase", suite, str(root), mirror],
            what="debootstrap",
        )
        slim_rootfs(root, suite, mirror, security_mirror)
        layer = workdir / "layer.tar"
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(layer), "."], what="tar")
        archive = workdir / "image.tar"
        created_by = f"debootstrap --arch={arch} --variant=minbase {suite} (ikev2-vpn-helper)"
        write_image_archive(archive, layer, tag, platform, created_by=created_by)
        log(f"base: loading {tag} ({platform})")
        load_image_archive(engine, archive)
    finally:
        _remove_workdir(workdir)
    attrs = engine.images.get(tag).attrs
    if not matches(attrs, platform):
        raise HelperError(f"the engine loaded {tag} as {describe(attrs)}, not {platform}")
    log(f"base: {tag} is {str(attrs['Id'])[:19]}")
    return str(attrs["Id"])


# --- the image archive `docker load` reads ---------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_config(
    platform: Platform, diff_id: str, *, created: str, created_by: str
) -> dict[str, Any]:
    """The image config of a one-layer base: architecture, PATH and shell, the layer's id."""
    config: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": "linux",
        "created": created,
        "config": {"Env": list(BASE_ENV), "Cmd": list(BASE_CMD)},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": created_by}],
    }
    if platform.variant:
        config["variant"] = platform.variant
    return config


def write_image_archive(
    archive: Path, layer: Path, tag: str, platform: Platform, *, created_by: str
) -> str:
    """Write the ``docker load`` archive of one layer (``docker save``'s layout) as
    ``archive``; return the image id. The layer is streamed from its file, not read in."""
    layer_sha = sha256_file(layer)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = json.dumps(
        image_config(platform, f"sha256:{layer_sha}", created=created, created_by=created_by),
        sort_keys=True,
    ).encode()
    config_sha = hashlib.sha256(config).hexdigest()
    manifest = [
        {"Config": f"{config_sha}.json", "RepoTags": [tag], "Layers": [f"{layer_sha}/layer.tar"]}
    ]
    with tarfile.open(archive, "w") as out:
        _add_bytes(out, f"{config_sha}.json", config)
        out.add(layer, arcname=f"{layer_sha}/layer.tar")
        _add_bytes(out, "manifest.json", json.dumps(manifest).encode())
    return f"sha256:{config_sha}"


def _add_bytes(out: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mode = 0o644
    member.mtime = int(time.time())
    out.addfile(member, io.BytesIO(data))


def load_image_archive(engine: docker.DockerClient, archive: Path) -> None:
    """``docker load`` the archive, streamed from its file."""
    try:
        with archive.open("rb") as stream:
            for message in engine.api.load_image(stream):
                if "error" in message:
                    raise HelperError(f"docker load failed: {str(message['error']).strip()}")
    except DockerException as error:
        raise HelperError(f"docker load failed: {error}") from None


def _run(argv: list[str], *, what: str) -> None:
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        lines = (completed.stderr or completed.stdout).strip().splitlines()
        raise HelperError(
            f"{what} failed with status {completed.returncode}: "
            f"{lines[-1] if lines else 'no output'}"
        )


def _remove_workdir(workdir: Path) -> None:
    """Delete the scratch tree, unless debootstrap left something mounted inside it."""
    prefix = str(workdir) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        busy = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    if busy:
        raise HelperError(
            f"debootstrap left {busy[0]} mounted; unmount it and delete {workdir} by hand"
        )
    shutil.rmtree(workdir, ignore_errors=True)


# --- trimming (pure file operations on a root tree; unit-tested without root) ----------------


def slim_rootfs(
    root: Path,
    suite: str,
    mirror: str = DEFAULT_MIRROR,
    security_mirror: str = DEFAULT_SECURITY_MIRROR,
) -> None:
    """Make a debootstrap tree look like Debian's official slim image."""
    for pattern in SLIM_EXCLUDES:
        trim_tree(root, pattern)
    for pattern in LEFTOVER_GLOBS:
        for path in root.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
    for relative, text, mode in minimizing_config_files():
        _write(root / relative, text, mode)
    _write(
        root / "etc/apt/sources.list.d/debian.sources",
        debian_sources(suite, mirror, security_mirror),
        0o644,
    )
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    # debootstrap copies the host's files; the engine provides its own at run time.
    for name in ("etc/resolv.conf", "etc/hostname"):
        _write(root / name, "", 0o644)


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def is_kept(path: str) -> bool:
    """Whether a path under an excluded directory survives slimming (dpkg fnmatch rules)."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in SLIM_INCLUDES)


def trim_tree(root: Path, pattern: str) -> None:
    """Delete what ``pattern`` (``/dir/*``) excludes, then dangling links and empty dirs."""
    top = root / pattern.removesuffix("/*").lstrip("/")
    if not top.is_dir() or top.is_symlink():
        return
    for current, _dirs, files in os.walk(top, topdown=False):
        for name in files:
            path = Path(current, name)
            if not path.is_symlink() and not is_kept("/" + path.relative_to(root).as_posix()):
                path.unlink()
    while _prune_once(root, top):
        pass


def _prune_once(root: Path, top: Path) -> bool:
    pruned = False
    for current, dirs, files in os.walk(top, topdown=False):
        for name in [*dirs, *files]:
            path = Path(current, name)
            if path.is_symlink():
                if not _link_target_exists(root, path):
                    path.unlink()
                    pruned = True
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
                pruned = True
    return pruned


def _link_target_exists(root: Path, link: Path) -> bool:
    """Follow ``link`` (and the links it points to) inside ``root``, never the host's /.

    Alternatives are chains (/usr/share/man/man1/x.1.gz -> /etc/alternatives/x.1.gz -> ...),
    so one hop is not enough to tell a dangling link.
    """
    current = link
    for _hop in range(40):
        target = os.readlink(current)
        current = root / target.lstrip("/") if target.startswith("/") else current.parent / target
        if not current.is_symlink():
            return current.exists()
    return False


def dpkg_slim_config() -> str:
    """``/etc/dpkg/dpkg.cfg.d/docker``: keeps later ``apt-get install`` runs slim too."""
    lines = [
        "# Slim variant of the Debian base image (made by ikev2-vpn-helper like debuerreotype).",
        "# Files that containers rarely need are left out, and this keeps them out.",
        "",
        *(f"path-exclude {pattern}" for pattern in SLIM_EXCLUDES),
        "",
        *(f"path-include {pattern}" for pattern in SLIM_INCLUDES),
    ]
    return "\n".join(lines) + "\n"


_APT_CLEAN = (
    '"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
    '/var/cache/apt/*.bin || true";'
)


def minimizing_config_files() -> list[tuple[str, str, int]]:
    """(path, content, mode) of the container-friendly dpkg/apt settings of official images."""
    return [
        ("etc/dpkg/dpkg.cfg.d/docker", dpkg_slim_config(), 0o644),
        # Package installs happen in image builds: no fsync after each file.
        ("etc/dpkg/dpkg.cfg.d/docker-apt-speedup", "force-unsafe-io\n", 0o644),
        # Services must not start during `apt-get install` in a build.
        ("usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755),
        (
            "etc/apt/apt.conf.d/docker-clean",
            f"DPkg::Post-Invoke {{ {_APT_CLEAN} }};\n"
            f"APT::Update::Post-Invoke {{ {_APT_CLEAN} }};\n"
            'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n',
            0o644,
        ),
        ("etc/apt/apt.conf.d/docker-no-languages", 'Acquire::Languages "none";\n', 0o644),
        ("etc/apt/apt.conf.d/docker-gzip-indexes", 'Acquire::GzipIndexes "true";\n', 0o644),
        (
            "etc/apt/apt.conf.d/docker-autoremove-suggests",
            'Apt::AutoRemove::SuggestsImportant "false";\n',
            0o644,
        ),
    ]


def debian_sources(suite: str, mirror: str, security_mirror: str) -> str:
    """deb822 sources like the official image's: the suite, its updates and security."""
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    return (
        f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\n"
        f"Components: main\nSigned-By: {keyring}\n\n"
        f"Types: deb\nURIs: {security_mirror}\nSuites: {suite}-security\n"
        f"Components: main\nSigned-By: {keyring}\n"
    )
