"""Session with ``Limits(framing="raw")``: rules R1-R4 of the SPEC (seed compatibility)."""

from __future__ import annotations

import pytest

from statemachine import CLOSED, CLOSING, CONNECTED, ECHOING
from tests.statemachine.feeding import T0, session

INVALID = b"error: invalid utf-8\n"  # server lines end with LF in raw mode


def raw(**limits: object):
    return session(framing="raw", **limits)


@pytest.mark.parametrize(
    ("chunk", "reply"),
    [
        (b"hola", b"HOLA"),
        (b" hola mundo ", b" HOLA MUNDO "),
        (b"hola\n", b"HOLA\n"),
        (b"uno\ndos\r\n", b"UNO\nDOS\r\n"),
        ("straße ñandú".encode(), "STRASSE ÑANDÚ".encode()),
        (b"\r", b"\r"),
    ],
)
def test_each_read_is_one_message_answered_with_nothing_added(chunk, reply):
    sess = raw()
    assert sess.receive(chunk, T0) == reply
    assert sess.state == ECHOING


def test_reads_are_answered_one_by_one():
    sess = raw()
    assert [sess.receive(chunk, T0) for chunk in [b"uno", b"dos ", b"\n"]] == [b"UNO", b"DOS ", b"\n"]


def test_max_line_does_not_apply():
    sess = raw(max_line=10)
    assert sess.receive(b"x" * 100_000, T0) == b"X" * 100_000
    assert sess.state == ECHOING


@pytest.mark.parametrize(
    ("chunk", "reply"),
    [
        (b"DESCONEXION", b"DESCONEXION"),
        (b"desconexion", b"DESCONEXION"),
        ("Desconexión".encode(), "DESCONEXIÓN".encode()),
        (b" \tDESCONEXION\r\n", b" \tDESCONEXION\r\n"),
    ],
)
def test_the_disconnect_word_closes(chunk, reply):
    sess = raw()
    assert sess.receive(b"antes", T0) == b"ANTES"
    assert sess.receive(chunk, T0) == reply
    assert (sess.state, sess.reason) == (CLOSING, "disconnect")
    assert sess.receive(b"despues", T0) == b""
    sess.flushed()
    assert sess.state == CLOSED


@pytest.mark.parametrize("chunk", [b"DESCONEXIONES", b"hola DESCONEXION", b"DESCONEXION\nDESCONEXION\n"])
def test_a_read_that_only_contains_the_word_is_a_message(chunk):
    sess = raw()
    assert sess.receive(chunk, T0) == chunk.upper()
    assert sess.state == ECHOING


@pytest.mark.parametrize(
    ("chunks", "replies"),
    [
        ([b"a\xc3", b"\xb1b"], [b"A", "ÑB".encode()]),
        ([b"\xc3", b"\xb1"], [b"", "Ñ".encode()]),
        ([b"\xe2", b"\x82", b"\xac"], [b"", b"", "€".encode()]),
        ([b"x\xf0\x9f", b"\x98", b"\x80y"], [b"X", b"", "😀Y".encode()]),
        ([b"\xf4\x8f\xbf", b"\xbf"], [b"", "\U0010ffff".encode()]),
    ],
)
def test_an_unfinished_character_waits_for_the_next_read(chunks, replies):
    sess = raw()
    assert [sess.receive(chunk, T0) for chunk in chunks] == replies


@pytest.mark.parametrize("chunk", [b"\xff", b"\x80", b"\xfe", b"\xf5", b"caf\xe9!", b"\xc3(", b"\xed\xa0\x80"])
def test_an_invalid_read_gets_the_error_line_ending_with_lf(chunk):
    sess = raw()
    assert sess.receive(chunk, T0) == INVALID
    assert sess.state == ECHOING
    assert sess.receive(b"sigue", T0) == b"SIGUE"


def test_server_lines_end_with_lf_even_after_crlf_text():
    sess = raw()
    sess.receive(b"hola\r\n", T0)
    assert sess.receive(b"\xff", T0) == INVALID
    assert sess.shutdown() == b"error: server shutting down\n"


def test_idle_notice_ends_with_lf():
    sess = raw(idle_timeout=3)
    sess.receive(b"hola\r\n", T0)
    assert sess.check_idle(T0 + 3) == b"error: idle timeout\n"


def test_end_of_stream_closes():
    sess = raw()
    assert sess.receive(b"hola", T0) == b"HOLA"
    assert sess.end_of_stream() == b""
    assert (sess.state, sess.reason) == (CLOSING, "end_of_stream")


def test_an_unfinished_character_at_end_of_stream_is_invalid():
    sess = raw()
    assert sess.receive(b"ok\xe2\x82", T0) == b"OK"
    assert sess.end_of_stream() == INVALID
    assert (sess.state, sess.reason) == (CLOSING, "end_of_stream")


def test_nothing_yet_leaves_the_session_connected():
    sess = raw()
    assert sess.receive(b"\xf0", T0) == b""
    assert sess.state == CONNECTED


@pytest.mark.parametrize("chunk", [b"\xc0", b"\xc1", b"abc\xc0", b"abc\xe0\x80", b"\xf0\x80", b"\xf4\x90"])
def test_an_invalid_byte_that_looks_like_a_lead_is_not_held(chunk):
    """R4 waits only for an *incomplete* sequence; these can never complete, so L5 answers at once."""
    sess = raw()
    assert sess.receive(chunk, T0) == INVALID
