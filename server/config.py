"""Command line and environment: every flag also has an ``UPPERECHO_*`` variable; flags win."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.logs import LEVELS
from server.messages import LANGS
from server.options import ENV_PREFIX, Parser, bounded, from_env, host
from statemachine.session import DEFAULT_IDLE_TIMEOUT, DEFAULT_LINE_TIMEOUT, DEFAULT_MAX_LINE, FRAMINGS, Limits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_MAX_CONNECTIONS = 10000
DEFAULT_DRAIN_TIMEOUT = 5.0
DEFAULT_OUTPUT_LIMIT = 1 << 20
# The longest wait epoll accepts (about 24.8 days of milliseconds in a C int), in whole days.
MAX_DURATION = 24 * 24 * 3600.0


def default_workers() -> int:
    """One event loop under the GIL, where more threads only take turns (measured in
    docs/benchmarks.md); one per core, up to 8, on a free-threaded Python."""
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    return 1 if gil_enabled else max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class Config:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_line: int = DEFAULT_MAX_LINE
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    line_timeout: float = DEFAULT_LINE_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    framing: str = "line"
    log_level: str = "info"
    lang: str = "es"
    output_limit: int = DEFAULT_OUTPUT_LIMIT

    @property
    def limits(self) -> Limits:
        return Limits(
            framing=self.framing,
            max_line=self.max_line,
            idle_timeout=self.idle_timeout,
            line_timeout=self.line_timeout,
        )


# name, converter, default, help; the environment variable is UPPERECHO_<NAME>
_OPTIONS: list[tuple[str, Callable[[str], Any], Any, str, Sequence[str] | None]] = [
    ("host", host, DEFAULT_HOST, "address to listen on (default %(default)s)", None),
    ("port", bounded(int, 0, 65535), DEFAULT_PORT, "TCP port; 0 picks a free one (default %(default)s)", None),
    ("workers", bounded(int, 1, 256), None, "event-loop threads (default: 1 under the GIL, else one per core)", None),
    (
        "max-connections",
        bounded(int, 1),
        DEFAULT_MAX_CONNECTIONS,
        "open sessions before 'server busy' (default %(default)s)",
        None,
    ),
    ("max-line", bounded(int, 1), DEFAULT_MAX_LINE, "longest message in bytes (default %(default)s)", None),
    (
        "idle-timeout",
        bounded(float, 0),
        DEFAULT_IDLE_TIMEOUT,
        "seconds without input before closing; 0 = off (default %(default)s)",
        None,
    ),
    (
        "line-timeout",
        bounded(float, 0, MAX_DURATION),
        DEFAULT_LINE_TIMEOUT,
        "seconds a message may take from its first byte to its newline; 0 = off (default %(default)s)",
        None,
    ),
    (
        "drain-timeout",
        bounded(float, 0),
        DEFAULT_DRAIN_TIMEOUT,
        "seconds to finish closing and to shut down (default %(default)s)",
        None,
    ),
    ("framing", str, "line", "line (protocol v1) or raw (seed compatibility)", FRAMINGS),
    ("log-level", str, "info", "console detail (default %(default)s)", tuple(LEVELS)),
    ("lang", str, "es", "console language (default %(default)s)", LANGS),
]


def _parser() -> Parser:
    parser = Parser(
        prog="python -m server",
        description="upperecho: answers every line in upper case; DESCONEXION ends the session.",
        epilog=f"Every option can also be set with an environment variable, e.g. {ENV_PREFIX}PORT=5001; "
        "a flag wins over the variable.",
    )
    for name, convert, default, text, choices in _OPTIONS:
        parser.add_argument(f"--{name}", type=convert, choices=choices, default=None, help=text % {"default": default})
    parser.add_argument("-q", "--quiet", action="store_true", help="same as --log-level warning")
    return parser


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from flags, then environment variables, then defaults."""
    environ = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    values: dict[str, Any] = {}
    for name, convert, default, _, choices in _OPTIONS:
        attr = name.replace("-", "_")
        value = getattr(args, attr)
        if value is None:
            variable = ENV_PREFIX + attr.upper()
            if variable in environ:
                value = from_env(variable, environ[variable], convert, choices)
            else:
                value = default
        values[attr] = value
    if values["workers"] is None:
        values["workers"] = default_workers()
    if args.quiet:
        values["log_level"] = "warning"
    return Config(**values)
