"""``ikev2-vpn-helper users``: run ``ikev2-vpn users`` inside a server container.

Passwords travel on the command's standard input (``--password-stdin`` inside), never on a
command line: neither this host's process list nor the container's ``docker inspect`` ever
shows them.
"""

from __future__ import annotations

import getpass
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from docker.errors import APIError
from docker.models.containers import Container
from docker.utils.socket import STDERR, STDOUT, frames_iter

from .engine import ExecResult
from .errors import HelperError

COMMAND = ("ikev2-vpn", "users")
ACTIONS_WITH_PASSWORD = ("add", "passwd")


def run_users(container: Container, args: Sequence[str], stdin: bytes | None = None) -> ExecResult:
    """``ikev2-vpn users ARGS`` in ``container``; ``stdin`` is written to its standard input,
    which is then closed."""
    api = container.client.api
    argv = [*COMMAND, *args]
    try:
        exec_id = api.exec_create(
            container.id, argv, stdin=stdin is not None, stdout=True, stderr=True
        )["Id"]
        raw = api.exec_start(exec_id, socket=True)
    except APIError as error:
        raise HelperError(
            f"cannot run `ikev2-vpn users` in container {container.name}: {error.explanation}"
        ) from None
    # The unix socket under docker's wrapper: written to, then half-closed so the command
    # sees the end of its input.
    sock: socket.socket = getattr(raw, "_sock", raw)
    try:
        if stdin is not None:
            sock.sendall(stdin)
            sock.shutdown(socket.SHUT_WR)
        output: dict[int, bytes] = {STDOUT: b"", STDERR: b""}
        for stream, chunk in frames_iter(raw, tty=False):
            output[stream] = output.get(stream, b"") + chunk
    finally:
        raw.close()
    exit_code = api.exec_inspect(exec_id).get("ExitCode")
    return ExecResult(
        exit_code=exit_code if exit_code is not None else -1,
        stdout=output[STDOUT].decode(errors="replace"),
        stderr=output[STDERR].decode(errors="replace"),
    )


def read_password(password_file: Path | None, prompt: bool, user: str) -> str | None:
    """The password for ``add``/``passwd``: from a file ('-': standard input), typed at a
    prompt, or None (the server generates one and prints it once)."""
    if password_file is not None and prompt:
        raise HelperError("give --password-file or --prompt, not both")
    if password_file is not None:
        try:
            data = (
                sys.stdin.buffer.read() if str(password_file) == "-" else password_file.read_bytes()
            )
        except OSError as error:
            raise HelperError(
                f"cannot read password file {password_file}: {error.strerror}"
            ) from None
        text = data.decode("utf-8", errors="strict").removesuffix("\n").removesuffix("\r")
    elif prompt:
        if not sys.stdin.isatty():
            raise HelperError("--prompt needs a terminal; use --password-file FILE (or -)")
        text = getpass.getpass(f"new password of {user}: ")
        if getpass.getpass("again: ") != text:
            raise HelperError("the two passwords differ; nothing was changed")
    else:
        return None
    if not text:
        raise HelperError("the password is empty; nothing was changed")
    return text


def users_argv(
    action: str, name: str | None, extra: Sequence[str], with_password: bool
) -> list[str]:
    """The arguments of ``ikev2-vpn users`` inside the container (pure)."""
    argv = [action]
    if name is not None:
        argv.append(name)
    argv.extend(extra)
    if with_password:
        argv.append("--password-stdin")
    return argv
