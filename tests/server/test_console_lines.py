"""The console's own lines: invalid bytes as ``\\xNN`` in both framings (S3), each end of a session in words (S4)."""

from __future__ import annotations

import socket

import pytest

from server.messages import ENGLISH, SPANISH
from statemachine.machine import CLOSED, CLOSING, CONNECTED, ECHOING, table
from tests.wire import connect, read_until_closed

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("framing", "sent"), [("line", b"ok\xff\xfe\xc3\n"), ("raw", b"ok\xff\xfe\xc3")])
def test_invalid_bytes_are_logged_as_hex_escapes_in_both_framings(start_server, framing, sent):
    server = start_server("--framing", framing)
    with connect(server.address) as sock:
        sock.sendall(sent)
        if framing == "raw":
            sock.shutdown(socket.SHUT_WR)  # the held C3 is the unfinished last message
        else:
            sock.sendall(b"DESCONEXION\n")
        read_until_closed(sock)
    line = server.wait_for_text("Mensaje recibido: ok")
    expected = "Mensaje recibido: ok\\xff\\xfe" + ("\\xc3" if framing == "line" else "")
    assert line == expected
    assert "\ufffd" not in "".join(server.stdout)


def _close_reasons() -> set[str]:
    """Every trigger that ends an open session: each gets its own words on the console."""
    return {
        trigger
        for (source, trigger), dest in table().items()
        if source in (CONNECTED, ECHOING) and dest in (CLOSING, CLOSED)
    }


@pytest.mark.parametrize("texts", [SPANISH, ENGLISH], ids=["es", "en"])
def test_every_way_a_session_ends_has_words_in_each_language(texts):
    for reason in _close_reasons():
        words = texts.reasons[reason]
        assert words and "_" not in words, (reason, words)
    assert len({texts.reasons[reason] for reason in _close_reasons()}) == len(_close_reasons())


@pytest.mark.parametrize(
    ("args", "send", "reason"),
    [
        ((), b"hola\n", "end_of_stream"),
        (("--max-line", "4"), b"demasiado\n", "line_too_long"),
        (("--idle-timeout", "0.2"), b"", "idle_timeout"),
    ],
)
@pytest.mark.parametrize("lang", ["es", "en"])
def test_other_ends_of_a_session_get_one_line_with_the_reason(start_server, args, send, reason, lang):
    server = start_server("--lang", lang, *args)
    texts = SPANISH if lang == "es" else ENGLISH
    with connect(server.address) as sock:
        port = sock.getsockname()[1]
        sock.sendall(send)
        if reason == "end_of_stream":
            sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)
    expected = texts.closed.format(peer=f"('127.0.0.1', {port})", reason=texts.reasons[reason])
    assert server.wait_for_text(texts.closed.split("{")[0]) == expected
    assert server.stop() == 0
    assert sum(line == expected for line in server.stdout) == 1
