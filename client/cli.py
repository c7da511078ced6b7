"""``python -m client``: flags and environment, then the interactive or the scripted client."""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from client import exitcodes
from client.connection import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TIMEOUT, DEFAULT_WINDOW, TlsSetupError, tls_context
from client.messages import LANGS
from server.options import ENV_PREFIX, Parser, UsageError, bounded, from_env, host
from statemachine.session import FRAMINGS, LINE, RAW


@dataclass(frozen=True, slots=True)
class Config:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    timeout: float | None = DEFAULT_TIMEOUT
    lang: str = "es"
    framing: str = LINE
    file: str | None = None
    pipeline: bool = False
    window: int = DEFAULT_WINDOW
    ssl_context: ssl.SSLContext | None = None  # --tls


def _lang(text: str) -> str:
    if text not in LANGS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(LANGS)}, got {text!r}")
    return text


def _framing(text: str) -> str:
    if text not in FRAMINGS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(FRAMINGS)}, got {text!r}")
    return text


# The options that an UPPERECHO_<NAME> environment variable can also set.
_ENV_OPTIONS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "host": (host, DEFAULT_HOST),
    "port": (bounded(int, 1, 65535), DEFAULT_PORT),
    "timeout": (bounded(float, 0), DEFAULT_TIMEOUT),
    "lang": (_lang, "es"),
    "framing": (_framing, LINE),
}


def _parser() -> Parser:
    parser = Parser(
        prog="python -m client",
        description="upperecho client.\n"
        "With a terminal on standard input and no --file: the interactive console.\n"
        "With --file, or with piped input: send each line, print each reply on standard output.",
        epilog=f"environment:\n  {ENV_PREFIX}HOST, {ENV_PREFIX}PORT, {ENV_PREFIX}TIMEOUT, {ENV_PREFIX}LANG, "
        f"{ENV_PREFIX}FRAMING\n"
        f"  set the same values; a flag wins over its variable.\n\n{exitcodes.HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert = {name: kind for name, (kind, _) in _ENV_OPTIONS.items()}
    parser.add_argument("--host", type=convert["host"], help=f"server address (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=convert["port"], help=f"server port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--timeout",
        type=convert["timeout"],
        help=f"seconds to wait to connect and for each reply; 0 = wait forever (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--lang", type=convert["lang"], help="console language: es (the seed's) or en (default es)")
    parser.add_argument(
        "--framing",
        type=convert["framing"],
        help="line: one message per line (upperecho's protocol, the default); raw: text sent with no "
        "newline and one read for the answer, as the classroom's server.py expects",
    )
    parser.add_argument(
        "--file", metavar="PATH", help="scripted run: send each line of PATH ('-' = standard input), one reply a line"
    )
    parser.add_argument(
        "--pipeline", action="store_true", help="scripted run: send ahead and read the replies in order (faster)"
    )
    parser.add_argument(
        "--window",
        type=bounded(int, 1),
        help=f"with --pipeline: most messages unanswered at a time (default {DEFAULT_WINDOW})",
    )
    parser.add_argument("--tls", action="store_true", help="speak TLS; the server's certificate and name are checked")
    parser.add_argument(
        "--cafile", metavar="PATH", help="with --tls: trust the CA certificates in PATH (PEM) instead of the system's"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="with --tls: check neither the certificate nor the name (tests only)"
    )
    return parser


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from flags, then ``UPPERECHO_*`` variables, then defaults."""
    environ = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    values: dict[str, Any] = {}
    for name, (convert, default) in _ENV_OPTIONS.items():
        value = getattr(args, name)
        variable = ENV_PREFIX + name.upper()
        if value is None and variable in environ:
            value = from_env(variable, environ[variable], convert)
        values[name] = default if value is None else value
    if values["timeout"] == 0:
        values["timeout"] = None
    if args.window is not None and not args.pipeline:
        raise UsageError("--window only applies with --pipeline")
    if args.pipeline and values["framing"] == RAW:
        raise UsageError("--pipeline needs line framing: in raw framing the server cannot tell messages apart")
    for flag, given in (("--cafile", args.cafile is not None), ("--insecure", args.insecure)):
        if given and not args.tls:
            raise UsageError(f"{flag} only applies with --tls")
    try:
        context = tls_context(args.cafile, args.insecure) if args.tls else None
    except TlsSetupError as exc:
        raise UsageError(str(exc)) from None
    return Config(
        **values,
        file=args.file,
        pipeline=args.pipeline,
        window=DEFAULT_WINDOW if args.window is None else args.window,
        ssl_context=context,
    )


def is_interactive(config: Config) -> bool:
    """The console when a person is typing: no --file and a terminal on standard input."""
    return config.file is None and sys.stdin.isatty()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse(argv)
        interactive = is_interactive(config)
        if interactive and config.pipeline:
            raise UsageError("--pipeline is for scripted runs (--file, or piped standard input)")
    except UsageError as exc:
        print(f"error: {exc} (see --help)", file=sys.stderr)
        return exitcodes.USAGE
    try:
        if interactive:
            from client import console

            return console.run(config)
        from client import script

        return script.run(config)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        # Whoever read our standard output stopped (``| head``): stop quietly,
        # and keep the interpreter's final flush from failing too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exitcodes.FAILED
