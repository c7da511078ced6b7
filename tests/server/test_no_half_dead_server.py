"""S7: flags out of range are refused at start, and a worker that dies takes the process with it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.serverproc import ROOT, ServerProcess
from tests.wire import connect

pytestmark = pytest.mark.timeout(120)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--idle-timeout", "2592000"], None, "--idle-timeout"),  # 30 days: past what epoll can wait
        (["--idle-timeout", "inf"], None, "--idle-timeout"),
        (["--idle-timeout", "nan"], None, "--idle-timeout"),
        (["--idle-timeout", "-1"], None, "--idle-timeout"),
        (["--drain-timeout", "inf"], None, "--drain-timeout"),
        (["--drain-timeout", "1e12"], None, "--drain-timeout"),
        (["--drain-timeout", "-0.5"], None, "--drain-timeout"),
        (["--max-connections", "0"], None, "--max-connections"),
        (["--max-connections", "10000000000"], None, "--max-connections"),
        (["--max-line", "0"], None, "--max-line"),
        (["--max-line", str(1 << 40)], None, "--max-line"),
        (["--workers", "100000"], None, "--workers"),
        ([], {"UPPERECHO_DRAIN_TIMEOUT": "inf"}, "UPPERECHO_DRAIN_TIMEOUT"),
        ([], {"UPPERECHO_IDLE_TIMEOUT": "2592000"}, "UPPERECHO_IDLE_TIMEOUT"),
    ],
)
def test_out_of_range_values_are_refused_at_start_with_one_line(args, env, needle):
    result = _run(*args, env=env)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_the_longest_durations_allowed_work(start_server):
    """24 days, the top of the range, is a wait the poller can do: the server serves and stops."""
    srv = start_server("-q", "--idle-timeout", "2073600", "--drain-timeout", "2073600")
    with connect(srv.address, timeout=60) as sock:
        sock.sendall(b"lejos\n")
        assert sock.recv(16) == b"LEJOS\n"
        sock.sendall(b"DESCONEXION\n")
        assert sock.recv(16) == b"DESCONEXION\n"
    assert srv.stop(timeout=60) == 0
    assert "Traceback" not in "\n".join(srv.stderr)


# Runs the real server with one worker method replaced by one that raises: the
# failure a test can force without a hook in the server's own code.
_FAILING_WORKER = """
import sys
import server.worker
from server.__main__ import main

def broken(self, conn, now):
    raise RuntimeError("forced failure for the test")

server.worker.Worker._on_readable = broken
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_worker_that_dies_makes_the_process_exit_non_zero_with_one_line(workers):
    srv = ServerProcess("--workers", workers, launcher=("-c", _FAILING_WORKER), start_timeout=60)
    try:
        with connect(srv.address, timeout=60) as sock:
            sock.sendall(b"hola\n")
            code = srv.wait(timeout=60)  # the process ends by itself: nobody signals it
        assert code == 1
        errors = [line for line in srv.stderr if line.strip()]
        assert len(errors) == 1, srv.stderr
        assert errors[0].startswith("error: ") and "RuntimeError" in errors[0] and "forced failure" in errors[0]
        assert "Traceback" not in "\n".join(srv.stderr + srv.stdout)
        with pytest.raises(OSError), socket.create_connection(srv.address, timeout=10):
            pass  # nobody listens any more
    finally:
        srv.kill()
