"""The interactive client (C1) on a pseudo-terminal: the seed's two manual tests and how a session ends."""

from __future__ import annotations

import io
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pexpect
import pytest

from tests.client.clientproc import client_env, default_sigint
from tests.client.fakeserver import drain_until_closed, fake_server, free_port
from tests.serverproc import ROOT

pytestmark = pytest.mark.timeout(90)

CONNECTED = "Se establece una conexión con el servidor."
PROMPT = "Ingresa mensaje (o 'DESCONEXION' para salir): "
CLOSING = "Cerrando conexión con el servidor..."


@contextmanager
def console(*args: str, **env: str) -> Iterator[pexpect.spawn]:
    """``python -m client`` on a pseudo-terminal; everything it shows is kept in ``child.shown``."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "client", *args],
        cwd=str(ROOT),
        env=client_env(**env),
        encoding="utf-8",
        timeout=30,
        dimensions=(24, 100),
        preexec_fn=default_sigint,
    )
    child.shown = io.StringIO()
    child.logfile_read = child.shown
    try:
        yield child
    finally:
        child.close(force=True)


def finish(child: pexpect.spawn) -> int:
    """Wait for the client to exit; its status, after checking it showed no traceback."""
    child.expect(pexpect.EOF)
    child.close()
    assert "Traceback" not in child.shown.getvalue(), child.shown.getvalue()
    return child.exitstatus


def test_seed_manual_test_hola_servidor(server):
    with console("--port", str(server.port)) as child:
        child.expect_exact(CONNECTED)
        child.expect_exact(PROMPT)
        child.sendline("hola servidor")
        child.expect_exact("Respuesta del servidor: HOLA SERVIDOR")
        child.expect_exact(PROMPT)
        server.wait_for_text("Mensaje recibido: hola servidor")
        server.wait_for_text("Respuesta enviada al cliente: HOLA SERVIDOR")


def test_seed_manual_test_desconexion_then_a_new_client(server):
    with console("--port", str(server.port)) as child:
        child.expect_exact(PROMPT)
        child.sendline("DESCONEXION")
        child.expect_exact(CLOSING)
        assert finish(child) == 0
    server.wait_for_text("solicita desconexión.")
    with console("--port", str(server.port)) as child:
        child.expect_exact(PROMPT)
        child.sendline("otra vez")
        child.expect_exact("Respuesta del servidor: OTRA VEZ")
        child.expect_exact(PROMPT)
        child.sendline("Desconexión")
        child.expect_exact(CLOSING)
        assert finish(child) == 0


def test_empty_line_gets_an_empty_reply(server):
    with console("--port", str(server.port)) as child:
        child.expect_exact(PROMPT)
        child.sendline("")
        child.expect_exact("Respuesta del servidor: \r\n")
        child.expect_exact(PROMPT)


def test_ctrl_d_sends_the_disconnect_word_and_exits_0(server):
    with console("--port", str(server.port)) as child:
        child.expect_exact(PROMPT)
        child.sendeof()
        child.expect_exact(CLOSING)
        assert finish(child) == 0
    server.wait_for_text("Mensaje recibido: DESCONEXION")
    server.wait_for_text("solicita desconexión.")


def test_ctrl_c_at_the_prompt_disconnects_and_exits_130(server):
    with console("--port", str(server.port)) as child:
        child.expect_exact(PROMPT)
        child.sendintr()
        child.expect_exact(CLOSING)
        assert finish(child) == 130
    server.wait_for_text("solicita desconexión.")


def test_ctrl_c_while_waiting_for_a_reply_still_says_goodbye():
    def withhold(conn, fake):
        """Answer nothing until the disconnect word comes, then answer both and close."""
        fake.read_line(conn)
        fake.read_line(conn)
        conn.sendall(b"HOLA\nDESCONEXION\n")
        drain_until_closed(conn, fake)

    with fake_server(withhold) as fake, console("--port", str(fake.port), "--timeout", "60") as child:
        child.expect_exact(PROMPT)
        child.sendline("hola")
        fake.wait_received(b"hola\n")
        child.sendintr()
        child.expect_exact(CLOSING)
        assert finish(child) == 130
    assert bytes(fake.received) == b"hola\nDESCONEXION\n"


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_english_texts(server, how):
    args, env = (["--lang", "en"], {}) if how == "flag" else ([], {"UPPERECHO_LANG": "en"})
    with console("--port", str(server.port), *args, **env) as child:
        child.expect_exact("Connected to the server.")
        child.expect_exact("Enter a message (or 'DESCONEXION' to quit): ")
        child.sendline("straße")
        child.expect_exact("Server reply: STRASSE")
        child.sendline("desconexion")
        child.expect_exact("Closing the connection to the server...")
        assert finish(child) == 0


def test_no_server_is_one_clear_line_and_status_3():
    port = free_port()
    with console("--port", str(port)) as child:
        child.expect_exact(f"error: cannot connect to 127.0.0.1:{port}: connection refused")
        assert finish(child) == 3
        assert CONNECTED not in child.shown.getvalue()


def test_server_shutting_down_mid_session_is_a_clear_error(start_server):
    server = start_server("--drain-timeout", "1")  # the idle client is aborted after this
    with console("--port", str(server.port)) as child:
        child.expect_exact(PROMPT)
        child.sendline("antes")
        child.expect_exact("Respuesta del servidor: ANTES")
        child.expect_exact(PROMPT)
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        child.sendline("después")
        child.expect_exact("error: server said: error: server shutting down")
        assert finish(child) == 1
