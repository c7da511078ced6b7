"""O5: ``--log-format json`` writes one JSON object per line with the session's fields; client text is escaped."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tests.serverproc import ROOT
from tests.wire import connect, read_lines, read_until_closed

pytestmark = pytest.mark.timeout(120)

FIELDS = ("time", "level", "event", "peer", "session", "state", "reason")


def _records(lines: list[str]) -> list[dict]:
    """Every console line after the listening line, each parsed as JSON (a line that is not JSON fails)."""
    records = []
    for line in lines[1:]:
        record = json.loads(line)
        assert isinstance(record, dict), line
        for field in FIELDS:
            assert field in record, (field, line)
        records.append(record)
    return records


def _session(server, payload: bytes, replies: int) -> int:
    with connect(server.address) as sock:
        port = sock.getsockname()[1]
        sock.sendall(payload)
        read_lines(sock, replies)
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)
    return port


def test_debug_lines_are_json_with_fields_and_escaped_text(start_server):
    server = start_server("--log-format", "json", "--log-level", "debug", "--max-connections", "1")
    forged = b'hola\r{"level": "error"}\x1b[2K\xe2\x80\xa8\n'
    port = _session(server, forged + b"DESCONEXION\n", 2)
    with connect(server.address) as holder:
        holder.sendall(b"x\n")
        read_lines(holder, 1)
        with connect(server.address) as refused:
            assert read_until_closed(refused) == b"error: server busy\n"
        server.wait_for_text('"event": "refused"', stream="stderr")
    assert server.stop() == 0
    assert server.stdout[0].startswith("Servidor TCP esperando conexiones en ")
    for line in server.stdout[1:] + server.stderr:
        assert "\x1b" not in line and "\r" not in line and "\u2028" not in line
    records = _records(server.stdout)
    first = [r for r in records if r["peer"] == f"127.0.0.1:{port}"]
    assert [r["event"] for r in first] == [
        "connected",
        "received",
        "replied",
        "received",
        "replied",
        "disconnect",
        "closed",
    ]
    assert len({r["session"] for r in first}) == 1 and first[0]["session"] is not None
    assert first[0]["state"] == "CONNECTED" and first[-1]["state"] == "CLOSED"
    assert first[-1]["reason"] == "disconnect"
    received = first[1]["text"]
    assert received == 'hola\\x0d{"level": "error"}\\x1b[2K\\u2028'
    assert first[2]["text"] == 'HOLA\\x0d{"LEVEL": "ERROR"}\\x1b[2K\\u2028'
    assert all(r["level"] == "info" for r in first)
    other = [r for r in records if r["session"] not in (None, first[0]["session"])]
    assert other and other[0]["event"] == "connected"
    assert {r["event"] for r in records if r["session"] is None} >= {"shutting_down", "stopped"}
    (warning,) = _records(["", *server.stderr])
    assert warning["level"] == "warning" and warning["event"] == "refused" and warning["reason"] == "busy"
    assert warning["peer"].startswith("127.0.0.1:")


def test_info_lines_carry_no_client_text(start_server):
    server = start_server(env={"UPPERECHO_LOG_FORMAT": "json"})
    port = _session(server, b"secreto\n", 1)
    assert server.stop() == 0
    records = _records(server.stdout)
    assert not any("secreto" in line.lower() for line in server.stdout)
    events = [r["event"] for r in records if r["peer"] == f"127.0.0.1:{port}"]
    assert events == ["connected", "closed"]
    closed = next(r for r in records if r["event"] == "closed")
    assert closed["reason"] == "end_of_stream" and closed["state"] == "CLOSED"
    assert all("text" not in r for r in records)


def test_text_stays_the_default(server):
    _session(server, b"hola\n", 1)
    server.wait_for_text("Mensaje recibido: hola")
    assert not any(line.startswith("{") for line in server.stdout)


def test_unknown_format_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "server", "--log-format", "yaml"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--log-format" in lines[0]
