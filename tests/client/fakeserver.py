"""A tiny scripted server in a thread, for client behaviour the real server never shows.

It serves one connection with a handler and records every byte received, so a
test can check exactly what the client sent (and what it did not send).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class FakeServer:
    def __init__(self, handler: Callable[[socket.socket, FakeServer], None]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self.received = bytearray()
        self._offset = 0  # how far read_line has consumed ``received``
        self._changed = threading.Condition()
        self._handler = handler
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:  # closed before any client came
            return
        with conn:
            conn.settimeout(30)
            try:
                self._handler(conn, self)
            except OSError:
                pass  # the client went away: what it sent is recorded

    def recv(self, conn: socket.socket) -> bytes:
        """One read from the client, recorded."""
        data = conn.recv(65536)
        with self._changed:
            self.received += data
            self._changed.notify_all()
        return data

    def read_line(self, conn: socket.socket) -> bytes | None:
        """The next complete line from the client (LF kept), or ``None`` when it closes first."""
        while True:
            with self._changed:
                end = self.received.find(b"\n", self._offset)
                if end >= 0:
                    line = bytes(self.received[self._offset : end + 1])
                    self._offset = end + 1
                    return line
            if not self.recv(conn):
                return None

    def wait_received(self, needle: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while needle not in self.received:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{needle!r} not received within {timeout} s: {bytes(self.received)!r}")
                self._changed.wait(remaining)

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=30)


@contextmanager
def fake_server(handler: Callable[[socket.socket, FakeServer], None]) -> Iterator[FakeServer]:
    server = FakeServer(handler)
    try:
        yield server
    finally:
        server.close()


def drain_until_closed(conn: socket.socket, server: FakeServer) -> None:
    """The L13 way to close: stop sending, read until the client closes."""
    conn.shutdown(socket.SHUT_WR)
    while server.recv(conn):
        pass


def upper_echo(conn: socket.socket, server: FakeServer) -> None:
    """Answer like the real server (ASCII disconnect word only), recording everything."""
    while (line := server.read_line(conn)) is not None:
        text = line[:-1].decode()
        conn.sendall(text.upper().encode() + b"\n")
        if text.strip().lower() == "desconexion":
            drain_until_closed(conn, server)
            return


def answer_one_then_close(conn: socket.socket, server: FakeServer) -> None:
    """Answer the first message, then vanish (a crash, as the client sees it)."""
    line = server.read_line(conn)
    if line is not None:
        conn.sendall(line[:-1].upper() + b"\n")


def free_port() -> int:
    """A port nobody listens on: bind one, read it, close it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
