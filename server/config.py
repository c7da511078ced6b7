"""Command line and environment: every flag also has an ``UPPERECHO_*`` variable; flags win."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from server.logs import LEVELS
from server.messages import LANGS
from statemachine.session import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_LINE, FRAMINGS, Limits

ENV_PREFIX = "UPPERECHO_"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_MAX_CONNECTIONS = 10000
DEFAULT_DRAIN_TIMEOUT = 5.0
DEFAULT_OUTPUT_LIMIT = 1 << 20


class UsageError(Exception):
    """A flag or environment variable has a value we cannot use (exit status 2)."""


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
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    framing: str = "line"
    log_level: str = "info"
    lang: str = "es"
    output_limit: int = DEFAULT_OUTPUT_LIMIT

    @property
    def limits(self) -> Limits:
        return Limits(framing=self.framing, max_line=self.max_line, idle_timeout=self.idle_timeout)


def _bounded(kind: Callable[[str], Any], low: float, high: float | None = None) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value != value or value < low or (high is not None and value > high):  # NaN, range
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def _host(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text.strip()


# name, converter, default, help; the environment variable is UPPERECHO_<NAME>
_OPTIONS: list[tuple[str, Callable[[str], Any], Any, str, Sequence[str] | None]] = [
    ("host", _host, DEFAULT_HOST, "address to listen on (default %(default)s)", None),
    ("port", _bounded(int, 0, 65535), DEFAULT_PORT, "TCP port; 0 picks a free one (default %(default)s)", None),
    ("workers", _bounded(int, 1, 256), None, "event-loop threads (default: 1 under the GIL, else one per core)", None),
    (
        "max-connections",
        _bounded(int, 1),
        DEFAULT_MAX_CONNECTIONS,
        "open sessions before 'server busy' (default %(default)s)",
        None,
    ),
    ("max-line", _bounded(int, 1), DEFAULT_MAX_LINE, "longest message in bytes (default %(default)s)", None),
    (
        "idle-timeout",
        _bounded(float, 0),
        DEFAULT_IDLE_TIMEOUT,
        "seconds without input before closing; 0 = off (default %(default)s)",
        None,
    ),
    (
        "drain-timeout",
        _bounded(float, 0),
        DEFAULT_DRAIN_TIMEOUT,
        "seconds to finish closing and to shut down (default %(default)s)",
        None,
    ),
    ("framing", str, "line", "line (protocol v1) or raw (seed compatibility)", FRAMINGS),
    ("log-level", str, "info", "console detail (default %(default)s)", tuple(LEVELS)),
    ("lang", str, "es", "console language (default %(default)s)", LANGS),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(
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
                value = _from_env(variable, environ[variable], convert, choices)
            else:
                value = default
        values[attr] = value
    if values["workers"] is None:
        values["workers"] = default_workers()
    if args.quiet:
        values["log_level"] = "warning"
    return Config(**values)


def _from_env(variable: str, text: str, convert: Callable[[str], Any], choices: Sequence[str] | None) -> Any:
    try:
        value = convert(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{variable}: {exc}") from None
    if choices is not None and value not in choices:
        raise UsageError(f"{variable}: must be one of {', '.join(choices)}, got {text!r}")
    return value
