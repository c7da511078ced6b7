"""``python -m server``: start upperecho; one clear line and a non-zero status on failure (S2)."""

from __future__ import annotations

import os
import sys

from server import logs
from server.app import Server, StartError
from server.config import parse
from server.metrics import Collector, Endpoint, MetricsError
from server.options import UsageError


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    supervised = config.processes > 1
    # The supervisor forks, so it keeps no thread of its own: its few lines are written
    # directly, and each server process starts its own console writer (S6).
    logs.setup(config.log_level, config.log_format, background=not supervised)
    try:
        if supervised:
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
            if supervised:  # the supervisor serves the sum of its processes' counts
                endpoint = server.serve_metrics(*config.metrics)
            else:
                endpoint = Endpoint(*config.metrics, Collector(server.workers))
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
        status = server.serve()
    finally:
        if endpoint is not None:
            endpoint.close()
    if not supervised and not logs.close(server.console_time_left()):
        os._exit(status)  # the console is stuck (S6): exiting must not wait for it, nor flush it
    return status


if __name__ == "__main__":
    sys.exit(main())
