"""O4 with O1: ``--processes 2 --metrics`` serves one endpoint that counts the whole server, exactly.

The supervisor serves ``/metrics``; each process copies its counts into shared
memory every 250 ms, so a scrape may lag by that much: every wait here scrapes
until the expected figures appear, with a deadline, then asserts them exactly.
Which process gets a connection is the kernel's choice, so a session meant for
one process is found as ``tests/server/test_processes.py`` finds it (connect
until that process holds the connection); the connections that landed
elsewhere end with DESCONEXION and are counted like any other.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
from collections import Counter
from collections.abc import Callable

import psutil
import pytest

from statemachine.session import ERROR_BUSY, ERROR_SHUTDOWN, error_too_long
from tests.server.test_metrics_live import Scrape, expected, ours, scrape, scrape_text, scrape_until, value
from tests.server.test_processes import _STARTED, _owner, _pids
from tests.serverproc import ServerProcess
from tests.wire import connect, read_lines, read_until_closed

pytestmark = pytest.mark.timeout(120)

_MAX_LINE = 16


@pytest.fixture
def start(supervised) -> Callable[..., ServerProcess]:
    """Two processes and one metrics endpoint; every process group is killed at the end."""
    return lambda *args: supervised("--processes", "2", "--metrics", "127.0.0.1:0", *args)


class Script:
    """Sessions driven against the server, and what they add to its counters."""

    def __init__(self, server: ServerProcess, pids: list[int]) -> None:
        self.address = server.address
        self.pids = pids
        self.opened = self.messages = self.received = self.sent = 0
        self.closed: Counter[str] = Counter()

    def session_on(self, pid: int) -> socket.socket:
        """A session (one message answered) that process ``pid`` serves."""
        while True:
            sock = connect(self.address)
            self.exchange(sock, b"hola\n", b"HOLA\n", messages=1)
            self.opened += 1
            if _owner(self.pids, sock) == pid:
                return sock
            self.disconnect(sock)

    def exchange(self, sock: socket.socket, send: bytes, reply: bytes, messages: int) -> None:
        sock.sendall(send)
        assert read_lines(sock, reply.count(b"\n")) == reply.splitlines(keepends=True)
        self.messages += messages
        self.received += len(send)
        self.sent += len(reply)

    def disconnect(self, sock: socket.socket, text: bytes = b"") -> None:
        with sock:
            self.exchange(sock, text + b"DESCONEXION\n", text.upper() + b"DESCONEXION\n", text.count(b"\n") + 1)
            assert read_until_closed(sock) == b""
        self.closed["disconnect"] += 1

    def end_of_stream(self, sock: socket.socket) -> None:
        with sock:
            sock.sendall(b"tail")
            sock.shutdown(socket.SHUT_WR)
            assert read_until_closed(sock) == b"TAIL"  # the unterminated tail is a message too
        self.messages += 1
        self.received += 4
        self.sent += 4
        self.closed["end_of_stream"] += 1

    def too_long(self, sock: socket.socket) -> None:
        notice = (error_too_long(_MAX_LINE) + "\n").encode()
        with sock:
            sock.sendall(b"x" * (_MAX_LINE + 1))
            assert read_until_closed(sock) == notice
        self.received += _MAX_LINE + 1
        self.sent += len(notice)
        self.closed["line_too_long"] += 1

    def reset(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self.closed["abort"] += 1

    def expect(self, states: dict[str, int], busy: int = 0) -> dict:
        return expected(states, self.opened, dict(self.closed), self.messages, busy)

    def settled(self, states: dict[str, int], busy: int = 0) -> Callable[[Scrape], bool]:
        """A scrape that shows every figure of the script: counts, bytes and both histograms' counts."""
        want = self.expect(states, busy)
        figures = {
            "upperecho_received_bytes_total": self.received,
            "upperecho_sent_bytes_total": self.sent,
            "upperecho_reply_latency_seconds_count": self.messages,
            "upperecho_session_duration_seconds_count": sum(self.closed.values()),
        }
        return lambda s: ours(s) == want and all(value(s, name) == number for name, number in figures.items())


def _metrics_url(server: ServerProcess) -> str:
    """The endpoint, announced once, right after the listening line, by the supervisor."""
    line = server.wait_for_text("metrics on http://", timeout=30)
    assert server.stdout.index(line) == 1 and sum("metrics on" in text for text in server.stdout) == 1
    return line.split("metrics on ", 1)[1].strip()


def _counters(samples: Scrape) -> dict[tuple, float]:
    """Every counter sample (histogram buckets, counts and sums too): the figures that must never go down."""
    return {
        key: number
        for key, number in samples.items()
        if key[0].startswith("upperecho_") and key[0] != "upperecho_sessions"
    }


def _blocked(pid: int) -> list[set[int]]:
    """The signals each thread of ``pid`` but the main one blocks (Linux /proc).

    (The main thread's own mask is not read: while it waits in ``sigtimedwait`` the
    kernel shows the signals it waits for as unblocked.  A thread that ends between
    the listing and the read, such as the one that served a request, is left out:
    it can take no signal any more.)"""
    masks = []
    for task in os.listdir(f"/proc/{pid}/task"):
        if int(task) == pid:
            continue
        try:
            with open(f"/proc/{pid}/task/{task}/status") as status:
                mask = int(next(line for line in status if line.startswith("SigBlk:")).split()[1], 16)
        except (FileNotFoundError, ProcessLookupError, StopIteration):  # gone while being read
            continue
        masks.append({signum for signum in range(1, 65) if mask >> (signum - 1) & 1})
    return masks


def test_the_supervisors_signals_reach_its_main_thread_not_the_endpoints(start):
    """The endpoint's threads block SIGCHLD, SIGINT and SIGTERM: one they took would never reach the supervisor."""
    server = start()
    url = _metrics_url(server)
    _pids(server, 2)
    scrape(url)  # the endpoint has served a request (on a thread of its own)
    masks = _blocked(server.pid)
    assert masks, "the endpoint serves on a thread of its own"
    assert all({signal.SIGCHLD, signal.SIGINT, signal.SIGTERM} <= mask for mask in masks)
    assert server.stop() == 0, (server.stderr, server.stdout)


def test_one_scrape_counts_every_process_exactly(start):
    server = start("--max-connections", "2", "--max-line", str(_MAX_LINE), "--idle-timeout", "0")
    url = _metrics_url(server)
    pids = _pids(server, 2)
    first, second = pids[1], pids[2]
    metrics_port = int(url.rsplit(":", 1)[1].split("/")[0])
    for pid in (first, second):  # only the supervisor serves HTTP
        assert not any(conn.laddr.port == metrics_port for conn in psutil.Process(pid).net_connections("tcp"))
    script = Script(server, [first, second])
    held: list[socket.socket] = []
    try:
        script.disconnect(script.session_on(first), b"uno\n")
        script.disconnect(script.session_on(second), b"dos\ntres\n")
        script.end_of_stream(script.session_on(second))
        script.too_long(script.session_on(first))
        script.reset(script.session_on(second))
        scrape_until(url, lambda s: value(s, "upperecho_sessions_closed_total", reason="abort") == 1)
        held = [script.session_on(first), script.session_on(second)]
        idle = script.expect({"ECHOING": 2})
        scrape_until(url, lambda s: ours(s) == idle)  # the closed sessions have left, the slots are free
        with connect(server.address) as busy:  # L10: the third session of the whole server is refused
            assert read_until_closed(busy) == (ERROR_BUSY + "\n").encode()
        script.sent += len(ERROR_BUSY) + 1

        samples = scrape_until(url, script.settled({"ECHOING": 2}, busy=1))
        assert ours(samples) == script.expect({"ECHOING": 2}, busy=1)
        assert value(samples, "upperecho_received_bytes_total") == script.received
        assert value(samples, "upperecho_sent_bytes_total") == script.sent
        assert value(samples, "upperecho_reply_latency_seconds_count") == script.messages
        assert value(samples, "upperecho_reply_latency_seconds_bucket", le="+Inf") == script.messages
        assert value(samples, "upperecho_session_duration_seconds_count") == sum(script.closed.values())
        assert script.opened >= 7 and script.closed["disconnect"] >= 2
    finally:
        for sock in held:
            sock.close()
    assert server.stop() == 0, (server.stderr, server.stdout)


def test_a_killed_process_takes_no_count_away_and_its_replacement_adds_on(start):
    server = start()
    url = _metrics_url(server)
    pids = _pids(server, 2)
    script = Script(server, list(pids.values()))
    held = script.session_on(pids[1])
    try:
        script.disconnect(script.session_on(pids[1]), b"uno\n")
        script.disconnect(script.session_on(pids[2]), b"dos\n")
        before = scrape_until(url, script.settled({"ECHOING": 1}))

        mark = len(server.stdout)
        os.kill(pids[1], signal.SIGKILL)  # its last copy is the one just scraped
        line = server.wait_for_line(lambda text: text.startswith("Proceso 1 de 2"), start=mark)
        replacement = int(_STARTED.search(line).group(3))
        script.pids = [replacement, pids[2]]
        # its session died with it: the gauge counts live processes only
        samples = scrape_until(url, script.settled({}))
        assert _counters(samples) == _counters(before)

        script.disconnect(script.session_on(replacement), b"de nuevo\n")
        script.disconnect(script.session_on(pids[2]), b"otra vez\n")
        samples = scrape_until(url, script.settled({}))
        later = _counters(samples)
        assert all(later[key] >= number for key, number in _counters(before).items())
        assert value(samples, "upperecho_received_bytes_total") == script.received
        assert value(samples, "upperecho_sent_bytes_total") == script.sent
    finally:
        held.close()
    assert server.stop() == 0, (server.stderr, server.stdout)


def test_a_process_that_drains_on_its_own_publishes_its_last_counts(start):
    """SIGTERM to one process: its drain's closes reach the total although it exits at once afterwards."""
    server = start()
    url = _metrics_url(server)
    pids = _pids(server, 2)
    script = Script(server, list(pids.values()))
    held = script.session_on(pids[1])
    try:
        scrape_until(url, script.settled({"ECHOING": 1}))
        mark = len(server.stderr)
        os.kill(pids[1], signal.SIGTERM)
        notice = (ERROR_SHUTDOWN + "\n").encode()
        assert read_until_closed(held) == notice
        held.close()  # its lingering close ends now, and the process exits
        script.sent += len(notice)
        script.closed["shutdown"] += 1
        server.wait_for_text(f"El proceso 1 (pid {pids[1]}) terminó con estado 0", stream="stderr", start=mark)
        samples = scrape_until(url, script.settled({}))
        assert value(samples, "upperecho_sessions_closed_total", reason="shutdown") == 1
    finally:
        held.close()
    assert server.stop() == 0, (server.stderr, server.stdout)


def test_promtool_finds_the_supervisors_scrape_clean(start):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (Debian package prometheus; `make system-deps` installs it)")
    server = start()
    url = _metrics_url(server)
    pids = _pids(server, 2)
    script = Script(server, list(pids.values()))
    for pid in pids.values():
        script.disconnect(script.session_on(pid), b"hola\n")
    scrape_until(url, script.settled({}))
    text = scrape_text(url)
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""
    assert scrape(url).keys() >= {("process_cpu_seconds_total", ())}  # the supervisor's own
    assert server.stop() == 0, (server.stderr, server.stdout)
