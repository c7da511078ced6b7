"""O4: a live scrape of ``--metrics`` counts exactly what a scripted set of sessions did.

Every wait is on a condition with a deadline: the test scrapes until the
counts it waits for appear, then asserts every figure exactly.  The expected
states and close reasons are read from the session machine, so a state or
trigger added to it is expected here (at 0) without editing this file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from server.metrics import REFUSAL_REASONS, close_reasons
from statemachine.machine import STATES
from statemachine.session import ERROR_BUSY, ERROR_IDLE, ERROR_SHUTDOWN, error_too_long
from tests.serverproc import ROOT, ServerProcess
from tests.wire import connect, read_exactly, read_lines, read_until_closed

pytest.importorskip("prometheus_client", reason="prometheus_client is not installed (pip install '.[metrics]')")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

pytestmark = pytest.mark.timeout(180)

Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _big_line() -> int:
    """A message longer than the kernel can hold for a client that reads nothing (so replies wait in the server)."""
    try:
        wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        wmem_max = 4 << 20
    return max(8 << 20, 2 * wmem_max)


def _metrics_url(server: ServerProcess) -> str:
    line = server.wait_for_text("metrics on http://", timeout=30)
    assert server.stdout.index(line) == 1, "the metrics address comes right after the listening line"
    return line.split("metrics on ", 1)[1].strip()


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def scrape(url: str) -> Scrape:
    samples: Scrape = {}
    for family in text_string_to_metric_families(scrape_text(url)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape_until(url: str, condition: Callable[[Scrape], bool], timeout: float = 30.0) -> Scrape:
    """Scrape until ``condition`` holds (or fail after ``timeout`` seconds, showing the last scrape)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            shown = {key: value for key, value in samples.items() if key[0].startswith("upperecho_")}
            raise AssertionError(f"condition not met within {timeout} s; last scrape: {shown}")
        time.sleep(0.05)


def value(samples: Scrape, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def ours(samples: Scrape) -> dict[str, dict[str, float]]:
    """The upperecho_* figures that count sessions, messages and refusals, grouped by metric."""
    grouped: dict[str, dict[str, float]] = {}
    for (name, labels), number in samples.items():
        if name.startswith("upperecho_") and "_seconds" not in name and not name.endswith("_bytes_total"):
            grouped.setdefault(name, {})[",".join(v for _, v in labels)] = number
    return grouped


def expected(states: dict[str, int], opened: int, closed: dict[str, int], messages: int, busy: int) -> dict:
    assert set(states) <= set(STATES) and set(closed) <= set(close_reasons())
    return {
        "upperecho_sessions": {state: float(states.get(state, 0)) for state in STATES},
        "upperecho_sessions_opened_total": {"": float(opened)},
        "upperecho_sessions_closed_total": {reason: float(closed.get(reason, 0)) for reason in close_reasons()},
        "upperecho_messages_total": {"": float(messages)},
        "upperecho_connections_refused_total": {**dict.fromkeys(REFUSAL_REASONS, 0.0), "busy": float(busy)},
    }


def test_close_reasons_are_the_machines_ending_triggers():
    assert {"disconnect", "end_of_stream", "line_too_long", "idle_timeout", "shutdown", "abort"} <= set(close_reasons())
    assert "flushed" not in close_reasons() and "message" not in close_reasons()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_scrape_counts_every_state_reason_and_refusal_exactly(workers):
    big = _big_line()
    server = ServerProcess(
        "-q",
        "--workers",
        workers,
        "--max-connections",
        "3",
        "--idle-timeout",
        "0",
        "--drain-timeout",
        "120",
        "--max-line",
        str(big),
        "--metrics",
        "127.0.0.1:0",
    )
    held: list[socket.socket] = []
    try:
        url = _metrics_url(server)
        address = server.address

        # disconnect: two messages; the client keeps its socket, so the session lingers CLOSED (L13)
        disc = connect(address)
        held.append(disc)
        disc.sendall(b"hola\nDESCONEXION\n")
        assert read_until_closed(disc) == b"HOLA\nDESCONEXION\n"
        # end of stream: one line and an unterminated tail; the server closes at once (it saw the end)
        with connect(address) as eos:
            eos.sendall(b"uno\ndos")
            eos.shutdown(socket.SHUT_WR)
            assert read_until_closed(eos) == b"UNO\nDOS"
        # line too long: the notice, then a lingering CLOSED session
        toolong = connect(address)
        held.append(toolong)
        toolong.sendall(b"x" * (big + 1))
        assert read_until_closed(toolong) == (error_too_long(big) + "\n").encode()
        # abort: a reset from the client after one reply
        reset = connect(address)
        reset.sendall(b"reset\n")
        assert read_lines(reset, 1) == [b"RESET\n"]
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.close()
        scrape_until(url, lambda s: value(s, "upperecho_sessions_closed_total", reason="abort") == 1)

        # three sessions held open: CONNECTED, ECHOING, and ECHOING with replies the client does not read
        idle = connect(address)
        held.append(idle)
        echo = connect(address)
        held.append(echo)
        echo.sendall(b"eco\n")
        assert read_lines(echo, 1) == [b"ECO\n"]
        stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small, fixed window
        stuck.settimeout(30)
        stuck.connect(address)
        held.append(stuck)
        stuck.sendall(b"y" * big + b"\n")
        # busy (L10): the fourth open session is refused
        scrape_until(url, lambda s: value(s, "upperecho_sessions_opened_total") == 7)
        busy = connect(address)
        held.append(busy)
        assert read_until_closed(busy) == (ERROR_BUSY + "\n").encode()

        replies_sent = len(b"HOLA\nDESCONEXION\nUNO\nDOS" + error_too_long(big).encode() + b"\nRESET\nECO\n")
        received = len(b"hola\nDESCONEXION\nuno\ndos" + b"reset\neco\n") + 2 * (big + 1)
        first = expected(
            states={"CONNECTED": 1, "ECHOING": 2, "CLOSED": 2},
            opened=7,
            closed={"disconnect": 1, "end_of_stream": 1, "line_too_long": 1, "abort": 1},
            messages=7,
            busy=1,
        )
        samples = scrape_until(url, lambda s: ours(s) == first)
        assert ours(samples) == first
        assert value(samples, "upperecho_received_bytes_total") == received
        sent = value(samples, "upperecho_sent_bytes_total") - replies_sent - len(ERROR_BUSY) - 1
        assert 0 < sent < big + 1, "the unread client's reply is partly handed over, partly held"
        assert value(samples, "upperecho_reply_latency_seconds_count") == 7
        assert value(samples, "upperecho_reply_latency_seconds_bucket", le="+Inf") == 7
        assert value(samples, "upperecho_session_duration_seconds_count") == 4

        # shutdown (L11): the two readers' sessions are flushed; the unread one stays CLOSING
        server.signal(signal.SIGTERM)
        assert read_until_closed(idle) == (ERROR_SHUTDOWN + "\n").encode()
        assert read_until_closed(echo) == (ERROR_SHUTDOWN + "\n").encode()
        draining = expected(
            states={"CLOSING": 1, "CLOSED": 4},
            opened=7,
            closed={"disconnect": 1, "end_of_stream": 1, "line_too_long": 1, "abort": 1, "shutdown": 2},
            messages=7,
            busy=1,
        )
        samples = scrape_until(url, lambda s: ours(s) == draining)
        assert ours(samples) == draining
        assert value(samples, "upperecho_session_duration_seconds_count") == 6

        # the unread client resets: its CLOSING session is aborted, still counted as ended by the shutdown
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stuck.close()
        held.remove(stuck)
        closed = expected(
            states={"CLOSED": 4},
            opened=7,
            closed={"disconnect": 1, "end_of_stream": 1, "line_too_long": 1, "abort": 1, "shutdown": 3},
            messages=7,
            busy=1,
        )
        samples = scrape_until(url, lambda s: ours(s) == closed)
        assert ours(samples) == closed

        for sock in held:
            sock.close()
        held.clear()
        assert server.wait(timeout=30) == 0
    finally:
        for sock in held:
            sock.close()
        server.kill()


def test_idle_timeout_is_counted(start_server):
    server = start_server("-q", "--idle-timeout", "0.2", "--metrics", "127.0.0.1:0")
    url = _metrics_url(server)
    with connect(server.address) as sock:
        assert read_until_closed(sock) == (ERROR_IDLE + "\n").encode()
        want = expected(states={"CLOSED": 1}, opened=1, closed={"idle_timeout": 1}, messages=0, busy=0)
        samples = scrape_until(url, lambda s: ours(s) == want)
        assert ours(samples) == want
        assert value(samples, "upperecho_sent_bytes_total") == len(ERROR_IDLE) + 1


def test_proxy_and_per_address_refusals_are_counted(start_server):
    """O4 with O2 and L15: a bad header, a source outside --proxy-from and a client over its limit."""
    server = start_server(
        "-q", "--proxy-protocol", "v1", "--max-per-address", "1", "--metrics", "127.0.0.1:0", "--lang", "en"
    )
    url = _metrics_url(server)
    header = b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 5000\r\n"
    with connect(server.address) as held, connect(server.address) as over, connect(server.address) as bad:
        held.sendall(header + b"hola\n")
        assert read_lines(held, 1) == [b"HOLA\n"]
        over.sendall(header.replace(b"4242", b"4343"))
        assert read_until_closed(over) == b"error: too many connections from your address\n"
        bad.sendall(b"hola\n")  # no header: refused with nothing sent
        assert read_until_closed(bad) == b""
        samples = scrape_until(url, lambda s: value(s, "upperecho_connections_refused_total", reason="proxy") == 1)
        assert value(samples, "upperecho_connections_refused_total", reason="per_address") == 1
        assert value(samples, "upperecho_sessions_closed_total", reason="proxy_rejected") == 1


def test_promtool_finds_a_live_scrape_clean(start_server, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (Debian package prometheus; `make system-deps` installs it)")
    server = start_server("-q", "--metrics", "127.0.0.1:0")
    url = _metrics_url(server)
    with connect(server.address) as sock:
        sock.sendall(b"hola\nDESCONEXION\n")
        assert read_until_closed(sock) == b"HOLA\nDESCONEXION\n"
    scrape_until(url, lambda s: value(s, "upperecho_sessions_closed_total", reason="disconnect") == 1)
    text = scrape_text(url)
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def test_metrics_off_by_default(server):
    with connect(server.address) as sock:
        sock.sendall(b"hola\n")
        assert read_exactly(sock, 5) == b"HOLA\n"
    assert not any("metrics on" in line for line in server.stdout)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_missing_package_is_one_clear_line(tmp_path):
    shadow = tmp_path / "prometheus_client"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('not installed here')\n")
    result = _run("--metrics", "127.0.0.1:0", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "prometheus_client" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("address", ["9100", "127.0.0.1", "::1:9100", "127.0.0.1:port", "127.0.0.1:70000"])
def test_bad_metrics_address_is_a_usage_error(address):
    result = _run("--metrics", address)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--metrics" in lines[0]


def test_metrics_port_in_use_is_one_clear_line():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        result = _run("--metrics", f"127.0.0.1:{holder.getsockname()[1]}")
    finally:
        holder.close()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot serve metrics" in lines[0] and "address already in use" in lines[0]
