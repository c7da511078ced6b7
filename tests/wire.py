"""Raw-socket helpers for tests that must control every byte (fragments, half-close, resets)."""

from __future__ import annotations

import socket
import time


def connect(address: tuple[str, int], timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 30.0, limit: int = 64 << 20) -> bytes:
    """Everything the server sends until it closes (or the deadline: TimeoutError)."""
    deadline = time.monotonic() + timeout
    chunks = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"server did not close within {timeout} s; got {b''.join(chunks)[-200:]!r}")
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        size += len(data)
        if size > limit:
            raise AssertionError(f"more than {limit} bytes received")


def read_exactly(sock: socket.socket, size: int, timeout: float = 30.0) -> bytes:
    """Exactly ``size`` bytes (fewer only if the server closes first)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"got {len(data)} of {size} bytes within {timeout} s: {bytes(data[-200:])!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(size - len(data))
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_lines(sock: socket.socket, count: int, timeout: float = 30.0) -> list[bytes]:
    """The next ``count`` LF-terminated lines, terminators kept."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while (have := data.count(b"\n")) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"got {have} of {count} lines: {bytes(data[-200:])!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise ConnectionError(f"closed after {have} of {count} lines: {bytes(data[-200:])!r}")
        data += chunk
    return [line + b"\n" for line in bytes(data).split(b"\n")[:count]]


def exchange(address: tuple[str, int], payload: bytes, timeout: float = 30.0) -> bytes:
    """Send ``payload``, half-close, and return everything until the server closes."""
    with connect(address, timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return read_until_closed(sock, timeout)
