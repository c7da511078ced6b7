"""Our client against the classroom's server and the classroom's client against ours (C5).

The classroom's programs are the test peer of ``tests.classroom``: text with
no newline, one ``recv(1024)`` for the answer, and the bare word DESCONEXION.
The seed's own tests are 1) a message comes back in upper case and
2) DESCONEXION ends the session; both must pass with ``--framing raw``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from client.connection import Connection, NotClosed
from tests.client.clientproc import client_env, run_client
from tests.client.fakeserver import fake_server
from tests.serverproc import ROOT, ServerProcess, running_server

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def classroom() -> Iterator[ServerProcess]:
    """The classroom's blocking server on a free port."""
    with running_server("server", module="tests.classroom") as server:
        yield server


def test_seed_test_1_a_message_comes_back_in_upper_case(classroom):
    with Connection(*classroom.address, framing="raw") as conn:
        assert conn.request("hola mundo, ¿qué tal?") == "HOLA MUNDO, ¿QUÉ TAL?"
        assert conn.request("otra vez") == "OTRA VEZ"
    classroom.wait_for_text("Respuesta enviada al cliente: OTRA VEZ")


def test_seed_test_2_desconexion_ends_the_session(classroom):
    conn = Connection(*classroom.address, framing="raw").connect()
    assert conn.request("antes") == "ANTES"
    assert conn.disconnect() == ""  # the classroom's server closes without an answer
    assert not conn.connected and conn.closed_by_server
    classroom.wait_for_text("solicita desconexión.")
    with Connection(*classroom.address, framing="raw") as again:  # it serves the next client
        assert again.request("después") == "DESPUÉS"


def test_raw_cli_against_the_classroom_server(classroom):
    result = run_client(
        "--port", str(classroom.port), "--framing", "raw", stdin=None, input="hola\nseñor\nDESCONEXION\n".encode()
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "HOLA\nSEÑOR\n".encode()  # the word got no answer: nothing printed for it
    classroom.wait_for_text("solicita desconexión.")
    assert "Mensaje recibido: DESCONEXION" in classroom.stdout


def test_raw_cli_adds_the_bare_word_when_the_input_lacks_it(classroom):
    result = run_client("--port", str(classroom.port), "--framing", "raw", stdin=None, input=b"uno\ndos")
    assert (result.returncode, result.stderr, result.stdout) == (0, "", b"UNO\nDOS\n")
    classroom.wait_for_text("solicita desconexión.")


def test_raw_client_sends_the_word_as_the_classroom_server_compares_it(classroom):
    """Any spelling ends our session (L4); the classroom's server obeys only the exact ``DESCONEXION``."""
    result = run_client(
        "--port", str(classroom.port), "--framing", "raw", stdin=None, input="hola\ndesconexión\n".encode()
    )  # fmt: skip
    assert (result.returncode, result.stderr, result.stdout) == (0, "", b"HOLA\n")
    classroom.wait_for_text("solicita desconexión.")
    assert "Mensaje recibido: DESCONEXION" in classroom.stdout


def echo_and_stay_open(conn, fake) -> None:
    """A raw server that answers every read, the word included, and never closes."""
    while data := fake.recv(conn):
        conn.sendall(data.upper())


def test_raw_client_says_the_word_was_answered_when_the_close_does_not_follow():
    with fake_server(echo_and_stay_open) as fake, Connection(*fake.address, timeout=0.5, framing="raw") as conn:
        assert conn.request("hola") == "HOLA"
        with pytest.raises(NotClosed) as raised:
            conn.disconnect()
    assert str(raised.value) == "the server answered DESCONEXION but kept the connection open (0.5 s)"


def test_line_client_against_the_classroom_server_says_so_at_once(classroom):
    """The classroom's server echoes ``DESCONEXION\\n`` instead of obeying: said well before the timeout."""
    result = run_client("--port", str(classroom.port), "--timeout", "60", stdin=None, input=b"hola\n")
    assert result.returncode == 1
    assert result.stdout == b"HOLA\n"
    assert result.stderr.splitlines() == [
        "error: the server answered DESCONEXION but kept the connection open (2 s); a classroom server "
        "(like the seed's server.py) obeys only the bare word: try --framing raw (1 message answered)"
    ]


def test_library_wait_for_the_close_is_bounded_by_the_timeout(classroom):
    with Connection(*classroom.address, timeout=0.5) as conn:
        assert conn.request("hola") == "HOLA"
        with pytest.raises(NotClosed, match="try --framing raw"):
            conn.disconnect()


def test_raw_client_against_a_line_server_says_why_no_reply_comes(start_server):
    server = start_server("-q")
    result = run_client("--port", str(server.port), "--framing", "raw", "--timeout", "3", stdin=None, input=b"hola\n")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "warning: no reply after 2 s, still waiting up to 3 s; a server that reads one message per line "
        "(upperecho's default framing) does not answer text sent without a newline: leave out --framing raw"
    )
    assert lines[1:] == ["error: no reply from the server within 3.0 s (0 messages answered)"]


def test_raw_framing_cannot_pipeline_or_send_an_empty_line(classroom):
    result = run_client("--port", str(classroom.port), "--framing", "raw", "--pipeline", stdin=None, input=b"x\n")
    assert result.returncode == 2 and "--pipeline needs line framing" in result.stderr
    result = run_client("--port", str(classroom.port), "--framing", "raw", stdin=None, input=b"uno\n\ntres\n")
    assert result.returncode == 2
    assert result.stdout == b"UNO\n"
    assert result.stderr == (
        "error: standard input line 2 is empty, which raw framing cannot send (the lines before it were answered)\n"
    )
    with Connection(*classroom.address, framing="raw") as conn:
        with pytest.raises(ValueError, match="empty message"):
            conn.request("")
        assert conn.request("  ") == "  "  # white space is something to send


def test_classroom_client_against_our_raw_server(start_server):
    server = start_server("--framing", "raw")
    result = subprocess.run(
        [sys.executable, "-m", "tests.classroom", "client", "--port", str(server.port)],
        cwd=ROOT,
        env=client_env(),
        input="hola\nñandú\nDESCONEXION\n".encode(),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    prompt = "Ingresa mensaje (o 'DESCONEXION' para salir): "
    assert result.stdout.decode().splitlines() == [
        "Se establece una conexión con el servidor.",
        f"{prompt}Respuesta del servidor: HOLA",
        f"{prompt}Respuesta del servidor: ÑANDÚ",
        f"{prompt}Cerrando conexión con el servidor...",
    ]
    server.wait_for_text("solicita desconexión.")
