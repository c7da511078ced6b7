"""Wire protocol v1 and raw framing against the real server over loopback (L1-L10, R1-R4)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from client.connection import Connection
from tests.wire import connect, exchange, read_exactly, read_lines, read_until_closed

pytestmark = pytest.mark.timeout(60)


def test_seed_exchange_with_shared_client(server):
    with Connection(*server.address) as conn:
        assert conn.request("hola servidor") == "HOLA SERVIDOR"
        assert conn.disconnect() == "DESCONEXION"
    # the server stays up for the next client
    with Connection(*server.address) as conn:
        assert conn.request("otra vez") == "OTRA VEZ"


def test_nc_client_as_in_the_readme(server):
    if shutil.which("nc") is None:
        pytest.skip("nc (Debian package netcat-openbsd) is not installed; `make test` installs it")
    result = subprocess.run(
        ["nc", "-N", server.host, str(server.port)],
        input=b"hola\nDESCONEXION\n",
        capture_output=True,
        timeout=30,
    )
    assert result.stdout == b"HOLA\nDESCONEXION\n"
    assert result.returncode == 0


def test_framing_terminators_unicode_and_spaces(server):
    payload = "hola\r\nstraße\nñandú\n\n  con espacios \r\nlone\rcr\n".encode()
    expected = "HOLA\r\nSTRASSE\nÑANDÚ\n\n  CON ESPACIOS \r\nLONE\rCR\n".encode()
    assert exchange(server.address, payload) == expected


def test_one_byte_segments_give_the_same_replies(server):
    payload = "uno\r\nDós\ncafé ñ\n\nstraße\n".encode()
    bulk = exchange(server.address, payload)
    with connect(server.address) as sock:
        for i in range(len(payload)):
            sock.send(payload[i : i + 1])
        sock.shutdown(socket.SHUT_WR)
        dripped = read_until_closed(sock)
    assert dripped == bulk == "UNO\r\nDÓS\nCAFÉ Ñ\n\nSTRASSE\n".encode()


def test_many_pipelined_lines_in_order(server):
    lines = [f"línea {i}" for i in range(5000)]
    with Connection(*server.address) as conn:
        assert list(conn.pipeline(lines)) == [line.upper() for line in lines]


@pytest.mark.parametrize("word", ["DESCONEXION", "desconexion", "Desconexión", "  DESCONEXION\t"])
def test_disconnect_variants_end_only_that_session(server, word):
    with Connection(*server.address) as other:
        assert other.request("antes") == "ANTES"
        received = exchange(server.address, f"hola\n{word}\nnunca\n".encode())
        assert received == f"HOLA\n{word.upper()}\n".encode()
        assert other.request("después") == "DESPUÉS"


def test_disconnect_after_crlf_keeps_crlf(server):
    assert exchange(server.address, b"a\r\ndesconexion\r\nb\r\n") == b"A\r\nDESCONEXION\r\n"


def test_invalid_utf8_gets_error_and_session_goes_on(server):
    received = exchange(server.address, b"ok\n\xff\xfe\nbien\n")
    assert received == b"OK\nerror: invalid utf-8\nBIEN\n"


def test_multibyte_character_split_across_segments(server):
    with connect(server.address) as sock:
        sock.sendall(b"a\xc3")
        # wait until the server has surely read the first half: ask it for a reply
        sock.sendall(b"\xb1\n")
        assert read_lines(sock, 1) == ["AÑ\n".encode()]


def test_line_too_long_gets_error_then_close(start_server):
    srv = start_server("--max-line", "16")
    received = exchange(srv.address, b"exactly sixteen!\n" + b"x" * 17 + b"\nnever\n")
    assert received == b"EXACTLY SIXTEEN!\nerror: line too long (max 16 bytes)\n"


def test_line_too_long_without_newline_is_caught_early(start_server):
    srv = start_server("--max-line", "16")
    with connect(srv.address) as sock:
        sock.sendall(b"y" * 1000)
        assert read_until_closed(sock) == b"error: line too long (max 16 bytes)\n"


def test_end_of_stream_answers_the_tail_without_terminator(server):
    assert exchange(server.address, b"uno\ncola sin fin") == b"UNO\nCOLA SIN FIN"
    assert exchange(server.address, b"") == b""


def test_server_lines_use_last_terminator(start_server):
    srv = start_server("--max-line", "8")
    assert exchange(srv.address, b"ab\r\n" + b"z" * 20) == b"AB\r\nerror: line too long (max 8 bytes)\r\n"


def test_idle_timeout_notice_then_close(start_server):
    srv = start_server("--idle-timeout", "0.3")
    with connect(srv.address) as sock:
        sock.sendall(b"hola\n")
        assert read_until_closed(sock) == b"HOLA\nerror: idle timeout\n"


def test_busy_refusal_and_recovery(start_server):
    srv = start_server("--max-connections", "2")
    first = Connection(*srv.address).connect()
    second = Connection(*srv.address).connect()
    try:
        assert first.request("uno") == "UNO"
        assert second.request("dos") == "DOS"
        with connect(srv.address) as third:
            assert read_until_closed(third) == b"error: server busy\n"
        assert first.disconnect() == "DESCONEXION"
        # the freed slot is counted back by the worker: retry until it is
        deadline = time.monotonic() + 20
        while True:
            with connect(srv.address) as fourth:
                fourth.sendall(b"cuatro\n")
                line = read_lines(fourth, 1)[0]
            if line == b"CUATRO\n":
                break
            assert line == b"error: server busy\n"
            assert time.monotonic() < deadline, "a closed session never freed its slot"
        assert second.request("sigue") == "SIGUE"
    finally:
        first.close()
        second.close()


def test_raw_framing_like_the_seed(start_server):
    srv = start_server("--framing", "raw")
    with connect(srv.address) as sock:
        sock.sendall(b"hola servidor")
        assert read_exactly(sock, len(b"HOLA SERVIDOR")) == b"HOLA SERVIDOR"
        # R4: a character cut between two sends waits for its second half,
        # however the two sends are read
        word = "ñandú".encode()
        sock.sendall(word[:1])
        sock.sendall(word[1:])
        assert read_exactly(sock, len("ÑANDÚ".encode())) == "ÑANDÚ".encode()
        sock.sendall(b"DESCONEXION")
        assert read_until_closed(sock) == b"DESCONEXION"
