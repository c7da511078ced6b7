"""``python -m server``: start upperecho; one clear line and a non-zero status on failure (S2)."""

from __future__ import annotations

import sys

from server.app import Server, StartError
from server.config import parse
from server.logs import setup
from server.metrics import Endpoint, MetricsError
from server.options import UsageError


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.reconfigure(line_buffering=True)
    setup(config.log_level, config.log_format)
    try:
        if config.processes > 1:
            from server.supervisor import Supervisor

            server = Supervisor(config)
        else:
            server = Server(config)
        host, port = server.bind()
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    endpoint = None
    if config.metrics is not None:
        try:
            endpoint = Endpoint(*config.metrics, server.workers)
        except MetricsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    server.raise_fd_limit()
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(server.texts.listening.format(address=shown), flush=True)
    if endpoint is not None:
        print(f"metrics on {endpoint.url}", flush=True)
    server.warn_if_exposed(host)
    try:
        return server.serve()
    finally:
        if endpoint is not None:
            endpoint.close()


if __name__ == "__main__":
    sys.exit(main())
