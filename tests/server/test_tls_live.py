"""TLS (O6) against the live server: real clients get real replies, and L7, L11 and L13 hold as in plain TCP.

Every test makes its own throwaway certificate (``openssl req``) in a temporary
directory.  A failed handshake (garbage, plain text, a client that stalls) is
closed, logged once, and disturbs nobody: an honest TLS client is served
throughout.  The count of failed handshakes is checked in-process in
test_tls_counts.py.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys

import pytest

from tests.serverproc import ROOT
from tests.tlskit import OPENSSL, Cert, RecordClient, make_cert, needs_openssl
from tests.wire import connect, read_until_closed

pytestmark = [needs_openssl, pytest.mark.timeout(120)]

NOTICE = b"error: server shutting down\n"
_FAILED = re.compile(r"^TLS handshake failed with client \('127\.0\.0\.1', \d+\): (.+)$")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return make_cert(tmp_path_factory.mktemp("tls"))


def _start(start_server, cert: Cert, *args: str):
    return start_server("--lang", "en", *cert.server_args(), *args)


def _closed_without_reply(sock: socket.socket) -> bytes:
    """What the server sent before it closed a refused handshake (a reset also counts as closed)."""
    try:
        return read_until_closed(sock, timeout=30)
    except ConnectionResetError:
        return b""


def _failures(srv) -> list[str]:
    return [m.group(1) for line in srv.stdout if (m := _FAILED.match(line))]


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_gets_the_replies(start_server, cert, version):
    srv = _start(start_server, cert)
    run = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"{srv.host}:{srv.port}", "-servername", "localhost", version]
        + ["-CAfile", str(cert.cert), "-verify_return_error", "-quiet", "-ign_eof"],
        input=b"hola\nstra\xc3\x9fe\nDESCONEXION\nno se env\xc3\xada\n",
        capture_output=True,
        timeout=60,
    )
    assert run.stdout == b"HOLA\nSTRASSE\nDESCONEXION\n"
    assert run.returncode == 0, run.stderr
    srv.wait_for_text("asks to disconnect")
    assert [line for line in srv.stdout[1:] if "Message received" in line] == [
        "Message received: hola",
        "Message received: straße",
        "Message received: DESCONEXION",
    ]


def test_disconnect_over_tls_sends_close_notify_before_the_close(start_server, cert):
    srv = _start(start_server, cert)
    with RecordClient(srv.address, cert.client_context()) as client:
        client.send(b"hola\nDESCONEXION\nignored after the word\n")
        assert client.read_to_end() == b"HOLA\nDESCONEXION\n"
        assert client.close_notify, "the server closed without close_notify"
        assert client.wait_tcp_end() == b""
    srv.wait_for_text("asks to disconnect")


@pytest.mark.parametrize("together", [False, True], ids=["separate", "data-with-close-notify"])
@pytest.mark.parametrize("half_close", [True, False], ids=["with-fin", "close-notify-only"])
def test_half_close_over_tls_answers_every_message_and_the_tail(start_server, cert, half_close, together):
    """L7: the client's close_notify (with or without a TCP half-close) is its end of stream."""
    srv = _start(start_server, cert)
    with RecordClient(srv.address, cert.client_context()) as client:
        if together:
            client.send_and_close_notify(b"uno\r\ndos", half_close)
        else:
            client.send(b"uno\r\ndos")
            assert client.read(5) == b"UNO\r\n"
            client.send_close_notify(half_close)
        assert client.read_to_end() == (b"DOS" if not together else b"UNO\r\nDOS")
        assert client.close_notify
        assert client.wait_tcp_end() == b""
    srv.wait_for_text(": end of stream")


@pytest.mark.parametrize("half_close", [True, False], ids=["with-fin", "close-notify-only"])
def test_data_and_close_notify_that_come_with_the_end_of_the_handshake_end_the_session(start_server, cert, half_close):
    """L7 when the server reads the client's Finished, its data and its close_notify at once (a slow server)."""
    srv = _start(start_server, cert)
    with RecordClient(srv.address, cert.client_context(), hold_finished=True) as client:
        client.send_and_close_notify(b"uno\r\ndos", half_close)
        assert client.read_to_end() == b"UNO\r\nDOS"
        assert client.close_notify
        assert client.wait_tcp_end() == b""
    srv.wait_for_text(": end of stream")


def test_lingering_close_over_tls_keeps_every_reply(start_server, cert):
    """L13: replies the client has not read yet survive the close, even with its input still arriving."""
    srv = _start(start_server, cert, "-q")
    lines = [f"linea {i} " + "x" * 90 for i in range(2000)]
    with RecordClient(srv.address, cert.client_context()) as client:
        client.send("".join(f"{line}\n" for line in lines).encode() + b"DESCONEXION\n" + b"after " * 20000)
        expected = "".join(f"{line.upper()}\n" for line in lines).encode() + b"DESCONEXION\n"
        assert client.read_to_end() == expected
        assert client.close_notify
        assert client.wait_tcp_end() == b""


def test_sigterm_drains_tls_sessions_and_fails_a_handshake_under_way(start_server, cert):
    """L11: complete messages answered, the partial line dropped, the notice, close_notify, exit 0."""
    srv = _start(start_server, cert)
    with RecordClient(srv.address, cert.client_context()) as client, connect(srv.address) as stalled:
        client.send(b"hola\nsin terminar")
        assert client.read(5) == b"HOLA\n"
        srv.signal()
        assert client.read_to_end() == NOTICE
        assert client.close_notify
        assert _closed_without_reply(stalled) == b""
    assert srv.wait(timeout=30) == 0
    assert _failures(srv) == ["server shutting down"]


def _half_a_client_hello(cert: Cert) -> bytes:
    hello = cert.client_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        hello.do_handshake()
    data = outgoing.read()
    return data[: len(data) // 2]


def test_bad_plain_and_stalled_handshakes_are_closed_and_logged_once_while_others_are_served(start_server, cert):
    srv = _start(start_server, cert, "--tls-handshake-timeout", "0.5")
    with RecordClient(srv.address, cert.client_context()) as honest:
        honest.send(b"hola\n")
        assert honest.read(5) == b"HOLA\n"
        with connect(srv.address) as garbage:
            garbage.sendall(b"\x16\x03\x01\x00\x10" + bytes(range(16)))
            sent = _closed_without_reply(garbage)
            assert sent == b"" or (sent[0] == 0x15 and len(sent) <= 7), sent  # one TLS alert at most
        with connect(srv.address) as plain:
            plain.sendall(b"hola\n")
            assert b"HOLA" not in _closed_without_reply(plain)
        with connect(srv.address) as silent, connect(srv.address) as halfway:
            halfway.sendall(_half_a_client_hello(cert))
            assert _closed_without_reply(silent) == b""
            assert _closed_without_reply(halfway) == b""
        honest.send(b"sigo aqu\xc3\xad\n")
        assert honest.read(len("SIGO AQUÍ\n".encode())) == "SIGO AQUÍ\n".encode()
        srv.wait_for_line(lambda line: len(_failures(srv)) == 4)
        honest.send(b"DESCONEXION\n")
        assert honest.read_to_end() == b"DESCONEXION\n"
    srv.wait_for_text("asks to disconnect")
    reasons = _failures(srv)
    assert len(reasons) == 4, srv.stdout
    assert reasons.count("timeout") == 2
    assert "plain text, not TLS" in reasons
    assert sum(line.startswith("Connection established") for line in srv.stdout) == 1


def _run_server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bad_tls_settings_give_one_line(cert, tmp_path):
    other = make_cert(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (("--tls-cert", str(cert.cert)), 2, "--tls-cert and --tls-key go together"),
        (("--tls-key", str(cert.key)), 2, "--tls-cert and --tls-key go together"),
        ((*cert.server_args(), "--tls-handshake-timeout", "0"), 2, "--tls-handshake-timeout"),
        (("--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(cert.key)), 1, "no such file"),
        (("--tls-cert", str(garbage), "--tls-key", str(garbage)), 1, "not a usable certificate and key"),
        (("--tls-cert", str(cert.cert), "--tls-key", str(other.key)), 1, "not a usable certificate and key"),
    ]
    for args, status, needle in cases:
        result = _run_server(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == status, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (args, result.stderr)
        assert result.stdout == ""


def test_busy_over_tls_closes_without_a_plain_line_and_serves_the_others(start_server, cert):
    """L10 on a TLS port: no plain ``error: server busy`` a TLS client could not read, no handshake spent."""
    srv = _start(start_server, cert, "--max-connections", "1")
    with RecordClient(srv.address, cert.client_context()) as first:
        first.send(b"hola\n")
        assert first.read(5) == b"HOLA\n"
        with connect(srv.address) as refused:
            assert _closed_without_reply(refused) == b""
        srv.wait_for_text("Server busy", stream="stderr")
        first.send(b"sigo\n")
        assert first.read(5) == b"SIGO\n"
