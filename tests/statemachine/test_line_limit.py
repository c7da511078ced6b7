"""L6 at its boundary, in every position a line can take: the rule, not one example of it.

A line whose text (terminator not counted) is at most ``max_line`` bytes is
answered; one byte more gets the error and the close.  That must hold whatever
comes before the line in the same read (nothing, one line, several, an empty
line, a CRLF line), whatever ends it (LF, CRLF, a CR that is data before a
CRLF), whatever it holds (a lone CR inside), and however the stream is cut into
reads.  Every case is checked on the framer alone and through a session (with
and without the logging hook, which takes the per-line path) against the
reference model, and against the rule written out here.
"""

from __future__ import annotations

import pytest

from statemachine import Limits, Session
from statemachine.framing import LineFramer, LineTooLong
from tests.formal import reference
from tests.statemachine.feeding import T0, drip

MAX_LINES = (1, 2, 3, 8)
BEFORE = (b"", b"a\n", b"a\r\n", b"\n", b"a\nb\r\n", b"\r\n\n")
AFTER = (b"", b"z\n")


def _line(max_line: int, delta: int, shape: str) -> tuple[bytes, int]:
    """A terminated line whose text is ``max_line + delta`` bytes; returns (line, text size)."""
    size = max_line + delta
    if shape == "lf":
        return b"y" * size + b"\n", size
    if shape == "crlf":
        return b"y" * size + b"\r\n", size
    if shape == "lone-cr":  # a CR inside is data and counts
        return b"\r" + b"y" * (size - 1) + b"\n", size
    assert shape == "cr-then-crlf"  # the text ends in a CR that is data: only the last CR is the terminator's
    return b"y" * (size - 1) + b"\r\r\n", size


CASES = [
    (max_line, delta, shape)
    for max_line in MAX_LINES
    for delta in (-1, 0, 1, 2)
    for shape in ("lf", "crlf", "lone-cr", "cr-then-crlf")
    if max_line + delta >= {"lone-cr": 2, "cr-then-crlf": 1}.get(shape, 0)
]


def _ids(case: tuple[int, int, str]) -> str:
    max_line, delta, shape = case
    return f"max{max_line}-{'+' if delta >= 0 else ''}{delta}-{shape}"


def _splits(stream: bytes) -> list[list[bytes]]:
    """The stream in one read, one byte per read, and cut once at every point."""
    ways = [[stream], drip(stream)]
    ways += [[stream[:cut], stream[cut:]] for cut in range(1, len(stream))]
    return ways


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_a_line_is_answered_up_to_max_line_and_refused_one_byte_over(case):
    max_line, delta, shape = case
    line, size = _line(max_line, delta, shape)
    for before in BEFORE:
        for after in AFTER:
            stream = before + line + after
            expected = reference.line_replies(stream, max_line)
            # the rule itself, independent of the reference model
            assert (expected.reason == "line_too_long") == (size > max_line), stream
            for hooked in (False, True):
                hook = (lambda text, reply: None) if hooked else None
                for reads in _splits(stream):
                    session = Session(Limits(max_line=max_line, idle_timeout=0), T0, hook)
                    out = b"".join(session.receive(read, T0) for read in reads)
                    assert out == expected.replies, (stream, reads, hooked)
                    assert session.reason == expected.reason, (stream, reads, hooked)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_the_framer_refuses_exactly_the_lines_over_max_line(case):
    """The framer alone: lines before a long one come out with the error, nothing after it."""
    max_line, delta, shape = case
    line, size = _line(max_line, delta, shape)
    for before in BEFORE:
        for after in AFTER:
            stream = before + line + after
            for reads in _splits(stream):
                framer = LineFramer(max_line)
                out = bytearray()
                try:
                    for read in reads:
                        out += framer.feed(read)
                except LineTooLong as exc:
                    out += exc.block
                    assert size > max_line, (stream, reads)
                    assert bytes(out) == before, (stream, reads)
                else:
                    assert size <= max_line, (stream, reads)
                    assert bytes(out) == stream, (stream, reads)


@pytest.mark.parametrize("held", [b"x" * 8 + b"\r", b"a\n" + b"x" * 8 + b"\r", b"a\r\n" + b"x" * 8 + b"\r"])
def test_at_end_of_stream_a_tail_over_max_line_is_refused_with_nothing_before_it(held):
    """L6, L7: the lines before the tail were handed out when they were read; the error carries none again."""
    framer = LineFramer(8)
    out = framer.feed(held)
    assert out == held[: held.rfind(b"\n") + 1]
    with pytest.raises(LineTooLong) as refused:
        framer.finish()
    assert (refused.value.block, refused.value.max_line, framer.pending) == (b"", 8, b"")
