"""LineFramer and split_block on their own (L1, L6): bytes in, blocks of complete lines out."""

from __future__ import annotations

import pytest

from statemachine.framing import CRLF, LF, LineFramer, LineTooLong, split_block
from tests.statemachine.feeding import drip

MAX = 10


def framed(chunks: list[bytes], max_line: int = MAX) -> bytes:
    framer = LineFramer(max_line)
    return b"".join(framer.feed(chunk) for chunk in chunks)


# -- L1 ---------------------------------------------------------------------------


def test_lines_come_out_only_when_ended():
    framer = LineFramer(MAX)
    assert framer.feed(b"ho") == b""
    assert framer.pending == b"ho"
    assert framer.feed(b"la\nmu") == b"hola\n"
    assert framer.pending == b"mu"
    assert framer.feed(b"ndo\r\n") == b"mundo\r\n"
    assert framer.pending == b""


def test_many_lines_in_one_read_come_out_as_one_block():
    assert framed([b"a\nb\r\n\nc"]) == b"a\nb\r\n\n"


def test_one_byte_reads_give_the_same_block_bytes():
    data = b"uno\r\ndos\n\ntres\r\n\rcuatro\r\n"
    assert framed(drip(data)) == data


def test_take_pending_returns_and_forgets_the_tail():
    framer = LineFramer(MAX)
    framer.feed(b"a\nrest")
    assert framer.take_pending() == b"rest"
    assert framer.pending == b""
    assert framer.take_pending() == b""


@pytest.mark.parametrize("tail", [b"", b"x" * MAX, b"x" * (MAX - 1) + b"\r"])
def test_finish_returns_a_last_message_up_to_max_line(tail):
    framer = LineFramer(MAX)
    framer.feed(b"a\n" + tail)
    assert framer.finish() == tail
    assert framer.pending == b""


def test_finish_refuses_a_held_cr_over_max_line():
    """The CR held at the limit in case an LF follows is data at end of stream (L1, L6)."""
    framer = LineFramer(MAX)
    assert framer.feed(b"x" * MAX + b"\r") == b""
    with pytest.raises(LineTooLong):
        framer.finish()
    assert framer.pending == b""


def test_max_line_must_be_positive():
    with pytest.raises(ValueError):
        LineFramer(0)


@pytest.mark.parametrize(
    ("block", "lines"),
    [
        (b"", []),
        (b"\n", [(b"", LF)]),
        (b"\r\n", [(b"", CRLF)]),
        (b"a\nb\r\n\n", [(b"a", LF), (b"b", CRLF), (b"", LF)]),
        (b"a\rb\n", [(b"a\rb", LF)]),  # a lone CR is data
        (b"\r\r\n", [(b"\r", CRLF)]),  # only the CR right before LF is terminator
        (b"\r\n\r\n", [(b"", CRLF), (b"", CRLF)]),
    ],
)
def test_split_block(block, lines):
    assert split_block(block) == lines


# -- L6 ---------------------------------------------------------------------------


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_exactly_max_line_is_fine_in_one_read_and_dripped(terminator):
    line = b"x" * MAX + terminator
    assert framed([line]) == line
    assert framed(drip(line)) == line
    assert framed([b"a\n" + line + b"b\n"]) == b"a\n" + line + b"b\n"


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_one_over_max_line_is_too_long(terminator):
    framer = LineFramer(MAX)
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"x" * (MAX + 1) + terminator)
    assert caught.value.block == b""
    assert caught.value.max_line == MAX
    assert str(caught.value) == f"line too long (max {MAX} bytes)"


def test_too_long_carries_the_complete_lines_before_it():
    framer = LineFramer(MAX)
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"uno\r\ndos\n" + b"x" * (MAX + 1) + b"\ntres\n")
    assert caught.value.block == b"uno\r\ndos\n"


def test_too_long_unterminated_rest_carries_the_lines_before_it():
    framer = LineFramer(MAX)
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"uno\n" + b"x" * (MAX + 5))
    assert caught.value.block == b"uno\n"


def test_too_long_after_a_held_partial():
    framer = LineFramer(MAX)
    assert framer.feed(b"x" * MAX) == b""
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"y\n")
    assert caught.value.block == b""


def test_a_cr_that_is_data_counts_towards_the_limit():
    """max_line bytes and a CR may be a CRLF; a CR that turns out to be data makes it too long."""
    framer = LineFramer(MAX)
    assert framer.feed(b"x" * MAX + b"\r") == b""
    with pytest.raises(LineTooLong):
        framer.feed(b"\r\n")  # text is MAX x's and a CR: MAX + 1 bytes


def test_dripping_a_long_line_fails_at_max_line_plus_one():
    framer = LineFramer(MAX)
    for byte in drip(b"x" * MAX):
        assert framer.feed(byte) == b""
    with pytest.raises(LineTooLong):
        framer.feed(b"x")


def test_dripping_max_line_then_cr_waits_for_the_lf():
    framer = LineFramer(MAX)
    for byte in drip(b"x" * MAX + b"\r"):
        assert framer.feed(byte) == b""
    assert framer.feed(b"\n") == b"x" * MAX + b"\r\n"


@pytest.mark.parametrize(
    "chunks",
    [
        drip(b"x" * MAX + b"\r\n" + b"y" * MAX + b"\n" + b"z" * MAX),
        [b"a\n" + b"x" * MAX, b"\r", b"\n" + b"y" * (MAX - 1), b"y\r\n" + b"z" * MAX + b"\r"],
        [b"x" * 3, b"x" * 3, b"x" * 3, b"x\r", b"\n"],
    ],
    ids=["drip", "crlf-across-reads", "partial-grows"],
)
def test_never_holds_more_than_max_line_plus_one(chunks):
    framer = LineFramer(MAX)
    for chunk in chunks:
        framer.feed(chunk)
        assert len(framer.pending) <= MAX + 1


@pytest.mark.parametrize("data", [b"x" * (MAX * 10), b"ok\n" + b"x" * (MAX * 10)], ids=["alone", "after-a-line"])
def test_holds_nothing_more_after_too_long(data):
    framer = LineFramer(MAX)
    with pytest.raises(LineTooLong):
        framer.feed(data)
    assert len(framer.pending) <= MAX + 1


def test_default_sized_limit():
    limit = 65536
    framer = LineFramer(limit)
    assert framer.feed(b"a" * limit + b"\r\n") == b"a" * limit + b"\r\n"
    with pytest.raises(LineTooLong):
        framer.feed(b"a" * (limit + 1) + b"\n")
