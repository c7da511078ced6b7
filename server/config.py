"""Command line and environment: every flag also has an ``UPPERECHO_*`` variable; flags win."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.logs import FORMATS, LEVELS
from server.messages import LANGS
from server.options import ENV_PREFIX, Parser, UsageError, bounded, duration, from_env, host, host_port, path
from statemachine.session import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LINE_TIMEOUT,
    DEFAULT_MAX_LINE,
    DEFAULT_PROXY_TIMEOUT,
    FRAMINGS,
    PROXY_MODES,
    PROXY_OFF,
    Limits,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_MAX_CONNECTIONS = 10000
DEFAULT_DRAIN_TIMEOUT = 5.0
DEFAULT_OUTPUT_LIMIT = 1 << 20
DEFAULT_PROXY_FROM = "127.0.0.0/8,::1/128"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(text: str) -> tuple[Network, ...]:
    """``--proxy-from``: a comma-separated list of networks (``10.0.0.0/8``) or single addresses."""
    found = []
    for part in text.split(","):
        part = part.strip()
        try:
            found.append(ipaddress.ip_network(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a network or address (e.g. 10.0.0.0/8, 192.0.2.7, ::1/128)"
            ) from None
    return tuple(found)


MAX_PROCESSES = 1024

# S7: the largest counts a flag accepts.  A million sessions is already far past
# what one process's descriptors and memory allow (docs/reliability.md sizes
# them); a 64 MiB message is past any use of a line echo.
MAX_CONNECTIONS = 1_000_000
MAX_LINE = 64 << 20


def default_workers() -> int:
    """One event loop under the GIL, where more threads only take turns (measured in
    docs/benchmarks.md); one per core, up to 8, on a free-threaded Python."""
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    return 1 if gil_enabled else max(1, min(8, os.cpu_count() or 1))


def processes(text: str) -> int:
    """``--processes``: a count, or ``auto`` for one per core (O1)."""
    if text.strip().lower() == "auto":
        return max(1, min(MAX_PROCESSES, os.cpu_count() or 1))
    return bounded(int, 1, MAX_PROCESSES)(text)


@dataclass(frozen=True, slots=True)
class Config:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    processes: int = 1
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_line: int = DEFAULT_MAX_LINE
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    line_timeout: float = DEFAULT_LINE_TIMEOUT
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    framing: str = "line"
    log_level: str = "info"
    lang: str = "es"
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    metrics: tuple[str, int] | None = None
    log_format: str = "text"
    proxy_protocol: str = PROXY_OFF
    proxy_from: tuple[Network, ...] = networks(DEFAULT_PROXY_FROM)
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT
    max_per_address: int = 0

    @property
    def limits(self) -> Limits:
        return Limits(
            framing=self.framing,
            max_line=self.max_line,
            idle_timeout=self.idle_timeout,
            handshake_timeout=self.tls_handshake_timeout,
            proxy=self.proxy_protocol,
            proxy_timeout=self.proxy_timeout,
            line_timeout=self.line_timeout,
        )


# name, converter, default, help; the environment variable is UPPERECHO_<NAME>
_OPTIONS: list[tuple[str, Callable[[str], Any], Any, str, Sequence[str] | None]] = [
    ("host", host, DEFAULT_HOST, "address to listen on (default %(default)s)", None),
    ("port", bounded(int, 0, 65535), DEFAULT_PORT, "TCP port; 0 picks a free one (default %(default)s)", None),
    ("workers", bounded(int, 1, 256), None, "event-loop threads (default: 1 under the GIL, else one per core)", None),
    (
        "processes",
        processes,
        1,
        "server processes sharing the port, or 'auto' for one per core (default %(default)s)",
        None,
    ),
    (
        "max-connections",
        bounded(int, 1, MAX_CONNECTIONS),
        DEFAULT_MAX_CONNECTIONS,
        "open sessions before 'server busy' (default %(default)s)",
        None,
    ),
    (
        "max-per-address",
        bounded(int, 0, MAX_CONNECTIONS),
        0,
        "open sessions from one client address before 'too many connections from your address'; "
        "0 = off (default %(default)s)",
        None,
    ),
    ("max-line", bounded(int, 1, MAX_LINE), DEFAULT_MAX_LINE, "longest message in bytes (default %(default)s)", None),
    (
        "idle-timeout",
        duration(),
        DEFAULT_IDLE_TIMEOUT,
        "seconds without input before closing; 0 = off (default %(default)s)",
        None,
    ),
    (
        "line-timeout",
        duration(),
        DEFAULT_LINE_TIMEOUT,
        "seconds a message may take from its first byte to its newline; 0 = off (default %(default)s)",
        None,
    ),
    (
        "drain-timeout",
        duration(),
        DEFAULT_DRAIN_TIMEOUT,
        "seconds to finish closing and to shut down (default %(default)s)",
        None,
    ),
    ("framing", str, "line", "line (protocol v1) or raw (seed compatibility)", FRAMINGS),
    ("log-level", str, "info", "console detail (default %(default)s)", tuple(LEVELS)),
    ("lang", str, "es", "console language (default %(default)s)", LANGS),
    ("tls-cert", path, None, "serve TLS 1.2+ with this PEM certificate chain (needs --tls-key)", None),
    ("tls-key", path, None, "the PEM private key of --tls-cert (unencrypted)", None),
    (
        "tls-handshake-timeout",
        duration(0.001),
        DEFAULT_HANDSHAKE_TIMEOUT,
        "seconds a client has to finish the TLS handshake (default %(default)s)",
        None,
    ),
    ("log-format", str, "text", "console lines as text (default) or one JSON object per line", FORMATS),
    ("metrics", host_port, None, "serve Prometheus metrics at http://HOST:PORT/metrics (default: off)", None),
    (
        "proxy-protocol",
        str,
        PROXY_OFF,
        "expect a PROXY protocol header (HAProxy's send-proxy) of this version first (default %(default)s)",
        PROXY_MODES,
    ),
    (
        "proxy-from",
        networks,
        DEFAULT_PROXY_FROM,
        "with --proxy-protocol: the only sources allowed, comma-separated networks (default %(default)s)",
        None,
    ),
    (
        "proxy-timeout",
        duration(0.01),
        DEFAULT_PROXY_TIMEOUT,
        "with --proxy-protocol: seconds for the header to arrive (default %(default)s)",
        None,
    ),
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
    if isinstance(values["proxy_from"], str):
        values["proxy_from"] = networks(values["proxy_from"])
    if values["workers"] is None:
        values["workers"] = default_workers()
    if args.quiet:
        values["log_level"] = "warning"
    if (values["tls_cert"] is None) != (values["tls_key"] is None):
        raise UsageError("--tls-cert and --tls-key go together: give both, or neither")
    if values["tls_cert"] is not None and values["proxy_protocol"] != PROXY_OFF:
        raise UsageError(
            "--proxy-protocol with --tls-cert is not supported: terminate TLS at the proxy "
            "(HAProxy's 'bind ... ssl crt'), or serve TLS here without the PROXY protocol"
        )
    return Config(**values)
