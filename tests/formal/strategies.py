"""Hypothesis strategies and settings shared by the formal tests.

Every test here runs with ``DETERMINISTIC``: derandomized, no example
database, an explicit number of examples and no per-example deadline, so a run
in CI does exactly what the last local run did and takes about as long.
"""

from __future__ import annotations

import ipaddress
import struct
import unicodedata

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

WORD = "desconexion"


def deterministic(max_examples: int, shrink: bool = True) -> settings:
    """Settings for a property checked on ``max_examples`` derandomized examples.

    ``shrink=False`` reports the first failing example as found (the mutation
    tests only need to know that a property fails, not its smallest example).
    """
    return settings(
        max_examples=max_examples,
        phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if shrink else [])],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


#: Any Unicode scalar value that can be UTF-8 encoded (no surrogates).
any_char = st.characters(codec="utf-8")
#: White space as ``str.strip`` sees it, minus LF (which ends a line).
spaces = st.sampled_from([chr(c) for c in range(0x110000) if chr(c).isspace() and c != 0x0A])
#: Accents: the combining diacritical marks block, minus U+034F (a joiner, not an accent).
accents = st.sampled_from([chr(c) for c in range(0x0300, 0x0370) if c != 0x034F])


@st.composite
def disconnect_variants(draw: st.DrawFn) -> str:
    """The word as L4 allows it: any case per letter, any accents, composed or not, spaces around."""
    letters = []
    for letter in WORD:
        letter = letter.upper() if draw(st.booleans()) else letter
        letters.append(letter + "".join(draw(st.lists(accents, max_size=2))))
    word = "".join(letters)
    form = draw(st.sampled_from(["NFC", "NFD", None]))
    if form:
        word = unicodedata.normalize(form, word)
    before = "".join(draw(st.lists(spaces, max_size=3)))
    after = "".join(draw(st.lists(spaces, max_size=3)))
    return before + word + after


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    """The word with one edit no rule of L4 forgives: a letter dropped, added, swapped or replaced."""
    word = "".join(c.upper() if draw(st.booleans()) else c for c in WORD)
    at = draw(st.integers(0, len(word) - 1))
    edit = draw(st.sampled_from(["drop", "insert", "replace", "swap", "suffix", "fullwidth"]))
    if edit == "drop":
        return word[:at] + word[at + 1 :]
    if edit == "insert":  # never in front: a leading space is forgiven
        at = max(at, 1)
        return word[:at] + draw(st.sampled_from(list("ab xyz0.-_"))) + word[at:]
    if edit == "replace":
        old = word[at].lower()
        new = draw(st.sampled_from([c for c in "abcdefghijklmnopqrstuvwxyz0. " if c != old]))
        return word[:at] + new + word[at + 1 :]
    if edit == "swap":
        at = min(at, len(word) - 2)
        if word[at].lower() == word[at + 1].lower():
            return word + "s"  # swapping equal letters changes nothing
        return word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    if edit == "suffix":
        return word + draw(st.sampled_from(["es", ".", "!", "_", "\u200b", "\u00a0x"]))
    return "".join(chr(ord(c) + 0xFEE0) for c in word)  # full-width letters: another form, not an accent


#: Bytes that stress line framing: terminators, a lone CR, split and invalid UTF-8.
LINE_TOKENS = [
    b"\n",
    b"\r\n",
    b"\r",
    b"a",
    b"hola",
    b" ",
    b"\t",
    "straße".encode(),
    "ñandú".encode(),
    "ŉ".encode(),  # upper-cases to two characters
    "😀".encode(),
    "😀".encode()[:2],  # half a character
    b"\xff",
    b"\xc3\x28",  # a lead byte followed by ASCII
    b"\xed\xa0\x80",  # an encoded surrogate
    b"x" * 20,
]


@st.composite
def line_streams(draw: st.DrawFn, max_line: int) -> bytes:
    """A client's byte stream for line framing: lines of tokens, Unicode text and lines near ``max_line``."""
    pieces = st.one_of(
        st.sampled_from(LINE_TOKENS),
        st.text(any_char, max_size=6).map(str.encode),
        st.binary(max_size=4),
    )
    plain = st.lists(pieces, max_size=6).map(b"".join)
    near_limit = st.integers(-2, 1).map(lambda d: b"y" * (max_line + d))
    word = st.sampled_from([b"DESCONEXION", "Desconexión".encode(), b" desconexion\t"])
    ending = st.sampled_from([b"\n", b"\r\n", b"\r", b""])
    # most lines keep the session open
    body = st.sampled_from([plain] * 8 + [near_limit] * 2 + [word]).flatmap(lambda kind: kind)
    lines = draw(st.lists(st.tuples(body, ending).map(b"".join), max_size=8))
    # Now and then an unterminated last line of max_line + CR: the framer holds it in
    # case an LF follows, but at end of stream that CR is data and the line too long.
    last = draw(st.sampled_from([b""] * 5 + [b"y" * max_line + b"\r"]))
    return b"".join(lines) + last


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into segments at arbitrary points (mid-character included)."""
    if not data:
        return []
    points = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=12)))) if len(data) > 1 else []
    if draw(st.integers(0, 9)) == 0:
        points = list(range(1, len(data)))  # one byte per segment
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# -- PROXY protocol headers (O2) -------------------------------------------------------

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _ipv6_spelling(address: ipaddress.IPv6Address, form: str) -> str:
    text = address.exploded if form == "exploded" else address.compressed
    return text.upper() if form == "upper" else text


@st.composite
def v1_headers(draw: st.DrawFn) -> bytes:
    """A valid version 1 line: TCP4, TCP6 (in several spellings) or UNKNOWN, with or without addresses."""
    kind = draw(st.sampled_from(["TCP4", "TCP6", "UNKNOWN"]))
    ports = st.integers(0, 65535).map(str)
    if kind == "TCP4":
        source, destination = (str(draw(st.ip_addresses(v=4))) for _ in range(2))
    elif kind == "TCP6":
        form = draw(st.sampled_from(["compressed", "exploded", "upper"]))
        source, destination = (_ipv6_spelling(draw(st.ip_addresses(v=6)), form) for _ in range(2))
    else:
        full = ":".join(["ffff"] * 8)
        tail = draw(st.sampled_from(["", " ", " 1.2.3.4 5.6.7.8 1 2", f" {full} {full} 65535 65535"]))  # 107 bytes
        return f"PROXY UNKNOWN{tail}\r\n".encode()
    return f"PROXY {kind} {source} {destination} {draw(ports)} {draw(ports)}\r\n".encode()


def _tlvs(draw: st.DrawFn) -> bytes:
    values = draw(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=24)), max_size=4))
    return b"".join(bytes([kind]) + struct.pack("!H", len(value)) + value for kind, value in values)


@st.composite
def v2_headers(draw: st.DrawFn) -> bytes:
    """A valid version 2 header: PROXY over TCP/IPv4 or TCP/IPv6 with TLVs, UNSPEC, AF_UNIX, or LOCAL."""
    kind = draw(st.sampled_from(["INET", "INET6", "UNSPEC", "UNIX", "LOCAL"]))
    command = 0x20 if kind == "LOCAL" else 0x21
    if kind in ("INET", "INET6"):
        version = 4 if kind == "INET" else 6
        family = 0x11 if kind == "INET" else 0x21
        addresses = b"".join(draw(st.ip_addresses(v=version)).packed for _ in range(2))
        block = addresses + struct.pack("!HH", draw(st.integers(0, 65535)), draw(st.integers(0, 65535))) + _tlvs(draw)
    elif kind == "UNIX":
        family = draw(st.sampled_from([0x30, 0x31, 0x32]))
        block = draw(st.binary(min_size=216, max_size=216)) + _tlvs(draw)
    elif kind == "UNSPEC":
        family = draw(st.sampled_from([0x00, 0x01, 0x02, 0x10, 0x20]))
        block = draw(st.binary(max_size=40))
    else:  # LOCAL: any valid family, any block; the receiver ignores both
        family = draw(st.sampled_from([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]))
        block = draw(st.binary(max_size=40))
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(block)) + block


def proxy_headers() -> st.SearchStrategy[bytes]:
    return st.one_of(v1_headers(), v2_headers())
