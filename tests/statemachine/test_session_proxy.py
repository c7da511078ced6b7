"""The session's PROXY header phase (O2): nothing is answered before a valid header, then the client's input."""

from __future__ import annotations

import pytest

from statemachine import CLOSED, CLOSING, CONNECTED, ECHOING, Limits, Session
from statemachine.machine import PROXY_HEADER
from statemachine.proxy import V2_SIGNATURE
from tests.statemachine.feeding import T0

HEADER = b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 5000\r\n"
LOCAL_V2 = V2_SIGNATURE + b"\x20\x00\x00\x00"


def proxied(proxy: str = "any", **limits: object) -> tuple[Session, list[str]]:
    messages: list[str] = []
    sess = Session(Limits(proxy=proxy, **limits), T0, on_message=lambda text, reply: messages.append(text))
    return sess, messages


def test_without_proxy_a_session_starts_connected():
    assert Session(Limits(), T0).state == CONNECTED
    assert Session(Limits(), T0).header_deadline() is None


def test_without_proxy_a_session_names_no_client_of_its_own():
    """The socket's peer stands: no header, no address, no refusal, before and after messages."""
    sess = Session(Limits(), T0)
    assert (sess.header, sess.client_address, sess.proxy_error) == (None, None, None)
    assert sess.receive(b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 5000\r\nhola\n", T0) == (
        b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 5000\r\nHOLA\n"
    )
    assert (sess.header, sess.client_address, sess.proxy_error) == (None, None, None)


def test_the_header_hook_sees_the_header_once_before_any_message_after_it():
    """The server names the client in its transcript from this hook (O2): it must come, once, and first."""
    seen: list[tuple[str, object]] = []
    sess = Session(
        Limits(proxy="any"),
        T0,
        on_message=lambda text, reply: seen.append(("message", text)),
        on_header=lambda header: seen.append(("header", header.source)),
    )
    assert sess.receive(HEADER[:10], T0) == b"" and seen == []
    assert sess.receive(HEADER[10:] + b"hola\n", T0) == b"HOLA\n"
    assert sess.receive(b"mundo\n", T0) == b"MUNDO\n"
    assert seen == [("header", ("203.0.113.7", 4242)), ("message", "hola"), ("message", "mundo")]
    assert sess.proxy_error is None  # a header was read: nothing was refused


def test_an_empty_read_while_the_header_is_awaited_answers_nothing_and_changes_nothing():
    sess, _ = proxied()
    assert sess.receive(b"", T0 + 1) == b""
    assert (sess.state, sess.header_deadline()) == (PROXY_HEADER, T0 + 5)


def test_a_refused_header_never_reaches_the_header_hook():
    seen: list[object] = []
    sess = Session(Limits(proxy="any"), T0, on_header=seen.append)
    assert sess.receive(b"GET / HTTP/1.0\r\n", T0) == b""
    assert (sess.state, sess.proxy_error is not None, seen) == (CLOSED, True, [])


def test_header_then_messages_in_the_same_read():
    sess, messages = proxied()
    assert sess.state == PROXY_HEADER and sess.awaiting_header and not sess.is_open
    assert sess.receive(HEADER + b"hola\nmundo", T0 + 1) == b"HOLA\n"
    assert sess.state == ECHOING
    assert sess.client_address == ("203.0.113.7", 4242)
    assert sess.header.destination == ("127.0.0.1", 5000)
    assert messages == ["hola"]
    assert sess.receive(b"\n", T0 + 2) == b"MUNDO\n"


def test_header_a_byte_at_a_time():
    sess, _ = proxied("v1")
    for byte in HEADER:
        assert sess.receive(bytes([byte]), T0) == b""
    assert sess.state == CONNECTED
    assert sess.receive(b"x\n", T0) == b"X\n"


def test_local_and_unknown_name_no_client_address():
    sess, _ = proxied("v2")
    assert sess.receive(LOCAL_V2 + b"ping\n", T0) == b"PING\n"
    assert sess.client_address is None
    sess, _ = proxied("v1")
    sess.receive(b"PROXY UNKNOWN\r\n", T0)
    assert (sess.state, sess.client_address) == (CONNECTED, None)


@pytest.mark.parametrize(
    "data",
    [b"hola\n", b"DESCONEXION\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nhola\n", V2_SIGNATURE + b"\x30\x00\x00\x00hola\n"],
)
def test_a_bad_header_is_refused_silently_and_nothing_is_read_as_a_message(data):
    sess, messages = proxied()
    assert sess.receive(data, T0) == b""
    assert (sess.state, sess.reason) == (CLOSED, "proxy_rejected")
    assert sess.proxy_error
    assert messages == []
    assert sess.receive(b"more\n", T0) == b""
    assert sess.end_of_stream() == b""


def test_the_wrong_version_is_refused():
    sess, _ = proxied("v2")
    sess.receive(HEADER, T0)
    assert sess.proxy_error == "not a PROXY protocol version 2 header"


def test_end_of_stream_and_shutdown_during_the_header_refuse_without_a_reply():
    sess, _ = proxied()
    sess.receive(HEADER[:10], T0)
    assert sess.end_of_stream() == b""
    assert (sess.state, sess.proxy_error) == (CLOSED, "end of stream inside the PROXY header")
    sess, _ = proxied()
    assert sess.shutdown() == b""
    assert (sess.state, sess.reason, sess.proxy_error) == (CLOSED, "proxy_rejected", "the server is shutting down")


def test_the_header_deadline_runs_from_the_start_and_bytes_do_not_restart_it():
    sess, _ = proxied(proxy_timeout=5, idle_timeout=30)
    assert sess.header_deadline() == T0 + 5
    assert sess.idle_deadline() is None
    sess.receive(b"PROXY ", T0 + 4)
    assert sess.header_deadline() == T0 + 5
    sess.check_header(T0 + 4.999)
    assert sess.state == PROXY_HEADER
    sess.check_header(T0 + 5)
    assert (sess.state, sess.proxy_error) == (CLOSED, "no complete PROXY header within 5 s")


def test_after_the_header_the_idle_clock_starts():
    sess, _ = proxied(proxy_timeout=5, idle_timeout=30)
    sess.receive(HEADER, T0 + 2)
    assert sess.header_deadline() is None
    assert sess.idle_deadline() == T0 + 32
    sess.check_header(T0 + 100)
    assert sess.state == CONNECTED


def test_abort_during_the_header():
    sess, _ = proxied()
    sess.abort()
    assert (sess.state, sess.reason) == (CLOSED, "abort")


def test_the_disconnect_word_right_after_the_header():
    sess, _ = proxied()
    assert sess.receive(HEADER + b"DESCONEXION\nlost\n", T0) == b"DESCONEXION\n"
    assert (sess.state, sess.reason) == (CLOSING, "disconnect")


def test_raw_framing_behind_a_header():
    sess, _ = proxied(framing="raw")
    assert sess.receive(HEADER + b"hola", T0) == b"HOLA"


@pytest.mark.parametrize(("field", "value"), [("proxy", "v3"), ("proxy_timeout", 0), ("proxy_timeout", float("nan"))])
def test_limits_check_the_proxy_settings(field, value):
    with pytest.raises(ValueError, match=field):
        Limits(**{field: value})
