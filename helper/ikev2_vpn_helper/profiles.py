"""``ikev2-vpn-helper profiles``: copy one user's client profiles out of a server container.

The server keeps them in ``/data/clients/<user>/`` (rewritten at every start). They are
copied with the engine's archive API, so the container may be running or stopped. Only
names and sizes are ever shown: some of the files hold the user's password.
"""

from __future__ import annotations

import errno
import io
import os
import tarfile
from pathlib import Path, PurePosixPath

from docker.errors import NotFound
from docker.models.containers import Container

# Facts about the server image come from the container package itself (pure data).
from ikev2_vpn.defaults import CLIENTS_DIR_NAME, DATA_DIR
from ikev2_vpn.settings import check_username

from .errors import HelperError

CLIENTS_PATH = PurePosixPath(DATA_DIR) / CLIENTS_DIR_NAME
PUBLIC_MODE = 0o644  # the most a copied file gets: group and others never write


def fetch_profiles(container: Container, user: str, out_dir: Path) -> list[Path]:
    """Copy ``/data/clients/<user>/`` of ``container`` into ``out_dir``; return the files."""
    if problem := check_username(user):
        raise HelperError(problem)
    try:
        chunks, _ = container.get_archive(str(CLIENTS_PATH / user))
    except NotFound:
        raise HelperError(_missing(container, user)) from None
    return extract_profiles(b"".join(chunks), user, out_dir)


def available_users(container: Container) -> list[str]:
    """The users the server has written profiles for."""
    try:
        chunks, _ = container.get_archive(str(CLIENTS_PATH))
    except NotFound:
        return []
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        return sorted(
            PurePosixPath(member.name).name
            for member in archive
            if member.isdir() and len(PurePosixPath(member.name).parts) == 2
        )


def _missing(container: Container, user: str) -> str:
    users = available_users(container)
    if not users:
        return (
            f"container {container.name} has no client profiles in {CLIENTS_PATH}; "
            "an image that makes them writes them at start"
        )
    return (
        f"container {container.name} has no profiles for user {user!r}; "
        f"it has profiles for: {', '.join(users)}"
    )


def extract_profiles(archive: bytes, user: str, out_dir: Path) -> list[Path]:
    """The regular files directly inside ``<user>/`` of a tar ``archive``, written to
    ``out_dir`` (made 0700) with their modes, at most 0644. Anything else in the archive
    (links, devices, deeper paths) is skipped; existing files are overwritten, never
    followed if they are symbolic links."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir.chmod(0o700)
    written = []
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if not member.isfile() or len(parts) != 2 or parts[0] != user:
                continue
            name = parts[1]
            if name in {".", ".."} or name.startswith(".") or "\\" in name:
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            target = out_dir / name
            _write(target, handle.read(), member.mode & PUBLIC_MODE)
            written.append(target)
    return sorted(written)


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise HelperError(f"{path} is a symbolic link; remove it or choose --out") from None
        raise HelperError(f"cannot write {path}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)


def describe(files: list[Path]) -> list[str]:
    """One line per file: its path and size (never its content)."""
    return [f"{path}  ({path.stat().st_size} bytes)" for path in files]
