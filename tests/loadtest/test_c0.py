"""C0, the bench's C limit: built with the system compiler, a line echo the driver can trust."""

from __future__ import annotations

import socket
import threading

import pytest

from loadtest import servers
from loadtest.servers import ANCHOR, SPECS, RunningServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def c0():
    reason = servers.c0_unavailable()
    if reason:
        pytest.skip(reason)
    with RunningServer(SPECS[ANCHOR]) as server:
        server.wait_started()
        yield server


def _exchange(address: tuple[str, int], payload: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        while data := sock.recv(4096):
            received += data
    return received


def test_c0_upper_cases_ascii_line_by_line_and_ends_on_the_word(c0):
    got = _exchange(c0.address, b"hola\r\nuno dos\n  desconexion \nnunca\n")
    assert got == b"HOLA\r\nUNO DOS\n  DESCONEXION \n"


def test_c0_answers_a_client_that_sends_while_it_reads(c0):
    """W5's shape: a sender thread pipelines 100,000 lines while the test reads every reply."""
    lines = b"".join(b"linea %06d\n" % i for i in range(100_000))
    with socket.create_connection(c0.address, timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(lines + b"DESCONEXION\n",))
        sender.start()
        received = bytearray()
        while data := sock.recv(65536):
            received += data
        sender.join(30)
    assert bytes(received) == lines.upper() + b"DESCONEXION\n"


def test_without_a_compiler_c0_is_left_out_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    monkeypatch.setattr(servers, "C0_BINARY", tmp_path / "c0")
    assert "no C compiler (cc)" in servers.c0_unavailable()
    with pytest.raises(servers.LaunchError, match="no C compiler"):
        servers.c0_command()
