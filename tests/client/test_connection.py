"""The shared client class: requests, pipelining and its errors (C3, C4)."""

from __future__ import annotations

import pytest

from client.connection import ClientError, ConnectError, Connection, ConnectionLost, ServerError
from tests.client.fakeserver import answer_one_then_close, drain_until_closed, fake_server, free_port, upper_echo

pytestmark = pytest.mark.timeout(60)


def test_request_then_disconnect_sends_exactly_the_protocol_bytes():
    with fake_server(upper_echo) as fake, Connection(*fake.address) as conn:
        assert conn.request("hola servidor") == "HOLA SERVIDOR"
        assert conn.request("") == ""
        assert conn.disconnect() == "DESCONEXION"
        assert not conn.connected
    assert bytes(fake.received) == b"hola servidor\n\nDESCONEXION\n"


def test_refused_connection_is_a_connect_error():
    port = free_port()
    with pytest.raises(ConnectError, match=f"cannot connect to 127.0.0.1:{port}: connection refused"):
        Connection("127.0.0.1", port).connect()


def test_server_line_is_a_server_error_with_the_line():
    def refuse(conn, fake):
        fake.read_line(conn)
        conn.sendall(b"error: line too long (max 10 bytes)\n")
        drain_until_closed(conn, fake)

    with fake_server(refuse) as fake, Connection(*fake.address) as conn, pytest.raises(ServerError) as caught:
        conn.request("x" * 20)
    assert caught.value.line == "error: line too long (max 10 bytes)"
    assert str(caught.value) == "server said: error: line too long (max 10 bytes)"


def test_server_gone_mid_session_is_connection_lost():
    with fake_server(answer_one_then_close) as fake, Connection(*fake.address) as conn:
        assert conn.request("uno") == "UNO"
        with pytest.raises(ConnectionLost):
            conn.request("dos")


def test_a_raw_reply_cut_mid_character_by_the_end_of_the_stream_is_shown_then_the_loss_is_told():
    """A server that ends the stream in the middle of a character (one that answers byte by
    byte and then stops, say) still has its last reply shown, the cut character as U+FFFD;
    the next read tells the loss."""

    def cut(conn, fake):
        fake.recv(conn)
        conn.sendall("AÑO ".encode() + "Ñ".encode()[:1])  # one byte of a two-byte character, then the end

    with fake_server(cut) as fake, Connection(*fake.address, framing="raw") as conn:
        conn.send("año ñ")
        assert conn.receive_line() == "AÑO \ufffd"
        with pytest.raises(ConnectionLost, match="the server closed the connection"):
            conn.receive_line()


def test_silent_server_is_connection_lost_after_the_timeout():
    def mute(conn, fake):
        fake.read_line(conn)
        fake.read_line(conn)  # blocks until the client gives up and closes

    with (
        fake_server(mute) as fake,
        Connection(*fake.address, timeout=0.5) as conn,
        pytest.raises(ConnectionLost, match="no reply from the server within 0.5 s"),
    ):
        conn.request("¿hay alguien?")


def test_line_after_the_disconnect_reply_is_a_protocol_error():
    def chatty(conn, fake):
        fake.read_line(conn)
        conn.sendall(b"DESCONEXION\nerror: surprise\n")
        drain_until_closed(conn, fake)

    with (
        fake_server(chatty) as fake,
        Connection(*fake.address) as conn,
        pytest.raises(ClientError, match="unexpected line after the session ended"),
    ):
        conn.disconnect()


@pytest.mark.parametrize("text", ["dos\nlíneas", "termina en CR\r", "\n"])
def test_text_that_line_framing_cannot_carry_is_refused_before_sending(text):
    with fake_server(upper_echo) as fake, Connection(*fake.address) as conn:
        with pytest.raises(ValueError, match="cannot contain LF or end with CR"):
            conn.send(text)
        with pytest.raises(ValueError):
            list(conn.pipeline(["bien", text]))
        assert conn.request("sigue") == "SIGUE"
        conn.disconnect()
    assert b"CR" not in fake.received and b"l\xc3\xadneas" not in fake.received


@pytest.mark.parametrize("window", [1, 7, 1000])
def test_pipeline_replies_in_order_for_any_window(server, window):
    texts = [f"línea {i} straße ñandú" if i % 5 else "" for i in range(3000)]
    with Connection(*server.address) as conn:
        assert list(conn.pipeline(texts, window=window)) == [text.upper() for text in texts]
        assert list(conn.pipeline([], window=window)) == []
        assert conn.disconnect() == "DESCONEXION"


@pytest.mark.parametrize(("window", "max_bytes"), [(10, 1 << 20), (1000, 1000)])
def test_pipeline_reads_its_input_lazily(server, window, max_bytes):
    consumed = 0

    def texts():
        nonlocal consumed
        for i in range(500):
            consumed += 1
            yield f"{i:099d}"  # 100 bytes with the LF

    with Connection(*server.address) as conn:
        replies = conn.pipeline(texts(), window=window, max_bytes=max_bytes)
        assert next(replies) == f"{0:099d}"
        assert consumed <= 11
        assert len(list(replies)) == 499


def test_pipeline_of_long_growing_replies_does_not_deadlock(start_server):
    # Each reply is three times its message (2 bytes -> 6): 18 MB sent, 54 MB
    # of replies.  Sending it all before reading (max_bytes=1 << 30) stalls
    # both sides on full buffers until the timeout.
    texts = ["\u0390" * 30000] * 300
    server = start_server("-q")
    with Connection(*server.address, timeout=30) as conn:
        replies = list(conn.pipeline(texts))
    assert replies == [texts[0].upper()] * 300
    assert len(replies[0].encode()) == 180000
