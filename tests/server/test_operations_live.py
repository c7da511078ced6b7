"""Running the server: console, flags, concurrency, backpressure and shutdown (S1-S4, L11, L12)."""

from __future__ import annotations

import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from client.connection import Connection
from tests.serverproc import ROOT
from tests.wire import connect, read_until_closed

pytestmark = pytest.mark.timeout(120)


def test_seed_console_transcript(server):
    with Connection(*server.address) as conn:
        port = conn._socket().getsockname()[1]
        assert conn.request("hola") == "HOLA"
        conn.disconnect()
    peer = f"('127.0.0.1', {port})"
    assert server.stdout[0] == f"Servidor TCP esperando conexiones en 127.0.0.1:{server.port}"
    server.wait_for_text(f"Conexión establecida con el cliente {peer}")
    server.wait_for_text("Mensaje recibido: hola")
    server.wait_for_text("Respuesta enviada al cliente: HOLA")
    server.wait_for_text(f"El cliente {peer} solicita desconexión.")


def test_english_console_and_env_variables_with_flags_winning(start_server):
    srv = start_server("--lang", "en", env={"UPPERECHO_LANG": "es", "UPPERECHO_MAX_LINE": "4"})
    assert srv.stdout[0] == f"TCP server listening on 127.0.0.1:{srv.port}"
    with connect(srv.address) as sock:
        sock.sendall(b"12345\n")
        assert read_until_closed(sock) == b"error: line too long (max 4 bytes)\n"


def test_quiet_silences_per_message_lines(start_server):
    srv = start_server("-q")
    with Connection(*srv.address) as conn:
        assert conn.request("silencio") == "SILENCIO"
        conn.disconnect()
    assert srv.stop() == 0
    assert not any("silencio" in line for line in srv.stdout)
    assert srv.stdout[0].endswith(f"127.0.0.1:{srv.port}")


def test_log_injection_is_escaped(server):
    forged = "hola\rMensaje recibido: falso\x1b[2K\u2028x"
    with Connection(*server.address) as conn:
        conn.send(forged)
        assert conn.read_reply() == forged.upper()
        conn.disconnect()
    line = server.wait_for_text("Mensaje recibido: hola")
    assert "\\x0d" in line and "\\x1b" in line and "\\u2028" in line
    assert not any(line.startswith("Mensaje recibido: falso") for line in server.stdout)
    assert all("\x1b" not in line and "\r" not in line for line in server.stdout)


def _run_server_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--port", "70000"], None, "--port"),
        (["--workers", "0"], None, "--workers"),
        (["--framing", "lines"], None, "--framing"),
        (["--idle-timeout", "soon"], None, "--idle-timeout"),
        (["--nope"], None, "--nope"),
        ([], {"UPPERECHO_PORT": "abc"}, "UPPERECHO_PORT"),
        ([], {"UPPERECHO_LOG_LEVEL": "loud"}, "UPPERECHO_LOG_LEVEL"),
    ],
)
def test_bad_values_give_one_line_and_status_2(args, env, needle):
    result = _run_server_cli(*args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in result.stderr


def test_port_in_use_gives_one_line_and_status_1():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        result = _run_server_cli("--port", str(holder.getsockname()[1]))
    finally:
        holder.close()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "address already in use" in lines[0]
    assert "Traceback" not in result.stderr


def test_non_loopback_bind_warns(start_server):
    srv = start_server("--host", "0.0.0.0", "-q")
    srv.wait_for_text("reachable from other machines", stream="stderr")


def test_fd_limit_raised_to_hard_limit(start_server):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard open-file limit ({hard}) leaves no room to lower the soft one")

    def lower_soft() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    srv = start_server("-q", preexec_fn=lower_soft)
    with open(f"/proc/{srv.pid}/limits") as limits:
        row = next(line for line in limits if line.startswith("Max open files"))
    assert int(row.split()[3]) == hard


def test_fd_limit_warning_when_max_connections_exceeds_it(start_server):
    def low_limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    srv = start_server("-q", "--max-connections", "5000", preexec_fn=low_limits)
    srv.wait_for_text("--max-connections 5000 needs about", stream="stderr")


def _raise_own_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"this test needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_two_thousand_concurrent_connections_with_fixed_threads(start_server):
    count = 2000
    _raise_own_fd_limit(count + 200)
    srv = start_server("-q", "--workers", "2")
    with Connection(*srv.address) as warm:
        assert warm.request("calentar") == "CALENTAR"
    threads_before = srv.threads()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(srv.address, timeout=30)
            socks.append(sock)
        for i, sock in enumerate(socks):
            sock.sendall(f"conexión {i}\n".encode())
        expected = {sock.fileno(): f"CONEXIÓN {i}\n".encode() for i, sock in enumerate(socks)}
        received = {sock.fileno(): b"" for sock in socks}
        with selectors.DefaultSelector() as sel:
            for sock in socks:
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ)
            pending = len(socks)
            deadline = time.monotonic() + 90
            while pending:
                assert time.monotonic() < deadline, f"{pending} connections got no reply"
                for key, _ in sel.select(1.0):
                    data = key.fileobj.recv(4096)
                    assert data, "the server closed a connection it should hold"
                    received[key.fd] += data
                    if received[key.fd].endswith(b"\n"):
                        sel.unregister(key.fileobj)
                        pending -= 1
        assert received == expected
        assert srv.threads() == threads_before
    finally:
        for sock in socks:
            sock.close()


def test_sigterm_with_busy_clients_drains_in_order(start_server):
    srv = start_server("-q", "--drain-timeout", "10")
    clients = 6
    results: dict[int, tuple[list[str], bytes]] = {}
    started = threading.Barrier(clients + 1)

    def pipelining_client(index: int) -> None:
        sent: list[str] = []
        with connect(srv.address, timeout=60) as sock:
            sock.setblocking(False)
            received = bytearray()
            started.wait()
            n = 0
            closed = False
            deadline = time.monotonic() + 60
            while not closed and time.monotonic() < deadline:
                if n < 200_000:
                    line = f"cliente {index} línea {n}"
                    try:
                        sock.send(f"{line}\n".encode())
                        sent.append(line)
                        n += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        break
                try:
                    while chunk := sock.recv(65536):
                        received += chunk
                    closed = True
                except BlockingIOError:
                    pass
                except OSError:
                    break
            results[index] = (sent, bytes(received))

    workers = [threading.Thread(target=pipelining_client, args=(i,)) for i in range(clients)]
    for worker in workers:
        worker.start()
    started.wait()
    _wait_for_traffic(srv.address)
    srv.signal(signal.SIGTERM)
    assert srv.wait(timeout=60) == 0
    for worker in workers:
        worker.join(timeout=60)
    assert len(results) == clients
    for index, (sent, received) in results.items():
        lines = received.decode().split("\n")
        assert lines[-1] == "", f"client {index}: unterminated end {lines[-1][-50:]!r}"
        assert lines[-2] == "error: server shutting down", f"client {index}: no shutdown notice"
        replies = lines[:-2]
        assert replies == [line.upper() for line in sent[: len(replies)]], f"client {index}: replies out of order"


def _wait_for_traffic(address: tuple[str, int]) -> None:
    """One round trip on a fresh connection: the server is up and serving others too."""
    with Connection(*address, timeout=30) as probe:
        for _ in range(50):
            assert probe.request("sonda") == "SONDA"


def test_second_signal_exits_at_once(start_server):
    srv = start_server("-q", "--drain-timeout", "60")
    holder = connect(srv.address)
    try:
        holder.sendall(b"x\n")
        assert holder.recv(100) == b"X\n"
        # the holder never reads again nor closes: the drain would wait 60 s
        deadline = time.monotonic() + 20
        # signals of one kind do not queue: repeat until the second one is seen
        while srv.proc.poll() is None and time.monotonic() < deadline:
            srv.signal(signal.SIGINT)
            try:
                srv.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        assert srv.proc.returncode == 128 + signal.SIGINT
    finally:
        holder.close()


def test_client_that_never_reads_is_paused_and_others_unaffected(start_server):
    srv = start_server("-q")
    with Connection(*srv.address) as warm:
        assert warm.request("x") == "X"
    rss_before = srv.rss()
    hog = connect(srv.address)
    try:
        hog.setblocking(False)
        chunk = b"a" * 1023 + b"\n"
        pushed = 0
        stalled_at = None
        deadline = time.monotonic() + 60
        # push until the kernel refuses more for a while: the server stopped reading us
        while pushed < 40 << 20 and time.monotonic() < deadline:
            try:
                pushed += hog.send(chunk)
                stalled_at = None
            except BlockingIOError:
                if stalled_at is None:
                    stalled_at = time.monotonic()
                sel = selectors.DefaultSelector()
                sel.register(hog, selectors.EVENT_WRITE)
                ready = sel.select(0.5)
                sel.close()
                if not ready and time.monotonic() - stalled_at > 2:
                    break
        assert pushed < 40 << 20, "the server read 40 MiB from a client that never reads"
        with Connection(*srv.address) as honest:
            assert [honest.request(f"sigo {i}") for i in range(100)] == [f"SIGO {i}" for i in range(100)]
        growth = srv.rss() - rss_before
        assert growth < 32 << 20, f"server memory grew by {growth >> 20} MiB"
    finally:
        hog.close()
