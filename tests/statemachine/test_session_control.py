"""Session inputs that are not client bytes: idle time (L9), the message deadline (L14),
shutdown (L11), abort, flush; what CLOSING and CLOSED do with input; the ``on_message`` hook; Limits."""

from __future__ import annotations

import pytest

from statemachine import CLOSED, CLOSING, CONNECTED, ECHOING, Limits, MachineError, Session
from tests.statemachine.feeding import T0, feed, recorded, session

IDLE = b"error: idle timeout"
LINE_TIMEOUT = b"error: line timeout"
SHUTDOWN = b"error: server shutting down"


# -- L9 idle timeout -----------------------------------------------------------------


def test_idle_deadline_is_last_input_plus_timeout():
    sess = session(idle_timeout=30)
    assert sess.idle_deadline() == T0 + 30
    sess.receive(b"ho", T0 + 7)
    assert sess.idle_deadline() == T0 + 37


def test_default_idle_timeout_is_300_seconds():
    assert session().idle_deadline() == T0 + 300


def test_idle_fires_once_the_deadline_is_reached():
    sess = session(idle_timeout=30)
    assert sess.check_idle(T0 + 29.999) == b""
    assert sess.state == CONNECTED
    assert sess.check_idle(T0 + 30) == IDLE + b"\n"
    assert (sess.state, sess.reason) == (CLOSING, "idle_timeout")
    assert sess.idle_deadline() is None
    assert sess.check_idle(T0 + 1000) == b""


def test_any_received_byte_restarts_the_timer():
    sess = session(idle_timeout=30)
    assert sess.receive(b"h", T0 + 20) == b""  # a partial line counts too
    assert sess.check_idle(T0 + 30) == b""
    assert sess.check_idle(T0 + 49.9) == b""
    assert sess.receive(b"ola\n", T0 + 45) == b"HOLA\n"
    assert sess.check_idle(T0 + 74.9) == b""
    assert sess.check_idle(T0 + 75) == IDLE + b"\n"


def test_idle_notice_after_a_crlf_message_ends_with_crlf():
    sess = session(idle_timeout=1)
    sess.receive(b"hola\r\n", T0)
    assert sess.check_idle(T0 + 2) == IDLE + b"\r\n"


def test_zero_turns_the_idle_timeout_off():
    sess = session(idle_timeout=0)
    assert sess.idle_deadline() is None
    assert sess.check_idle(T0 + 10**9) == b""
    assert sess.state == CONNECTED


def test_no_idle_deadline_while_closing():
    sess = session(idle_timeout=30)
    sess.receive(b"DESCONEXION\n", T0)
    assert sess.idle_deadline() is None
    assert sess.check_idle(T0 + 10**6) == b""
    assert sess.reason == "disconnect"


# -- L14 message deadline ------------------------------------------------------------


def test_the_message_deadline_runs_from_the_first_byte_and_trickling_does_not_restart_it():
    sess = session(idle_timeout=30, line_timeout=60)
    assert sess.line_deadline() is None  # nothing unfinished
    for second in range(0, 60, 5):
        assert sess.receive(b"x", T0 + second) == b""
        assert sess.check_deadlines(T0 + second) == b""
    assert sess.line_deadline() == T0 + 60
    assert sess.idle_deadline() == T0 + 85  # each byte restarts L9's clock
    assert sess.next_deadline() == T0 + 60
    assert sess.check_deadlines(T0 + 59.999) == b""
    assert sess.check_deadlines(T0 + 60) == LINE_TIMEOUT + b"\n"
    assert (sess.state, sess.reason) == (CLOSING, "line_timeout")
    assert sess.next_deadline() is None
    assert sess.end_of_stream() == b""  # the dropped message is not answered later


def test_each_message_has_its_own_deadline():
    sess = session(idle_timeout=0, line_timeout=10)
    assert sess.receive(b"uno", T0) == b""
    assert sess.receive(b"\ndos", T0 + 9) == b"UNO\n"  # the next message began at T0 + 9
    assert sess.line_deadline() == T0 + 19
    assert sess.receive(b" y\n", T0 + 18) == b"DOS Y\n"
    assert sess.line_deadline() is None
    assert sess.next_deadline() is None
    assert sess.check_deadlines(T0 + 10**6) == b""
    assert sess.is_open


def test_a_message_started_and_left_in_one_read_starts_its_clock_then():
    sess = session(idle_timeout=0, line_timeout=10)
    assert sess.receive(b"a\nb\nc", T0 + 3) == b"A\nB\n"
    assert sess.line_deadline() == T0 + 13


def test_the_line_timeout_notice_ends_like_the_last_message():
    sess = session(line_timeout=5)
    assert sess.receive(b"hola\r\npartial", T0) == b"HOLA\r\n"
    assert sess.check_deadlines(T0 + 5) == LINE_TIMEOUT + b"\r\n"


def test_the_idle_timeout_still_fires_first_when_it_is_shorter():
    sess = session(idle_timeout=5, line_timeout=60)
    sess.receive(b"partial", T0)
    assert sess.next_deadline() == T0 + 5
    assert sess.check_deadlines(T0 + 5) == IDLE + b"\n"
    assert sess.reason == "idle_timeout"


def test_zero_turns_the_message_deadline_off_and_raw_framing_has_none():
    off = session(idle_timeout=0, line_timeout=0)
    off.receive(b"partial", T0)
    assert off.line_deadline() is None
    assert off.check_deadlines(T0 + 10**9) == b""
    raw = session(framing="raw", idle_timeout=0, line_timeout=5)
    assert raw.receive(b"no newline", T0) == b"NO NEWLINE"
    raw.receive("ñ".encode()[:1], T0)  # a held character is not an unfinished message
    assert raw.line_deadline() is None
    assert raw.check_deadlines(T0 + 10**6) == b""


# -- L11 shutdown --------------------------------------------------------------------


def test_shutdown_drops_the_partial_line_and_sends_the_notice():
    sess = session()
    assert sess.receive(b"uno\ndos sin final", T0) == b"UNO\n"
    assert sess.shutdown() == SHUTDOWN + b"\n"
    assert (sess.state, sess.reason) == (CLOSING, "shutdown")
    assert sess.end_of_stream() == b""  # the dropped partial is not answered later
    sess.flushed()
    assert sess.state == CLOSED


def test_shutdown_of_a_silent_session():
    sess = session()
    assert sess.shutdown() == SHUTDOWN + b"\n"
    assert sess.state == CLOSING


def test_shutdown_of_a_closing_session_adds_nothing():
    sess = session()
    sess.receive(b"DESCONEXION\n", T0)
    assert sess.shutdown() == b""
    assert (sess.state, sess.reason) == (CLOSING, "disconnect")


def test_raw_shutdown_drops_a_held_partial_character():
    sess = session(framing="raw")
    assert sess.receive(b"ok\xc3", T0) == b"OK"
    assert sess.shutdown() == SHUTDOWN + b"\n"
    assert sess.end_of_stream() == b""


# -- abort, flushed and the closed states ---------------------------------------------


def in_state(state: str) -> Session:
    sess = session()
    if state == ECHOING:
        sess.receive(b"hola\n", T0)
    elif state == CLOSING:
        sess.receive(b"DESCONEXION\n", T0)
    elif state == CLOSED:
        sess.receive(b"DESCONEXION\n", T0)
        sess.flushed()
    assert sess.state == state
    return sess


@pytest.mark.parametrize("state", [CONNECTED, ECHOING, CLOSING, CLOSED])
def test_abort_from_every_state_ends_in_closed(state):
    sess = in_state(state)
    sess.abort()
    assert sess.state == CLOSED
    sess.abort()
    assert sess.state == CLOSED


@pytest.mark.parametrize("state", [CONNECTED, ECHOING])
def test_abort_of_an_open_session_names_the_reason(state):
    sess = in_state(state)
    sess.abort()
    assert sess.reason == "abort"


@pytest.mark.parametrize("state", [CONNECTED, ECHOING, CLOSED])
def test_flushed_is_only_for_a_closing_session(state):
    sess = in_state(state)
    with pytest.raises(MachineError):
        sess.flushed()
    assert sess.state == state


@pytest.mark.parametrize("state", [CLOSING, CLOSED])
def test_closing_and_closed_discard_every_input(state):
    calls, hook = recorded()
    sess = in_state(state)
    sess.on_message = hook
    assert sess.receive(b"hola\n\xff\n" + b"x" * 100_000 + b"\nDESCONEXION\n", T0) == b""
    assert sess.receive(b"tail", T0) == b""
    assert sess.check_idle(T0 + 10**6) == b""
    assert sess.shutdown() == b""
    assert sess.end_of_stream() == b""
    assert sess.state == state
    assert sess.reason == "disconnect"
    assert calls == []


def test_is_open_only_in_connected_and_echoing():
    assert [in_state(s).is_open for s in (CONNECTED, ECHOING, CLOSING, CLOSED)] == [True, True, False, False]


# -- the on_message hook -------------------------------------------------------------


def test_hook_sees_every_message_once_in_order():
    calls, hook = recorded()
    sess = Session(Limits(), T0, on_message=hook)
    chunks = [b"uno\r\ndos\n\n", b"stra\xc3", b"\x9fe\n\xff\n", b"DESCONEXION\nnunca\n"]
    assert feed(sess, chunks) == b"UNO\r\nDOS\n\nSTRASSE\nerror: invalid utf-8\nDESCONEXION\n"
    assert [reply for _, reply in calls] == ["UNO", "DOS", "", "STRASSE", "error: invalid utf-8", "DESCONEXION"]
    assert [text for text, _ in calls[:4]] == ["uno", "dos", "", "straße"]
    assert calls[5][0] == "DESCONEXION"


def test_hook_sees_the_tail_at_end_of_stream():
    calls, hook = recorded()
    sess = Session(Limits(), T0, on_message=hook)
    sess.receive(b"uno\nfin", T0)
    sess.end_of_stream()
    assert calls == [("uno", "UNO"), ("fin", "FIN")]


def test_hook_sees_lines_before_a_long_one_and_not_the_long_one():
    calls, hook = recorded()
    sess = Session(Limits(max_line=5), T0, on_message=hook)
    sess.receive(b"uno\ndos\nlarguisima\ntres\n", T0)
    assert calls == [("uno", "UNO"), ("dos", "DOS")]


def test_hook_in_raw_mode_sees_each_chunk():
    calls, hook = recorded()
    sess = Session(Limits(framing="raw"), T0, on_message=hook)
    feed(sess, [b"hola mundo", b"\xc3", b"\xb1", b" desconexion "])
    assert calls == [("hola mundo", "HOLA MUNDO"), ("ñ", "Ñ"), (" desconexion ", " DESCONEXION ")]


# -- Limits --------------------------------------------------------------------------


def test_limit_defaults():
    assert Limits() == Limits(framing="line", max_line=65536, idle_timeout=300, line_timeout=60)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"framing": "lines"},
        {"framing": ""},
        {"max_line": 0},
        {"max_line": -1},
        {"idle_timeout": -0.5},
        {"line_timeout": -1},
    ],
)
def test_bad_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        Limits(**kwargs)


def test_reply_per_byte_is_the_largest_reply_one_byte_can_cause():
    """L12's read sizing rests on these: the error line per invalid byte, and upper case at most 3x."""
    line = Session(Limits(), T0).receive(b"\xff\n", T0)
    assert len(line) / 2 <= Limits().reply_per_byte == 11
    assert len(Session(Limits(framing="raw"), T0).receive(b"\xff", T0)) <= Limits(framing="raw").reply_per_byte == 21
    widest = max(
        len(chr(code).upper().encode()) / len(chr(code).encode())
        for code in range(0x110000)
        if not 0xD800 <= code <= 0xDFFF
    )
    assert widest == 3
