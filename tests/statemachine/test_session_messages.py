"""``Session.messages`` counts the messages answered, however the bytes arrive (the server's metrics read it)."""

from __future__ import annotations

import pytest

from statemachine import Limits, Session

T0 = 0.0


def _count(limits: Limits, chunks: list[bytes], end: bool = False, hook: bool = False) -> int:
    session = Session(limits, T0, (lambda text, reply: None) if hook else None)
    for chunk in chunks:
        session.receive(chunk, T0)
    if end:
        session.end_of_stream()
    return session.messages


STREAM = b"uno\ndos\r\n\n\xff\nno final"


@pytest.mark.parametrize("hook", [False, True])
def test_line_messages_counted_in_one_read_and_byte_by_byte(hook):
    line = Limits()
    assert _count(line, [STREAM], hook=hook) == 4  # the unterminated tail is not a message yet
    assert _count(line, [STREAM], end=True, hook=hook) == 5
    assert _count(line, [bytes([b]) for b in STREAM], end=True, hook=hook) == 5


def test_disconnect_is_a_message_and_nothing_after_it_counts():
    assert _count(Limits(), [b"hola\nDESCONEXION\nmas\notra\n"]) == 2


def test_notices_are_not_messages():
    assert _count(Limits(max_line=4), [b"ok\n12345"]) == 1
    session = Session(Limits(idle_timeout=1.0), T0)
    session.check_idle(T0 + 2.0)
    session.shutdown()
    assert session.messages == 0


def test_raw_chunks_are_messages():
    assert _count(Limits(framing="raw"), [b"hola", b"que tal", b"\xc3", b"\xb1"]) == 3
