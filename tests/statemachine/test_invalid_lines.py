"""L5 in bulk: every line that is not UTF-8, and only those, becomes the error line.

``replace_invalid_lines`` answers a whole block the core's way, without a Python
step per line (L16): each invalid line folded into a mark, then the mark turned
into the error line.  These tests hold it to the plain rule, line by line, and
check what the fold leaves for the disconnect search.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine import session as session_module
from statemachine.session import ERROR_INVALID_UTF8, Limits, Session, mark_invalid_lines, replace_invalid_lines
from statemachine.text import INVALID_CR_MARK, INVALID_MARK


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
    return replace_invalid_lines(data)


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


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_each_invalid_line_is_one_mark_and_takes_an_lf(pieces: list[bytes]) -> None:
    """What the disconnect search is given: an LF per valid line (and one put first), a mark per invalid one."""
    block = b"".join(pieces) + b"\n"
    lines = block.split(b"\n")[:-1]
    marked = mark_invalid_lines(block, block.decode(errors="surrogateescape"))
    invalid = [line for line in lines if not _is_utf8(line)]
    assert marked.count("\n") == 1 + len(lines) - len(invalid)
    assert marked.count(INVALID_CR_MARK) == sum(line.endswith(b"\r") for line in invalid)
    assert marked.count(INVALID_MARK) == sum(not line.endswith(b"\r") for line in invalid)
    valid = "".join(line.decode() + "\n" for line in lines if _is_utf8(line))
    assert marked.replace(INVALID_MARK, "").replace(INVALID_CR_MARK, "") == "\n" + valid  # the valid lines, untouched


def test_the_disconnect_search_never_looks_at_an_invalid_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Invalid lines folded into marks leave the search an LF only before each valid line (L16)."""
    seen: list[str] = []
    real = session_module.find_disconnect_line

    def spy(lines: str) -> int:
        seen.append(lines)
        return real(lines)

    monkeypatch.setattr(session_module, "find_disconnect_line", spy)
    block = b"D\n\xff\n" * 1000 + b"D\r\n\xff\r\n" * 1000 + "ñx\n".encode()
    sess = Session(Limits(), 0.0)
    reply = sess.receive(block, 0.0)
    assert sess.is_open and reply.count(b"\n") == block.count(b"\n")
    assert reply.count(ERROR_INVALID_UTF8.encode() + b"\r\n") == 1000
    assert len(seen) == 1 and seen[0].count("\n") == 1 + 2000 + 1  # the LF put first, each D line, the last line
