"""What a load user sends and how its replies are judged, kept apart from Locust.

Importing Locust monkey-patches the whole process for gevent, so the parts
worth testing on their own (the ``--host`` address, the messages, the reply
check) live here, where a test can import them without Locust.
"""

from __future__ import annotations

import math
import random
import string
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


def parse_host(url: str | None) -> tuple[str, int]:
    """``tcp://HOST:PORT`` (or ``HOST:PORT``, or ``HOST``) as ``(host, port)``; 127.0.0.1:5000 by default.

    An IPv6 address goes in brackets, as in a URL: ``tcp://[::1]:5000``.
    """
    if not url:
        url = DEFAULT_HOST
    if "://" not in url:
        url = f"tcp://{url}"
    parts = urlsplit(url)
    if parts.scheme != "tcp":
        raise ValueError(f"--host must be tcp://HOST:PORT, not {url!r}")
    if parts.netloc.count(":") > 1 and not parts.netloc.startswith("["):
        raise ValueError(f"--host: an IPv6 address goes in brackets (tcp://[::1]:5000), not {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"--host has a bad port: {url!r}") from None
    if not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"--host must be tcp://HOST:PORT, not {url!r}")
    return parts.hostname, port if port is not None else DEFAULT_PORT


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
