"""Client profiles on disk: ``/data/clients/<user>/``, one directory per account.

Every file is rendered in full (:func:`profile_files`, pure), then written atomically and
only when its content changed, so a restart that changes nothing touches nothing and the
callers can tell which users' profiles changed. Files the current generation no longer
makes (``ca.crt`` after a switch to Let's Encrypt, say) are removed, and so are the
directories of users who no longer exist (:func:`write_all`).

Directories are 0700 and files 0600 because profiles may carry passwords; ``ca.crt`` is
public and 0644. The live user management (adding or removing a user while the server
runs) calls :func:`write_profiles` and :func:`remove_profiles`; a lock keeps those calls
from interleaving.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from pydantic import SecretStr

from .. import defaults
from ..profiles import ProfileInput, Signer, android, apple, ca_fingerprint, linux, windows
from ..profiles.templating import render_profile
from ..render import Plan
from ..settings import Account, ProfilePasswords, Settings, check_username
from ..state.credentials import ServerCredentials
from ..state.files import atomic_write, ensure_dir, remove_stale_temporaries

log = logging.getLogger(__name__)

README_NAME: Final = "README.txt"
CA_NAME: Final = defaults.CA_CERT_NAME
PRIVATE: Final = 0o600  # may hold the password
PUBLIC: Final = 0o644  # the CA certificate

_LOCK = threading.RLock()


@dataclass(frozen=True)
class ProfileFile:
    name: str
    content: bytes
    description: str  # one line in the user's README.txt
    mode: int = PRIVATE
    has_password: bool = False  # when the input carries one
    same: Callable[[bytes, bytes], bool] = bytes.__eq__  # (on disk, new): nothing to write


def clients_dir(data_dir: Path) -> Path:
    return data_dir / defaults.CLIENTS_DIR_NAME


def user_dir(user: str, data_dir: Path) -> Path:
    """``<data_dir>/clients/<user>``. User names are checked: they become a path."""
    if problem := check_username(user):
        raise ValueError(problem)
    return clients_dir(data_dir) / user


def profile_input(plan: Plan, account: Account) -> ProfileInput:
    """What ``account``'s profiles depend on, all of it in the server's plan (at start)."""
    return ProfileInput(
        host=plan.host,
        user=account.name,
        password=_password(account, plan.profile_passwords),
        ca=plan.credentials.ca,
        esp_gcm=plan.backend.esp_gcm,
        dns=plan.dns,
        pool_v4=plan.pool_v4,
        always_on=plan.profile_always_on,
        ipv6=plan.pool_v6 is not None,
        split=plan.split,
        signer=signer(plan.credentials),
    )


def signer(credentials: ServerCredentials) -> Signer:
    """The server certificate and key sign Apple profiles; the chain goes along."""
    chain = [*credentials.intermediates, *([credentials.ca] if credentials.ca else [])]
    key = load_pem_private_key(credentials.key_pem, password=None)
    return Signer(credentials.leaf, tuple(chain), key)


def profile_for(
    settings: Settings,
    account: Account,
    *,
    host: str,
    ca: x509.Certificate | None,
    esp_gcm: bool,
    signer: Signer | None = None,
) -> ProfileInput:
    """The same from the settings and the facts the start left (``ikev2-vpn users`` and
    ``share`` run in their own process, without a Plan)."""
    return ProfileInput(
        host=host,
        user=account.name,
        password=_password(account, settings.profile_passwords),
        ca=ca,
        esp_gcm=esp_gcm,
        dns=settings.dns,
        pool_v4=settings.pool_v4,
        always_on=settings.profile_always_on,
        ipv6=settings.pool_v6 is not None,
        split=settings.split_tunnel(),
        signer=signer,
    )


def _password(account: Account, passwords: ProfilePasswords) -> SecretStr | None:
    return account.password if passwords is ProfilePasswords.INCLUDE else None


# --- rendering (pure) ---------------------------------------------------------------------


def profile_files(profile: ProfileInput) -> tuple[ProfileFile, ...]:
    """Every file of one user's directory, README.txt last."""
    password = profile.password is not None
    files = [
        ProfileFile(
            apple.FILE_NAME,
            apple.mobileconfig(profile),
            "iPhone, iPad, Mac: open it, then install it in Settings"
            + (" (it brings the CA along)" if profile.ca is not None else ""),
            has_password=password,
            same=apple.same_profile,
        ),
        ProfileFile(
            android.SSWAN_FILE_NAME,
            android.sswan(profile),
            "Android, strongSwan VPN Client app: open it with the app",
        ),
        ProfileFile(
            android.BUILTIN_FILE_NAME,
            android.builtin_instructions(profile).encode(),
            "Android 11 and later, built-in VPN client: what to type, field by field",
        ),
        ProfileFile(
            windows.SCRIPT_NAME,
            windows.windows_script(profile),
            "Windows 10/11: run it in PowerShell (its first lines say how)",
        ),
        ProfileFile(
            windows.MANUAL_NAME,
            windows.windows_manual(profile),
            "Windows 10/11: the same, set up by hand in Settings",
        ),
        ProfileFile(
            linux.swanctl_name(profile),
            linux.swanctl_conf(profile),
            "Linux, strongSwan's swanctl (its first lines say how to install it)",
            has_password=password,
        ),
        ProfileFile(
            linux.nmconnection_name(profile),
            linux.nmconnection(profile),
            "Linux, NetworkManager with its strongSwan plugin (first lines: how)",
            has_password=password,
        ),
    ]
    if profile.ca is not None:
        files.append(
            ProfileFile(
                CA_NAME,
                profile.ca.public_bytes(Encoding.PEM),
                "the server's CA certificate, for devices that import it by hand",
                mode=PUBLIC,
            )
        )
    files.append(ProfileFile(README_NAME, _readme(profile, files), "this list"))
    return tuple(files)


def _readme(profile: ProfileInput, files: Sequence[ProfileFile]) -> bytes:
    return render_profile(
        "README.txt.j2",
        user=profile.user,
        host=profile.host,
        password_included=profile.password is not None,
        ca_fingerprint=ca_fingerprint(profile.ca) if profile.ca is not None else None,
        signed=profile.signer is not None,
        with_password=[file.name for file in files if file.has_password],
        files=files,
        width=max(len(file.name) for file in files),
    ).encode()


# --- writing ------------------------------------------------------------------------------


def write_profiles(profile: ProfileInput, data_dir: Path) -> list[Path]:
    """Bring ``<data_dir>/clients/<user>/`` up to date; return the paths that changed
    (written or removed). An empty list: the profiles were already current."""
    files = profile_files(profile)
    directory = user_dir(profile.user, data_dir)
    with _LOCK:
        ensure_dir(clients_dir(data_dir))
        ensure_dir(directory)
        remove_stale_temporaries(directory)
        changed = [directory / file.name for file in files if _update(directory, file)]
        expected = {file.name for file in files}
        for entry in sorted(directory.iterdir()):
            if entry.name not in expected:
                _remove(entry)
                changed.append(entry)
    return changed


def _update(directory: Path, file: ProfileFile) -> bool:
    """Write ``file`` unless it is there with that content; True when written."""
    path = directory / file.name
    if path.is_file() and not path.is_symlink() and file.same(path.read_bytes(), file.content):
        if path.stat().st_mode & 0o777 != file.mode:
            path.chmod(file.mode)
        return False
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    atomic_write(path, file.content, mode=file.mode)
    return True


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)


def remove_profiles(user: str, data_dir: Path) -> bool:
    """Delete ``user``'s profile directory; False when there was none."""
    directory = user_dir(user, data_dir)
    with _LOCK:
        if not directory.exists() and not directory.is_symlink():
            return False
        _remove(directory)
    return True


def write_all(profiles: Iterable[ProfileInput], data_dir: Path) -> dict[str, list[Path]]:
    """Profiles for every account, and no directory for anyone else.

    Returns what changed, by user: the changed paths of users whose profiles were written,
    and the removed directory of users who no longer exist. Empty when nothing changed.
    """
    changes: dict[str, list[Path]] = {}
    with _LOCK:
        ensure_dir(clients_dir(data_dir))
        current = set()
        for profile in profiles:
            current.add(profile.user)
            try:
                changed = write_profiles(profile, data_dir)
            except ValueError as exc:
                # One user's profiles that cannot be rendered must not stop the server
                # (and with it every other user). The writers quote names and addresses in their
                # messages, never a password (passwords are checked in settings).
                log.error("client profiles of user %r not written: %s", profile.user, exc)
                continue
            if changed:
                changes[profile.user] = changed
        for entry in sorted(clients_dir(data_dir).iterdir()):
            if entry.name not in current and (entry.is_dir() or entry.is_symlink()):
                _remove(entry)
                changes[entry.name] = [entry]
    return changes
