"""Shutdown under load (L11, L13): every received message is answered, in order, before the notice.

Forty clients pipeline continuously from one thread (a selector drives all
their sockets, so the load does not depend on thread scheduling).  Each keeps
at most ``WINDOW`` lines unanswered and always reads, as a well-behaved
pipelining client does.
"""

from __future__ import annotations

import selectors
import signal
import socket
import time
from collections.abc import Callable

import pytest

from tests.hardening.harness import MiB, peak_rss, push_until_stalled, report, wait_until
from tests.wire import connect, read_exactly

pytestmark = pytest.mark.timeout(120)

NOTICE = b"error: server shutting down\n"
CLIENTS = 40
WINDOW = 200
BATCH = 50


class Pipeliner:
    """One client's side: the lines it sent and the bytes it received."""

    def __init__(self, index: int, address: tuple[str, int]) -> None:
        self.index = index
        self.sock = connect(address, timeout=30)
        self.sock.setblocking(False)
        self.sent_lines: list[bytes] = []
        self.outgoing = b""
        self.received = bytearray()
        self.replies = 0
        self.closed = False

    def line(self, n: int) -> bytes:
        return f"cliente {self.index} línea {n} ñandú\n".encode()

    def want_write(self) -> bool:
        return not self.closed and (bool(self.outgoing) or len(self.sent_lines) - self.replies < WINDOW)

    def write(self) -> None:
        if not self.outgoing:
            start = len(self.sent_lines)
            batch = [self.line(n) for n in range(start, start + BATCH)]
            self.sent_lines.extend(batch)
            self.outgoing = b"".join(batch)
        try:
            sent = self.sock.send(self.outgoing)
        except BlockingIOError:
            return
        except OSError as exc:
            raise AssertionError(f"client {self.index}: sending failed: {exc!r}") from exc
        self.outgoing = self.outgoing[sent:]

    def read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            raise AssertionError(f"client {self.index}: the connection was reset: {exc!r}") from exc
        if not data:
            self.closed = True
            return
        self.received += data
        self.replies += data.count(b"\n")


def drive(clients: list[Pipeliner], until: Callable[[], bool], timeout: float) -> None:
    """Run every client's send/receive loop until ``until()`` is true (TimeoutError otherwise)."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        while not until():
            if time.monotonic() >= deadline:
                replies = sorted(c.replies for c in clients)
                raise TimeoutError(f"not within {timeout} s; replies per client from {replies[0]} to {replies[-1]}")
            for client in clients:
                if client.closed:
                    continue
                mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.want_write() else 0)
                try:
                    sel.modify(client.sock, mask, client)
                except KeyError:
                    sel.register(client.sock, mask, client)
            for key, events in sel.select(0.5):
                client = key.data
                if events & selectors.EVENT_READ:
                    client.read()
                if client.closed:
                    sel.unregister(client.sock)
                    client.sock.close()
                elif events & selectors.EVENT_WRITE:
                    client.write()


def test_sigterm_while_forty_clients_pipeline_answers_everything_in_order(start_server):
    drain = 30.0
    srv = start_server("-q", "--drain-timeout", str(drain))
    clients = [Pipeliner(i, srv.address) for i in range(CLIENTS)]
    try:
        drive(clients, lambda: all(c.replies >= 1000 for c in clients), timeout=90)
        srv.signal(signal.SIGTERM)
        drive(clients, lambda: all(c.closed for c in clients), timeout=drain)
        # every client finished its drain cooperatively, so the server needs none of its drain time
        assert srv.wait(timeout=drain) == 0
    finally:
        for client in clients:
            client.sock.close()
    for client in clients:
        received = bytes(client.received)
        assert received.endswith(NOTICE), f"client {client.index}: no shutdown notice at the end: {received[-80:]!r}"
        replies = received[: -len(NOTICE)].split(b"\n")
        assert replies.pop() == b""
        assert len(replies) >= 1000, f"client {client.index}: only {len(replies)} replies"
        assert len(replies) <= len(client.sent_lines)
        expected = [line[:-1].decode().upper().encode() for line in client.sent_lines[: len(replies)]]
        assert replies == expected, f"client {client.index}: replies lost or out of order"
    assert not [line for line in srv.stderr if "Traceback" in line], srv.stderr
    answered = sum(c.received.count(b"\n") - 1 for c in clients)
    report("SIGTERM under load", clients=CLIENTS, replies_answered=answered, exit_status=0)


def test_second_signal_under_load_exits_at_once(start_server):
    srv = start_server("-q", "--drain-timeout", "60")
    # a client that never reads keeps the drain busy for the whole 60 s
    stuck = connect(srv.address, timeout=30)
    clients = [Pipeliner(i, srv.address) for i in range(CLIENTS)]
    try:
        assert push_until_stalled(stuck, b"atascado\n" * (8 << 20)) < 9 * (8 << 20)
        drive(clients, lambda: all(c.replies >= 200 for c in clients), timeout=90)
        srv.signal(signal.SIGTERM)
        # the notices show the first signal was handled; the stuck client holds the drain open
        drive(clients, lambda: all(c.closed for c in clients), timeout=30)
        assert all(bytes(c.received).endswith(NOTICE) for c in clients)
        assert srv.proc.poll() is None, "the server ended its drain with a client still unflushed"
        srv.signal(signal.SIGINT)
        assert srv.wait(timeout=20) == 128 + signal.SIGINT
    finally:
        stuck.close()
        for client in clients:
            client.sock.close()


def test_sigterm_with_stuck_writers_keeps_the_output_bound(start_server):
    """The drain answers what was read, but must not read past the L12 bound of a client that does not read."""
    hogs = 10
    srv = start_server("-q", "--workers", "1", "--drain-timeout", "60")
    line = "ΐ".encode() * 250 + b"\n"  # its reply is three times as long
    payload = line * (16 * MiB // len(line))
    stuck = [connect(srv.address, timeout=30) for _ in range(hogs)]
    try:
        for sock in stuck:
            assert push_until_stalled(sock, payload, stall=1.0) < len(payload)
        rss_before = srv.rss()
        # one worker handles the sessions in order: when the last one has its notice, all have
        last = Pipeliner(0, srv.address)
        drive([last], lambda: last.replies >= 10, timeout=30)
        srv.signal(signal.SIGTERM)
        drive([last], lambda: last.closed, timeout=30)
        assert bytes(last.received).endswith(NOTICE)
        growth = peak_rss(srv) - rss_before
        report("SIGTERM with stuck writers", clients=hogs, peak_growth_MiB=f"{growth / MiB:.1f}")
        assert growth < hogs * 2 * MiB, f"the drain grew the server by {growth / MiB:.1f} MiB for {hogs} stuck clients"
    finally:
        for sock in stuck:
            sock.close()
    assert srv.wait(timeout=30) == 0


def test_sigterm_stops_accepting_while_the_drain_goes_on(start_server):
    srv = start_server("-q", "--drain-timeout", "60")

    def refused() -> bool:
        try:
            probe = socket.create_connection(srv.address, timeout=5)
        except ConnectionRefusedError:
            return True
        probe.close()  # queued but never to be served: the listener is about to close
        return False

    with connect(srv.address, timeout=30) as lingering:
        lingering.sendall(b"hola\n")
        assert read_exactly(lingering, 5) == b"HOLA\n"
        srv.signal(signal.SIGTERM)
        assert read_exactly(lingering, len(NOTICE)) == NOTICE
        # This client neither reads to the end nor closes, so the drain goes on ...
        wait_until(refused, 30, "new connections refused during the drain (L11)")
        assert srv.proc.poll() is None, "the server left before its lingering client"
    # ... until it closes: then the server is done.
    assert srv.wait(timeout=30) == 0
