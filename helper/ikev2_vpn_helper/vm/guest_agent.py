"""Runs inside the VM lab's guest (not on the host): executes commands the host sends.

One request per TCP connection: a JSON line ``{"argv": [...], "stdin": base64,
"timeout": s}``; the answer is a JSON line ``{"rc": n, "stdout": base64, "stderr": base64}``.
It listens on the guest's user-network address only; QEMU forwards one port of the host's
loopback to it, and nothing else reaches it (the guest's firewall drops the port elsewhere).
Standard library only: the guest has python3-minimal.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading

ADDRESS = "10.0.2.15"
PORT = 7000


def answer(request: dict[str, object]) -> dict[str, object]:
    try:
        argv = [str(part) for part in request["argv"]]  # type: ignore[attr-defined]
        completed = subprocess.run(
            argv,
            input=base64.b64decode(str(request.get("stdin", ""))),
            capture_output=True,
            timeout=float(str(request.get("timeout", 600))),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"rc": 124, "stdout": "", "stderr": base64.b64encode(b"timed out").decode()}
    except (OSError, ValueError, KeyError, TypeError) as error:
        return {"rc": 127, "stdout": "", "stderr": base64.b64encode(str(error).encode()).decode()}
    return {
        "rc": completed.returncode,
        "stdout": base64.b64encode(completed.stdout).decode(),
        "stderr": base64.b64encode(completed.stderr).decode(),
    }


def serve(connection: socket.socket) -> None:
    with connection, connection.makefile("rwb") as stream:
        try:
            request = json.loads(stream.readline())
        except ValueError:
            return
        stream.write(json.dumps(answer(request)).encode() + b"\n")
        stream.flush()


def main() -> int:
    # The minimal Python has no socketserver: a thread per connection by hand.
    with socket.create_server((ADDRESS, PORT), reuse_port=False) as server:
        print(f"listening on {ADDRESS}:{PORT}", flush=True)
        while True:
            connection, _ = server.accept()
            threading.Thread(target=serve, args=(connection,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
