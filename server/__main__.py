"""``python -m server``: start upperecho; one clear line and a non-zero status on failure (S2)."""

from __future__ import annotations

import os
import sys

from server import logs
from server.app import Server, StartError
from server.config import parse
from server.options import UsageError


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level)
    server = Server(config)
    try:
        host, port = server.bind()
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    server.raise_fd_limit()
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(server.texts.listening.format(address=shown), flush=True)
    server.warn_if_exposed(host)
    status = server.serve()
    if not logs.close(server.console_time_left()):
        os._exit(status)  # the console is stuck (S6): exiting must not wait for it, nor flush it
    return status


if __name__ == "__main__":
    sys.exit(main())
