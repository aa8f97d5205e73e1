"""``ikev2-vpn``: the container's command line.

ikev2-vpn run      start the server (the image's default command)
ikev2-vpn health   exit 0 when charon answers with the configuration loaded
"""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import ConfigError, ConfigErrors, SystemSetupError


class _Formatter(logging.Formatter):
    """Same timestamp shape as charon's lines, which share the container log."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [VPN] %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            record.message = f"{record.levelname.lower()}: {record.message}"
        return super().formatMessage(record)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _fail(lines: list[str]) -> int:
    for line in lines:
        print(f"ikev2-vpn: error: {line}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ikev2-vpn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", default="run", choices=["run", "health"])
    args = parser.parse_args(argv)
    if args.command == "health":
        from .health import main as health

        return health()

    _configure_logging()
    from .run.charon import StopRequested
    from .run.vici_session import ViciError
    from .start import run

    try:
        return run()
    except ConfigErrors as exc:
        return _fail([error.line() for error in exc.errors])
    except ConfigError as exc:
        return _fail([exc.line()])
    except (SystemSetupError, ViciError) as exc:
        return _fail([str(exc)])
    except StopRequested:
        return 0


if __name__ == "__main__":
    sys.exit(main())
