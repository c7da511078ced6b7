"""L14 live: trickling a message one byte at a time no longer holds a connection for ever.

Before the message deadline, any byte restarted the only clock (L9), so a client
sending a byte every few seconds and never a newline kept its slot until it
passed ``--max-line``: with the defaults, months.  These tests run the real
server with a short ``--line-timeout`` and wait on conditions with deadlines;
how long anything took is never asserted.
"""

from __future__ import annotations

import resource
import selectors
import socket
import time

import pytest

from server.config import parse
from server.options import UsageError
from tests.serverproc import ServerProcess
from tests.wire import connect, read_lines, read_until_closed

TRICKLERS = 1000
LINE_TIMEOUT = 2
NOTICE = b"error: line timeout\n"
HONEST_ADDRESS = "127.0.0.2"  # another client address on the loopback network
DEADLINE = 120.0  # generous: only reached when something is wrong


def _descriptors_for(count: int) -> None:
    """Raise this process's open-file soft limit so that it can hold ``count`` sockets, or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count:
        pytest.skip(f"needs {count} open files; the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count if hard == resource.RLIM_INFINITY else hard, hard))


def _honest_request(address: tuple[str, int], text: bytes) -> bytes:
    """One line from another address, on its own connection; returns the reply line."""
    with socket.create_connection(address, timeout=30, source_address=(HONEST_ADDRESS, 0)) as sock:
        sock.sendall(text + b"\n")
        (reply,) = read_lines(sock, 1, timeout=30)
        sock.sendall(b"DESCONEXION\n")
        return reply


@pytest.mark.timeout(180)
def test_a_thousand_trickling_connections_are_evicted_and_an_honest_client_is_served_throughout():
    _descriptors_for(TRICKLERS + 200)
    server = ServerProcess(
        "--line-timeout",
        str(LINE_TIMEOUT),
        "--max-connections",
        str(TRICKLERS + 10),
        "--log-level",
        "warning",
    )
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytearray] = {}
    try:
        for _ in range(TRICKLERS):
            sock = connect(server.address, timeout=30)
            sock.setblocking(False)
            sock.send(b"a")  # the first byte of a message that never ends
            received[sock] = bytearray()
            selector.register(sock, selectors.EVENT_READ)
        # One honest connection held open across the whole attack, from another address.
        honest = socket.create_connection(server.address, timeout=30, source_address=(HONEST_ADDRESS, 0))
        closed: set[socket.socket] = set()
        rounds = 0
        deadline = time.monotonic() + DEADLINE
        while len(closed) < TRICKLERS:
            assert time.monotonic() < deadline, f"only {len(closed)} of {TRICKLERS} trickling connections evicted"
            rounds += 1
            honest.sendall(b"still here %d\n" % rounds)
            assert read_lines(honest, 1, timeout=30) == [b"STILL HERE %d\n" % rounds]
            assert _honest_request(server.address, b"hola") == b"HOLA\n"
            round_ends = time.monotonic() + 1.0  # one byte a second from each trickler
            while (left := round_ends - time.monotonic()) > 0 and len(closed) < TRICKLERS:
                for key, _ in selector.select(timeout=left):
                    sock = key.fileobj
                    try:
                        data = sock.recv(4096)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if data:
                        received[sock] += data
                    else:
                        selector.unregister(sock)
                        closed.add(sock)
            for sock in received:
                if sock not in closed and not received[sock]:
                    try:
                        sock.send(b"a")
                    except (BlockingIOError, InterruptedError):
                        pass
        assert {bytes(data) for data in received.values()} == {NOTICE}
        # Still served after the attack, on the connection held throughout.
        honest.sendall(b"after\n")
        assert read_lines(honest, 1, timeout=30) == [b"AFTER\n"]
        honest.close()
        assert server.proc.poll() is None
    finally:
        for sock in received:
            sock.close()
        selector.close()
        server.kill()


def test_bytes_of_an_unfinished_message_do_not_restart_its_deadline_but_a_new_message_gets_its_own():
    server = ServerProcess("--line-timeout", str(LINE_TIMEOUT), "--idle-timeout", "0", "--lang", "en")
    try:
        with connect(server.address, timeout=30) as sock:
            # Complete lines, however slowly the connection is used, are never timed out.
            for word in (b"uno", b"dos"):
                sock.sendall(word)
                sock.sendall(b"\n")
                assert read_lines(sock, 1, timeout=30) == [word.upper() + b"\n"]
            sock.sendall(b"tres sin fin")
            sent = 0
            while not _readable(sock, 0.25):
                sock.sendall(b".")  # each byte restarts L9's clock, not L14's
                sent += 1
                assert sent < 400, "no line timeout while trickling"
            assert read_until_closed(sock, timeout=30) == NOTICE
        server.wait_for_text(": line timeout", timeout=30)  # the closed line names the reason in words (S4)
    finally:
        server.kill()


def _readable(sock: socket.socket, timeout: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout))


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "2073600.5", "soon"])
def test_an_out_of_range_line_timeout_is_refused_at_start(value):
    with pytest.raises(UsageError, match="line-timeout"):
        parse(["--line-timeout", value], environ={})
    with pytest.raises(UsageError, match="UPPERECHO_LINE_TIMEOUT"):
        parse([], environ={"UPPERECHO_LINE_TIMEOUT": value})


def test_line_timeout_defaults_to_a_minute_and_takes_zero_to_24_days():
    assert parse([], environ={}).limits.line_timeout == 60
    assert parse(["--line-timeout", "0"], environ={}).limits.line_timeout == 0
    assert parse([], environ={"UPPERECHO_LINE_TIMEOUT": "2073600"}).limits.line_timeout == 24 * 24 * 3600
