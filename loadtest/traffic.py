"""What a load user sends and how its replies are judged, kept apart from Locust.

Importing Locust monkey-patches the whole process for gevent, so the parts
worth testing on their own (the ``--host`` address, the messages, the reply
check) live here, where a test can import them without Locust.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from statemachine.text import is_disconnect

DEFAULT_HOST = "tcp://127.0.0.1:5000"
DEFAULT_PORT = 5000

ASCII = string.ascii_letters + string.digits + " .,;:!?-_()'@#"
# Letters whose upper case is longer (ß -> SS, ﬁ -> FI, ŉ -> ʼN, ΐ -> three code
# points), accents, other scripts, signs without case and characters outside
# the BMP: a server that upper-cases byte by byte or char by char fails here.
UNICODE = ASCII + "ñÑáéíóúüçàèìòùßﬁŉΐσςαβγδΩпривет日本語中文한국어€£¥😀🚀"
DISCONNECT_SPELLINGS = ("DESCONEXION", "desconexion", "Desconexión", " desconexión ")


SCHEMES = ("tcp", "tls")


def parse_host(url: str | None) -> tuple[str, int]:
    """``tcp://HOST:PORT`` or ``tls://HOST:PORT`` (or ``HOST:PORT``, or ``HOST``) as ``(host, port)``;
    127.0.0.1:5000 by default.  :func:`uses_tls` tells the two schemes apart.

    An IPv6 address goes in brackets, as in a URL: ``tcp://[::1]:5000``.
    """
    if not url:
        url = DEFAULT_HOST
    if "://" not in url:
        url = f"tcp://{url}"
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"--host must be tcp://HOST:PORT or tls://HOST:PORT, not {url!r}")
    if parts.netloc.count(":") > 1 and not parts.netloc.startswith("["):
        raise ValueError(f"--host: an IPv6 address goes in brackets (tcp://[::1]:5000), not {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"--host has a bad port: {url!r}") from None
    if not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"--host must be tcp://HOST:PORT, not {url!r}")
    return parts.hostname, port if port is not None else DEFAULT_PORT


def uses_tls(url: str | None) -> bool:
    """True for ``tls://HOST:PORT`` (O6); plain TCP otherwise."""
    return bool(url) and url.lower().startswith("tls://")


def message_size(rng: random.Random, largest: int) -> int:
    """A size from 0 to ``largest``, log-uniform: mostly short messages, now and then a long one."""
    if largest <= 0:
        return 0
    return min(largest, round(2 ** rng.uniform(0, math.log2(largest + 1))) - 1)


def message(rng: random.Random, alphabet: str, size: int) -> str:
    """``size`` characters from ``alphabet``, never the disconnect word."""
    while True:
        text = "".join(rng.choices(alphabet, k=size))
        if not is_disconnect(text):
            return text


def mismatch(expected: str, got: str) -> str | None:
    """Why ``got`` is not the reply ``expected`` (None when it is).

    The wording does not depend on the message, so Locust's failure table
    groups one kind of fault into one row.
    """
    if got == expected:
        return None
    if got.startswith("error: "):
        return f"server said: {got}"
    for want, have in zip(expected, got, strict=False):
        if want != have:
            return f"reply differs from the upper-cased message: expected {want!r}, got {have!r}"
    shorter = "shorter" if len(got) < len(expected) else "longer"
    return f"reply is {shorter} than the upper-cased message"


@dataclass(frozen=True, slots=True)
class UserOption:
    """One option of the Locust user: its type, default, allowed range and the words the web UI shows."""

    kind: type
    default: float
    low: float
    high: float | None
    help: str

    def check(self, flag: str, value: object) -> str | None:
        """Why ``value`` is refused (None when it is fine); text from a web form is converted first."""
        if isinstance(value, str):
            try:
                value = self.kind(value)
            except ValueError:
                noun = "a whole number" if self.kind is int else "a number"
                return f"{flag} must be {noun}, got {value!r}"
        if not isinstance(value, int | float) or not math.isfinite(value):
            return f"{flag} must be a number, got {value!r}"
        if value < self.low or (self.high is not None and value > self.high):
            bounds = f"between {self.low:g} and {self.high:g}" if self.high is not None else f"at least {self.low:g}"
            return f"{flag} must be {bounds}, got {value:g}"
        return None


# The defaults are not repeated in the help: the web UI shows the help as the
# field's label next to a field that already holds the default.
USER_OPTIONS = {
    "message_size": UserOption(int, 200, 0, None, "longest message in characters"),
    "disconnect_rate": UserOption(
        float, 0.02, 0.0, 1.0, "chance after each message that the user says DESCONEXION and reconnects"
    ),
    "think_time": UserOption(float, 0.05, 0.0, None, "mean pause between messages in seconds; 0 = none"),
    "reply_timeout": UserOption(float, 10.0, 0.001, None, "seconds to wait for a reply"),
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_problems(values: Mapping[str, object]) -> list[str]:
    """One line for each user option in ``values`` that is out of range or not a number."""
    problems = []
    for name, option in USER_OPTIONS.items():
        if name in values and (problem := option.check(flag(name), values[name])):
            problems.append(problem)
    return problems
