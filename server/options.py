"""Flags and ``UPPERECHO_*`` variables: what the server's and the client's command lines share.

Both read a flag first, then its environment variable, then the default, and
report a bad value as one :class:`UsageError` line (exit status 2), never a
traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

ENV_PREFIX = "UPPERECHO_"
#: The longest duration a flag may ask for: 24 days, within what one epoll wait can take (2**31 - 1 ms).
MAX_DURATION = 24 * 24 * 3600


class UsageError(Exception):
    """A flag or environment variable has a value we cannot use (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def bounded(kind: Callable[[str], Any], low: float, high: float | None = None, unit: str = "") -> Callable[[str], Any]:
    """A converter to ``kind`` that accepts only ``low`` <= value (<= ``high``); never NaN."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value != value or value < low or (high is not None and value > high):  # NaN, range
            bounds = f"between {_show(low)} and {_show(high)}" if high is not None else f"at least {_show(low)}"
            raise argparse.ArgumentTypeError(f"must be {bounds}{unit}, got {text!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def duration(low: float = 0.0) -> Callable[[str], float]:
    """Seconds, from ``low`` up to :data:`MAX_DURATION` (S7: a longer wait would overflow the poller)."""
    return bounded(float, low, MAX_DURATION, " seconds (24 days)")


def _show(number: float) -> str:
    return str(int(number)) if number == int(number) else str(number)


def host(text: str) -> str:
    """A host name or address; an IPv6 address may come in brackets (``[::1]``)."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, with an IPv6 address in brackets (``[::1]:9100``); port 0 picks a free one."""
    name, colon, port = text.strip().rpartition(":")
    if not colon or not name or (":" in name and not (name.startswith("[") and name.endswith("]"))):
        raise argparse.ArgumentTypeError(f"must be HOST:PORT (an IPv6 address in brackets), got {text!r}")
    if not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}")
    return host(name), int(port)


def path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def from_env(variable: str, text: str, convert: Callable[[str], Any], choices: Sequence[str] | None = None) -> Any:
    """The value of environment ``variable``, converted and checked as its flag would be."""
    try:
        value = convert(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{variable}: {exc}") from None
    if choices is not None and value not in choices:
        raise UsageError(f"{variable}: must be one of {', '.join(choices)}, got {text!r}")
    return value
