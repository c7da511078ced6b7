"""Safe logs (S3) and safe defaults: a client cannot forge console lines; the server is private unless told.

The console is read back line by line the way a terminal or a log collector
splits it (LF, CR and CRLF all end a line), and every line must be one of the
transcript's own lines, with no control character, line separator or
direction override left in it.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import unicodedata

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.connection import Connection, ServerError
from server.logs import escape
from tests.serverproc import ROOT
from tests.wire import connect, read_exactly

pytestmark = pytest.mark.timeout(60)

_PEER = r"\('127\.0\.0\.1', \d+\)"
_TEXT = r".*"
TRANSCRIPT = [
    re.compile(pattern)
    for pattern in (
        r"Servidor TCP esperando conexiones en 127\.0\.0\.1:\d+",
        rf"Conexión establecida con el cliente {_PEER}",
        rf"Mensaje recibido: {_TEXT}",
        rf"Respuesta enviada al cliente: {_TEXT}",
        rf"El cliente {_PEER} solicita desconexión\.",
        rf"Conexión cerrada con el cliente {_PEER}: [\w ]+",
        r"Cerrando el servidor: no se aceptan más conexiones",
        r"Servidor detenido",
    )
]

FORGERIES = [
    "hola\rMensaje recibido: falso cr",
    "\x1b[1A\x1b[2KRespuesta enviada al cliente: FALSO ANSI",
    "a\u2028Mensaje recibido: falso ls",
    "b\u2029Mensaje recibido: falso ps",
    "c\u0085Mensaje recibido: falso nel",
    "d\x0bMensaje recibido: falso vt\x0cMensaje recibido: falso ff",
    "e\x1c\x1d\x1eMensaje recibido: falso fs",
    "f\u202eosla\u202c \u2066x\u2069",
    "g\x00\x08\x7f\x9b2J",
    "h\\x0dMensaje recibido: falso backslash",
]


def _unsafe(ch: str) -> bool:
    """A character that can end, hide or rewrite a console line."""
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or unicodedata.bidirectional(ch) in (
        "LRE",
        "RLE",
        "LRO",
        "RLO",
        "PDF",
        "LRI",
        "RLI",
        "FSI",
        "PDI",
    )


def _check_console(lines: list[str]) -> None:
    for line in lines:
        assert not any(_unsafe(ch) for ch in line), f"unsafe character in console line {line!r}"
        assert any(pattern.fullmatch(line) for pattern in TRANSCRIPT), f"forged or unknown console line {line!r}"
        assert "falso" not in line.split(":", 1)[0], f"a client forged the start of a line: {line!r}"


def test_control_characters_in_messages_cannot_forge_console_lines(server):
    with Connection(*server.address) as conn:
        for text in FORGERIES:
            conn.send(text)
            assert conn.read_reply() == text.upper()
        conn._send_bytes(b"\xff\x1b[31mrojo\rMensaje recibido: falso utf8\n")
        with pytest.raises(ServerError, match="invalid utf-8"):
            conn.read_reply()
        conn.disconnect()
    server.wait_for_text("solicita desconexión")
    assert server.stop() == 0
    _check_console(server.stdout)
    received = [line for line in server.stdout if line.startswith("Mensaje recibido: ")]
    assert len(received) == len(FORGERIES) + 2  # and the invalid line and DESCONEXION
    assert received[0] == "Mensaje recibido: hola\\x0dMensaje recibido: falso cr"
    assert received[-3] == "Mensaje recibido: h\\\\x0dMensaje recibido: falso backslash"


@pytest.mark.timeout(240)
def test_raw_framing_cannot_forge_console_lines_with_a_newline(start_server):
    # Generous waits: on a machine busy with other tests, starting, answering
    # and draining may each take much longer than on an idle one.
    srv = start_server("--framing", "raw", start_timeout=60)
    chunk = b"hola\nMensaje recibido: falso\r\nRespuesta enviada al cliente: FALSO"
    with connect(srv.address, timeout=60) as sock:
        sock.sendall(chunk)
        assert read_exactly(sock, len(chunk), timeout=60) == chunk.upper()
    srv.wait_for_text("Respuesta enviada al cliente: HOLA", timeout=60)
    assert srv.stop(timeout=60) == 0
    _check_console(srv.stdout)
    assert "Mensaje recibido: hola\\x0aMensaje recibido: falso\\x0d\\x0aRespuesta enviada al cliente: FALSO" in (
        srv.stdout
    )


@settings(max_examples=2000, deadline=None, database=None)
@given(st.text())
def test_escaped_text_is_one_safe_line_and_unambiguous(text):
    escaped = escape(text)
    assert not any(_unsafe(ch) for ch in escaped)
    assert len(escaped.splitlines()) <= 1
    assert _unescape(escaped) == text


def _unescape(escaped: str) -> str:
    """Undo :func:`escape`: it must lose nothing, or a backslash could fake an escape."""

    def one(match: re.Match[str]) -> str:
        code = match[1]
        return "\\" if code == "\\" else chr(int(code[1:], 16))

    return re.sub(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})", one, escaped)


# -- safe defaults ------------------------------------------------------------


def _listening_ips(pid: int) -> list[str]:
    return [c.laddr.ip for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]


def test_default_binds_loopback_only_and_does_not_warn(server):
    assert server.host == "127.0.0.1"
    assert _listening_ips(server.pid) == ["127.0.0.1"]
    with Connection(*server.address) as conn:
        assert conn.request("privado") == "PRIVADO"
    assert server.stop() == 0
    assert not any("reachable" in line for line in server.stderr), server.stderr


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_non_loopback_bind_warns_and_names_the_flood_guard(start_server, how):
    if how == "flag":
        srv = start_server("-q", "--host", "0.0.0.0")
    else:
        srv = start_server("-q", env={"UPPERECHO_HOST": "0.0.0.0"})
    line = srv.wait_for_text("reachable from other machines", stream="stderr")
    assert line.startswith("warning: ") and "0.0.0.0" in line and "--max-connections is the flood guard" in line
    assert _listening_ips(srv.pid) == ["0.0.0.0"]


@pytest.mark.parametrize("host", ["localhost", "::1"])
def test_other_loopback_names_do_not_warn(start_server, host):
    if host == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    srv = start_server("-q", "--host", host)
    with Connection(srv.host.strip("[]"), srv.port) as conn:
        assert conn.request("local") == "LOCAL"
    assert srv.stop() == 0
    assert not any("reachable" in line for line in srv.stderr), srv.stderr


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_help_documents_max_connections_as_the_busy_limit():
    result = subprocess.run(
        [sys.executable, "-m", "server", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    )
    assert "--max-connections" in result.stdout and "server busy" in result.stdout
