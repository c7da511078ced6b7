"""S6: the console never stalls service.

The server's stdout is a pipe that the test does not read: once the pipe is
full, every write to it blocks.  Replies must keep flowing at the default log
level, SIGTERM must still end the process, and the log lines that could not be
written must be counted in a later line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from client.connection import Connection
from tests.hardening.harness import wait_until
from tests.serverproc import ROOT

pytestmark = pytest.mark.timeout(240)

_ADDRESS = re.compile(r"(\S+):(\d+)\s*$")
_DROPPED = re.compile(r"warning: (\d+) log lines dropped")
MESSAGES = 20_000


class _Unread:
    """A server whose stdout is a pipe nobody reads (until ``read_stdout``); stderr is read all along."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", "0", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        first = self.proc.stdout.readline().decode()
        match = _ADDRESS.search(first)
        assert match, f"no address in the first line {first!r}"
        self.address = (match[1], int(match[2]))
        self.stderr: list[str] = []
        self._err = threading.Thread(target=self._collect, args=(self.proc.stderr, self.stderr), daemon=True)
        self._err.start()
        self.stdout: list[str] = []
        self._out: threading.Thread | None = None

    @staticmethod
    def _collect(stream, lines: list[str]) -> None:
        for raw in stream:
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def read_stdout(self) -> None:
        """From now on the pipe is read: the console can catch up."""
        self._out = threading.Thread(target=self._collect, args=(self.proc.stdout, self.stdout), daemon=True)
        self._out.start()

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in (self._err, self._out):
            if reader is not None:
                reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _flood(address: tuple[str, int]) -> None:
    """One client pipelining many messages, one of them 65,000 bytes, and checking every reply."""
    texts = [f"línea {i} del aluvión" for i in range(MESSAGES)]
    texts[MESSAGES // 2] = "ñ" * 32_500  # 65,000 bytes
    with Connection(*address, timeout=60) as conn:
        replies = list(conn.pipeline(texts))
        assert replies == [text.upper() for text in texts]
        assert conn.request("sigo aquí") == "SIGO AQUÍ"


def test_a_stdout_nobody_reads_stalls_neither_replies_nor_shutdown():
    srv = _Unread("--drain-timeout", "2")  # the default log level: every message is logged
    try:
        _flood(srv.address)
        with Connection(*srv.address, timeout=60) as other:  # a new client is accepted and served too
            assert other.request("otro cliente") == "OTRO CLIENTE"
        srv.proc.send_signal(signal.SIGTERM)
        # the exit does not wait on the blocked console past the drain time (a generous deadline
        # here: only that it exits is checked, not how fast)
        assert srv.finish(timeout=60) == 0
        assert not [line for line in srv.stderr if "Traceback" in line], srv.stderr
    finally:
        srv.kill()


def test_lines_the_console_could_not_take_are_counted_and_reported():
    srv = _Unread()
    try:
        _flood(srv.address)  # every per-message record is queued or dropped before its reply is sent
        srv.read_stdout()
        # a later line says how many were dropped, once the console can take it
        wait_until(lambda: any(_DROPPED.search(line) for line in srv.stderr), 60, "the dropped-lines warning")
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.finish(timeout=60) == 0
    finally:
        srv.kill()
    dropped = sum(int(m[1]) for line in srv.stderr if (m := _DROPPED.search(line)))
    per_message = [line for line in srv.stdout if line.startswith(("Mensaje recibido: ", "Respuesta enviada"))]
    assert dropped > 0
    # every line is either on the console or in a count: the per-message lines alone are
    # 2 * (MESSAGES + 1); the few others are the session's and the shutdown's own lines
    written = len(srv.stdout)
    assert 2 * (MESSAGES + 1) <= written + dropped <= 2 * (MESSAGES + 1) + 10, (written, dropped)
    assert len(per_message) < 2 * (MESSAGES + 1)
    assert all(line.isprintable() for line in srv.stdout)  # no line torn or mixed with another
    assert srv.stdout[-1] == "Servidor detenido"
