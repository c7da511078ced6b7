"""Oversized input (L6, L13): the server holds at most one line, and the ``error:`` line survives the close.

Memory is the server's peak resident size (``VmHWM``) against its size before
the abuse, so a spike that is freed again still counts.  The margins are
generous for allocator noise but smaller than what holding the input would cost.
"""

from __future__ import annotations

import selectors
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.hardening.harness import MiB, honest_round_trips, peak_rss, report
from tests.wire import connect, read_until_closed

pytestmark = pytest.mark.timeout(120)

TOO_LONG_DEFAULT = b"error: line too long (max 65536 bytes)\n"


def _warm(server) -> int:
    """Warm the server up with an honest session, then return its resident size."""
    honest_round_trips(server.address, 20)
    return server.rss()


def _send_huge_line_then_read(address: tuple[str, int], size: int) -> bytes:
    """Send ``size`` bytes with no newline without reading anything, half-close, then read it all.

    The server refuses the line long before the end; if it closed with our
    bytes still arriving, a reset would destroy its error line before we read it.
    """
    with connect(address, timeout=60) as sock:
        chunk = b"a" * 65536
        sent = 0
        while sent < size:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.shutdown(socket.SHUT_WR)
        return read_until_closed(sock, timeout=60)


def test_five_mib_lines_without_newline_get_the_error_line_and_memory_stays_bounded(server):
    rss_before = _warm(server)
    clients = 4
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: _send_huge_line_then_read(server.address, 5 * MiB), range(clients)))
    assert results == [TOO_LONG_DEFAULT] * clients
    growth = peak_rss(server) - rss_before
    report("5 MiB lines", clients=clients, peak_growth_MiB=f"{growth / MiB:.2f}")
    # holding the lines would cost 20 MiB; one 64 KiB read per client is the design
    assert growth < 6 * MiB, f"server peak memory grew by {growth / MiB:.1f} MiB for {clients} x 5 MiB lines"
    honest_round_trips(server.address)


def test_one_byte_drip_of_a_long_line(start_server):
    srv = start_server("-q", "--max-line", "4096")
    line = ("ñ" * 1500 + " drip").encode()  # 3005 bytes: long, but within the limit
    with connect(srv.address) as sock:
        for i in range(len(line)):
            sock.send(line[i : i + 1])
        sock.send(b"\r")
        sock.send(b"\n")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == line.decode().upper().encode() + b"\r\n"
    honest_round_trips(srv.address)


def test_one_byte_drip_past_the_limit_gets_the_error_then_a_clean_close(start_server):
    srv = start_server("-q", "--max-line", "4096")
    with connect(srv.address) as sock:
        for _ in range(4096 + 1):
            sock.send(b"x")
        assert _readable_within(sock, 30), "no answer to a line one byte past the limit"
        # the client goes on dripping into the closing connection: no reset may follow
        for _ in range(100):
            sock.send(b"y")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b"error: line too long (max 4096 bytes)\n"
    honest_round_trips(srv.address)


def _readable_within(sock: socket.socket, timeout: float) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def test_many_near_limit_lines_are_answered_exactly_with_bounded_memory(server):
    rss_before = _warm(server)
    # 65,536 bytes each, the limit: ASCII, "ß" (upper case SS, same size) and "ΐ" (upper case 3x as long)
    kinds = [
        ("a" * 65536, b"\n"),
        ("ß" * 32768, b"\r\n"),
        ("ΐ" * 32768, b"\n"),
        ("z" * 65535 + " ", b"\r\n"),
    ]
    count = 400  # 26 MiB sent, 39 MiB of replies
    expected_total = sum(len(kinds[i % 4][0].upper().encode()) + len(kinds[i % 4][1]) for i in range(count))

    def send_all(sock: socket.socket) -> None:
        for i in range(count):
            text, terminator = kinds[i % 4]
            sock.sendall(text.encode() + terminator)
        sock.shutdown(socket.SHUT_WR)

    with connect(server.address, timeout=60) as sock, ThreadPoolExecutor(1) as pool:
        sending = pool.submit(send_all, sock)
        received = read_until_closed(sock, timeout=90)
        sending.result(timeout=30)
    assert len(received) == expected_total
    position = 0
    for i in range(count):
        text, terminator = kinds[i % 4]
        reply = text.upper().encode() + terminator
        assert received[position : position + len(reply)] == reply, f"reply {i} is wrong"
        position += len(reply)
    growth = peak_rss(server) - rss_before
    report("near-limit lines", lines=count, sent_MiB=26, peak_growth_MiB=f"{growth / MiB:.2f}")
    assert growth < 12 * MiB, f"server peak memory grew by {growth / MiB:.1f} MiB while streaming 26 MiB of lines"
