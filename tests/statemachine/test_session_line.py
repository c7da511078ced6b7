"""Session in line mode, rules L1-L8 of the SPEC, with every expected reply written out by hand.

The ``run`` fixture feeds each stream in one read and one byte per read, with and
without an ``on_message`` hook, so each case also checks that the replies do not
depend on how the bytes arrived (L3).
"""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine import CLOSED, CLOSING, CONNECTED, ECHOING, Limits, Session
from tests.statemachine.feeding import T0, feed, recorded, session

INVALID = b"error: invalid utf-8"


def too_long(max_line: int) -> bytes:
    return f"error: line too long (max {max_line} bytes)".encode()


# -- L1 framing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "replies"),
    [
        (b"hola\n", b"HOLA\n"),
        (b"hola\r\n", b"HOLA\r\n"),
        (b"uno\ndos\r\ntres\n", b"UNO\nDOS\r\nTRES\n"),
        (b"a\rb\n", b"A\rB\n"),  # a lone CR is data
        (b"\rhola\r\r\n", b"\rHOLA\r\r\n"),  # only the CR right before LF is terminator
        (b"fin\r", b""),  # not ended yet: the CR may still be half of a CRLF
    ],
    ids=["lf", "crlf", "mixed", "lone-cr", "cr-before-crlf", "unended"],
)
def test_framing(run, data, replies):
    out, sess = run(data)
    assert out == replies


def test_nothing_ended_leaves_the_session_connected(run):
    out, sess = run(b"sin final")
    assert out == b""
    assert sess.state == CONNECTED


# -- L2 reply ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "upper"),
    [
        ("straße", "STRASSE"),
        ("ñandú", "ÑANDÚ"),
        ("  hola  mundo \t", "  HOLA  MUNDO \t"),
        ("\t", "\t"),
        ("abc123!?", "ABC123!?"),
        ("ﬁn", "FIN"),
        ("ǰ", "J\u030c"),
        ("ŉ", "\u02bcN"),
        ("ıi", "II"),
        ("ὀδυσσεύς", "ὈΔΥΣΣΕΎΣ"),
        ("déjà vu", "DÉJÀ VU"),
        ("😀 ok", "😀 OK"),
        ("ÑANDÚ", "ÑANDÚ"),
    ],
)
@pytest.mark.parametrize("terminator", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_full_unicode_upper_with_the_same_terminator(run, text, upper, terminator):
    out, sess = run((text + terminator).encode())
    assert out == (upper + terminator).encode()
    assert sess.state == ECHOING


def looks_like_the_word(text: str) -> bool:
    """A loose, conservative test for the disconnect word, to keep it out of generated messages."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "desconexion" in "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


MESSAGE_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n\r"), max_size=40)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(lines=st.lists(st.tuples(MESSAGE_TEXT, st.sampled_from(["\n", "\r\n"])), min_size=1, max_size=6))
def test_every_message_gets_str_upper_and_its_terminator(lines):
    """L2 names Python's ``str.upper`` as the case mapping: the expected reply is defined by it."""
    lines = [(text, end) for text, end in lines if not looks_like_the_word(text)]
    data = "".join(text + end for text, end in lines).encode()
    expected = "".join(text.upper() + end for text, end in lines).encode()
    calls, hook = recorded()
    assert feed(session(), [data]) == expected
    assert feed(Session(Limits(), T0, on_message=hook), [data]) == expected
    assert calls == [(text, text.upper()) for text, _ in lines]


# -- L3 one reply per message, in order ---------------------------------------------


@pytest.mark.parametrize(
    ("data", "replies"),
    [
        (b"\n", b"\n"),
        (b"\r\n", b"\r\n"),
        (b"\n\r\n\n", b"\n\r\n\n"),
        (b"uno\n\ndos\n", b"UNO\n\nDOS\n"),
        (b"3\n2\n1\nya\n", b"3\n2\n1\nYA\n"),
    ],
)
def test_one_reply_per_message_in_order(run, data, replies):
    out, sess = run(data)
    assert out == replies
    assert sess.state == ECHOING


def test_replies_as_lines_arrive():
    sess = session()
    assert sess.receive(b"uno\ndo", T0) == b"UNO\n"
    assert sess.receive(b"s\ntr", T0) == b"DOS\n"
    assert sess.receive(b"es\r", T0) == b""
    assert sess.receive(b"\n", T0) == b"TRES\r\n"


# -- L4 disconnect -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("DESCONEXION\n", "DESCONEXION\n"),
        ("desconexion\n", "DESCONEXION\n"),
        ("Desconexión\n", "DESCONEXIÓN\n"),
        ("Desconexio\u0301n\n", "DESCONEXIO\u0301N\n"),  # the accent as a combining mark
        ("DeScOnExIoN\r\n", "DESCONEXION\r\n"),
        (" \t desconexion\t \r\n", " \t DESCONEXION\t \r\n"),
        ("DESCONEXION\r\r\n", "DESCONEXION\r\r\n"),  # a lone CR is white space around it
        ("\u00a0DESCONEXIÓN\u3000\n", "\u00a0DESCONEXIÓN\u3000\n"),
        ("DÉSCÖNÈẊÍÕÑ\n", "DÉSCÖNÈẊÍÕÑ\n"),
    ],
)
def test_disconnect_word_and_its_variants(run, line, reply):
    out, sess = run(line.encode())
    assert out == reply.encode()
    assert sess.state == CLOSING
    assert sess.reason == "disconnect"
    assert not sess.is_open
    sess.flushed()
    assert sess.state == CLOSED


def test_bytes_after_the_word_are_discarded(run):
    out, sess = run(b"uno\r\nDESCONEXION\ndos\ntres\r\n\xff\n" + b"x" * 200_000 + b"\n")
    assert out == b"UNO\r\nDESCONEXION\n"
    assert sess.state == CLOSING
    assert sess.receive(b"cuatro\n", T0) == b""
    assert sess.end_of_stream() == b""
    assert sess.reason == "disconnect"


@pytest.mark.parametrize(
    "line",
    [
        "DESCONEXIONES",
        "DES CONEXION",
        "xDESCONEXION",
        "DESCONEXION.",
        "DESCONEXIO",
        "DESCONEXI0N",
        "'DESCONEXION'",
        "DESCONEXION DESCONEXION",
        "DESCONEXION\rx",
        "DESCONECCION",
    ],
)
def test_near_misses_are_ordinary_messages(run, line):
    out, sess = run(f"{line}\nsigue\n".encode())
    assert out == f"{line.upper()}\nSIGUE\n".encode()
    assert sess.state == ECHOING
    assert sess.reason is None


def test_one_session_closing_leaves_another_untouched():
    limits = Limits()
    first, second = Session(limits, T0), Session(limits, T0)
    assert first.receive(b"DESCONEXION\n", T0) == b"DESCONEXION\n"
    assert second.receive(b"hola\n", T0) == b"HOLA\n"
    assert (first.state, second.state) == (CLOSING, ECHOING)


# -- L5 invalid UTF-8 ----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff",
        b"\x80",
        b"caf\xe9",
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9f\x98",
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xf8\x88\x80\x80\x80",
        b"ok\xc3(",
    ],
)
@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_invalid_utf8_gets_the_error_and_the_session_goes_on(run, bad, terminator):
    out, sess = run(b"antes\n" + bad + terminator + b"despu\xc3\xa9s\n")
    assert out == b"ANTES\n" + INVALID + terminator + "DESPUÉS\n".encode()
    assert sess.state == ECHOING


@pytest.mark.parametrize(
    ("chunks", "reply"),
    [
        ([b"\xc3", b"\xb1and\xc3", b"\xba\n"], "ÑANDÚ\n"),
        ([b"\xe2", b"\x82", b"\xac\r", b"\n"], "€\r\n"),
        ([b"\xf0\x9f", b"\x98\x80", b"a\n"], "😀A\n"),
    ],
)
def test_a_character_split_across_reads_is_valid(chunks, reply):
    assert feed(session(), chunks) == reply.encode()


# -- L6 too long ---------------------------------------------------------------------


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_exactly_max_line_is_answered(run, terminator):
    out, sess = run(b"x" * 10 + terminator + "ñ".encode() * 5 + terminator, max_line=10)
    assert out == b"X" * 10 + terminator + "Ñ".encode() * 5 + terminator
    assert sess.state == ECHOING


@pytest.mark.parametrize(
    "line",
    [b"x" * 11 + b"\n", b"x" * 11 + b"\r\n", b"x" * 10 + b"\r\r\n", "ñ".encode() * 5 + b"a\n", b"x" * 5000],
    ids=["lf", "crlf", "cr-is-data", "bytes-not-characters", "unended"],
)
def test_one_byte_over_max_line_closes(run, line):
    out, sess = run(line + b"after\n", max_line=10)
    assert out == too_long(10) + b"\n"
    assert sess.state == CLOSING
    assert sess.reason == "line_too_long"
    assert sess.receive(b"more\n", T0) == b""
    sess.flushed()
    assert sess.state == CLOSED


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_earlier_lines_are_answered_before_the_error(run, terminator):
    t = terminator
    out, sess = run(b"uno" + t + t + b"dos" + t + b"y" * 11 + t + b"tres" + t, max_line=10)
    assert out == b"UNO" + t + t + b"DOS" + t + too_long(10) + t
    assert sess.reason == "line_too_long"


def test_disconnect_before_a_long_line_wins(run):
    out, sess = run(b"DESCONEXION\n" + b"x" * 50 + b"\n", max_line=20)
    assert out == b"DESCONEXION\n"
    assert sess.reason == "disconnect"


def test_default_max_line_is_65536():
    fits = b"a" * 65536
    assert feed(session(), [fits + b"\n"]) == b"A" * 65536 + b"\n"
    sess = session()
    assert feed(sess, [fits + b"a\n"]) == too_long(65536) + b"\n"
    assert sess.state == CLOSING


def test_dripping_a_long_line_fails_at_the_first_byte_over():
    sess = session(max_line=10)
    for _ in range(10):
        assert sess.receive(b"x", T0) == b""
    assert sess.state == CONNECTED
    assert sess.receive(b"x", T0) == too_long(10) + b"\n"
    assert sess.state == CLOSING
    assert sess.receive(b"x", T0) == b""


# -- L7 end of stream ----------------------------------------------------------------


def test_end_of_stream_without_a_tail():
    sess = session()
    assert sess.receive(b"hola\n", T0) == b"HOLA\n"
    assert sess.end_of_stream() == b""
    assert (sess.state, sess.reason, sess.eof) == (CLOSING, "end_of_stream", True)
    sess.flushed()
    assert sess.state == CLOSED


def test_end_of_stream_of_a_silent_client():
    sess = session()
    assert sess.end_of_stream() == b""
    assert (sess.state, sess.reason) == (CLOSING, "end_of_stream")


@pytest.mark.parametrize(
    ("data", "replies", "tail"),
    [
        (b"uno\nhola", b"UNO\n", b"HOLA"),
        (b"uno\r\nhola", b"UNO\r\n", b"HOLA"),
        (b"hola\r", b"", b"HOLA\r"),
        (b" a b ", b"", b" A B "),
        ("straße".encode(), b"", b"STRASSE"),
    ],
)
def test_the_tail_is_a_last_message_without_terminator(run, data, replies, tail):
    out, sess = run(data)
    assert out == replies
    assert sess.end_of_stream() == tail
    assert (sess.state, sess.reason) == (CLOSING, "end_of_stream")


@pytest.mark.parametrize("tail", [b"DESCONEXION", b" desconexi\xc3\xb3n\t"])
def test_a_tail_that_is_the_word_disconnects(run, tail):
    out, sess = run(b"uno\n" + tail)
    assert out == b"UNO\n"
    assert sess.end_of_stream() == tail.decode().upper().encode()
    assert (sess.state, sess.reason) == (CLOSING, "disconnect")
    sess.flushed()
    assert sess.state == CLOSED


def test_an_invalid_tail_gets_the_error_line():
    sess = session()
    assert sess.receive(b"uno\r\n\xff", T0) == b"UNO\r\n"
    assert sess.end_of_stream() == INVALID + b"\r\n"
    assert (sess.state, sess.reason) == (CLOSING, "end_of_stream")


def test_end_of_stream_after_closing_adds_nothing():
    sess = session()
    sess.receive(b"DESCONEXION\nresto", T0)
    assert sess.end_of_stream() == b""
    assert sess.end_of_stream() == b""
    assert (sess.state, sess.reason) == (CLOSING, "disconnect")


# -- L8 server lines -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "terminator"),
    [
        (b"", b"\n"),
        (b"a\n", b"\n"),
        (b"a\r\n", b"\r\n"),
        (b"a\r\nb\n", b"\n"),
        (b"a\nb\r\n", b"\r\n"),
        (b"a\r\n\n", b"\n"),
        (b"a\r\nunended", b"\r\n"),
        (b"a\nunended\r", b"\n"),
        (b"\xff\r\n", b"\r\n"),
    ],
)
def test_server_lines_end_like_the_last_message(run, data, terminator):
    out, sess = run(data)
    assert sess.shutdown() == b"error: server shutting down" + terminator


def test_idle_and_too_long_notices_end_like_the_last_message():
    sess = session(idle_timeout=5)
    sess.receive(b"a\r\n", T0)
    assert sess.check_idle(T0 + 5) == b"error: idle timeout\r\n"
    sess = session(max_line=4)
    assert sess.receive(b"a\r\nb\r\nlonger\r\n", T0) == b"A\r\nB\r\n" + too_long(4) + b"\r\n"


def every_code_point() -> str:
    """Every character a client can send, one per line (LF is the terminator itself)."""
    return "".join(
        chr(code) + "\n" for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF and code != 0x0A
    )


@pytest.mark.parametrize("hooked", [False, True], ids=["block", "per-line"])
def test_echoes_of_every_character_hold_no_ascii_lower_case(hooked):
    """L8: a client tells an echo from a server line because echoes have no a-z."""
    text = every_code_point()
    calls, hook = recorded()
    sess = Session(Limits(max_line=8), T0, on_message=hook if hooked else None)
    out = sess.receive(text.encode(), T0)
    assert re.search(rb"[a-z]", out) is None
    assert out == text.upper().encode()
    assert sess.state == ECHOING
