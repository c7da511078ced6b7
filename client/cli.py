"""``python -m client``: flags and environment, then the interactive or the scripted client."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from client import exitcodes
from client.connection import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TIMEOUT, DEFAULT_WINDOW
from client.messages import LANGS

ENV_PREFIX = "UPPERECHO_"


class UsageError(Exception):
    """A flag or environment variable has a value we cannot use (exit status 2)."""


@dataclass(frozen=True, slots=True)
class Config:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    timeout: float | None = DEFAULT_TIMEOUT
    lang: str = "es"
    file: str | None = None
    pipeline: bool = False
    window: int = DEFAULT_WINDOW


def _number(kind: Callable[[str], Any], low: float, high: float | None = None) -> Callable[[str], Any]:
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


def _lang(text: str) -> str:
    if text not in LANGS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(LANGS)}, got {text!r}")
    return text


# The options that an UPPERECHO_<NAME> environment variable can also set.
_ENV_OPTIONS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "host": (_host, DEFAULT_HOST),
    "port": (_number(int, 1, 65535), DEFAULT_PORT),
    "timeout": (_number(float, 0), DEFAULT_TIMEOUT),
    "lang": (_lang, "es"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(
        prog="python -m client",
        description="upperecho client.\n"
        "With a terminal on standard input and no --file: the interactive console.\n"
        "With --file, or with piped input: send each line, print each reply on standard output.",
        epilog=f"environment:\n  {ENV_PREFIX}HOST, {ENV_PREFIX}PORT, {ENV_PREFIX}TIMEOUT, {ENV_PREFIX}LANG\n"
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
        "--file", metavar="PATH", help="scripted run: send each line of PATH ('-' = standard input), one reply a line"
    )
    parser.add_argument(
        "--pipeline", action="store_true", help="scripted run: send ahead and read the replies in order (faster)"
    )
    parser.add_argument(
        "--window",
        type=_number(int, 1),
        help=f"with --pipeline: most messages unanswered at a time (default {DEFAULT_WINDOW})",
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
            try:
                value = convert(environ[variable])
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"{variable}: {exc}") from None
        values[name] = default if value is None else value
    if values["timeout"] == 0:
        values["timeout"] = None
    if args.window is not None and not args.pipeline:
        raise UsageError("--window only applies with --pipeline")
    return Config(
        **values,
        file=args.file,
        pipeline=args.pipeline,
        window=DEFAULT_WINDOW if args.window is None else args.window,
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
