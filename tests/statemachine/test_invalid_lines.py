"""L5 in bulk: every line that is not UTF-8, and only those, becomes the error line.

``replace_invalid_lines`` answers a whole block without a Python step per line
(L16); these tests hold it to the plain rule, line by line.  It takes the block
as the core holds it, decoded with ``surrogateescape``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine.session import ERROR_INVALID_UTF8, replace_invalid_lines


def one_by_one(data: bytes) -> bytes:
    """The rule itself: each line decoded on its own; a CR before the LF stays a CRLF terminator."""
    out = []
    for line in data.split(b"\n"):
        try:
            line.decode()
        except UnicodeDecodeError:
            line = ERROR_INVALID_UTF8.encode() + (b"\r" if line.endswith(b"\r") else b"")
        out.append(line)
    return b"\n".join(out)


def replaced(data: bytes) -> bytes:
    return replace_invalid_lines(data.decode(errors="surrogateescape")).encode()  # strict: no byte left undecoded


PIECES = [
    b"a",
    b"\r",
    b"\n",
    "ñ".encode(),
    "€".encode(),
    "😀".encode(),
    "\ufffd".encode(),  # valid: the replacement character sent on purpose is not an error
    b"\xff",
    b"\xc3",  # a lead byte cut by the end of its line
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xc0\xaf",  # an overlong form
    b"\x80",
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
]


@settings(max_examples=1000, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_every_line_is_judged_on_its_own(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert replaced(data) == one_by_one(data)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    assert replaced(data) == one_by_one(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\n", b"error: invalid utf-8\n"),
        (b"\xff\r\n", b"error: invalid utf-8\r\n"),
        (b"\xff\r\r\n", b"error: invalid utf-8\r\n"),
        ("\ufffd\n".encode(), "\ufffd\n".encode()),
        (b"\xc3\n\xa9\n", b"error: invalid utf-8\nerror: invalid utf-8\n"),  # a character split by an LF
        ("é\n".encode() + b"\xff\n" + "é\n".encode(), "é\n".encode() + b"error: invalid utf-8\n" + "é\n".encode()),
    ],
)
def test_cases(data: bytes, expected: bytes) -> None:
    assert replaced(data) == expected
