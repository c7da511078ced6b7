"""Helpers shared by the hardening tests: waits with deadlines, an honest client, resource probes."""

from __future__ import annotations

import os
import resource
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from client.connection import Connection
from tests.serverproc import ServerProcess

MiB = 1 << 20
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Byte strings that stress the protocol, for the fuzzers to build streams from.
TOKENS = [
    b"\n",
    b"\r\n",
    b"\r",
    b"hola",
    b" ",
    b"DESCONEXION\n",
    b"  Desconexi\xc3\xb3n \r\n",
    b"desconexion",
    b"\xc3\xb1and\xc3\xba",  # ñandú
    b"stra\xc3\x9fe",  # straße -> STRASSE
    b"\xce\x90",  # ΐ: its upper case is three code points
    b"\xc3",  # a lead byte alone
    b"\xa9",  # a continuation byte alone
    b"\xf0\x9f\x98",  # an emoji without its last byte
    b"\x80",
    b"\xed\xa0\x80",  # an encoded surrogate: invalid
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF: invalid
    b"\xff\xfe",
    b"\x00",
    b"\x1b[2K",
    b"\xe2\x80\xa8",  # U+2028
    b"error: ",
    b"x" * 70,
]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns something true; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(interval)


def honest_round_trips(address: tuple[str, int], count: int = 50, tag: str = "honesto") -> None:
    """A well-behaved client: ``count`` requests, each reply checked, then the protocol's goodbye."""
    with Connection(*address, timeout=30) as conn:
        for i in range(count):
            text = f"{tag} {i} ñandú"
            reply = conn.request(text)
            assert reply == text.upper(), f"honest client got {reply!r} for {text!r}"
        assert conn.disconnect() == "DESCONEXION"


@contextmanager
def honest_traffic(address: tuple[str, int], min_rounds: int = 1) -> Iterator[Callable[[], int]]:
    """An honest client keeps working in the background for the duration of the block.

    Yields a function returning the rounds completed so far.  On leaving, the
    client stops; its first wrong reply or error is raised here, and at least
    ``min_rounds`` full sessions must have passed.
    """
    stop = threading.Event()
    rounds = 0
    failure: list[BaseException] = []

    def run() -> None:
        nonlocal rounds
        try:
            while not stop.is_set():
                honest_round_trips(address, 20, tag=f"ronda {rounds}")
                rounds += 1
        except Exception as exc:  # handed to the test thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name="honest-client", daemon=True)
    thread.start()
    try:
        yield lambda: rounds
    finally:
        stop.set()
        thread.join(60)
    if failure:
        raise AssertionError(f"the honest client failed after {rounds} rounds: {failure[0]!r}") from failure[0]
    assert not thread.is_alive(), "the honest client is stuck"
    assert rounds >= min_rounds, f"the honest client completed only {rounds} rounds"


def cpu_seconds(server: ServerProcess) -> float:
    """User plus system CPU time the server process has used so far (Linux /proc)."""
    with open(f"/proc/{server.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / _CLOCK_TICKS


def peak_rss(server: ServerProcess) -> int:
    """The most resident memory the server process has ever had, in bytes (``VmHWM``)."""
    with open(f"/proc/{server.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def open_fds(server: ServerProcess) -> int:
    """How many descriptors the server process holds (Linux /proc)."""
    return len(os.listdir(f"/proc/{server.pid}/fd"))


def push_until_stalled(sock: socket.socket, data: bytes, stall: float = 2.0, timeout: float = 60.0) -> int:
    """Send ``data`` without reading until the peer stops taking it; return how many bytes went out.

    The peer is considered stalled when the socket stays unwritable for ``stall``
    seconds; this is a condition, not a measurement, so a slow machine only
    makes the test wait longer.
    """
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_WRITE)
        while sent < len(data):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"sent {sent} of {len(data)} bytes in {timeout} s without a stall")
            if not sel.select(stall):
                break
            try:
                sent += sock.send(data[sent : sent + 65536])
            except BlockingIOError:
                continue
    return sent


def hold_sessions(address: tuple[str, int], count: int) -> list[socket.socket]:
    """Open ``count`` connections and prove each is a served session (not refused as busy)."""
    socks = []
    try:
        for i in range(count):
            sock = socket.create_connection(address, timeout=30)
            socks.append(sock)
            sock.sendall(f"sesión {i}\n".encode())
        for i, sock in enumerate(socks):
            expected = f"SESIÓN {i}\n".encode()
            got = _read_line(sock)
            assert got == expected, f"connection {i} of {count} got {got!r}"
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def reset(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a crashed or hostile client does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def ensure_fd_limit(needed: int) -> None:
    """Raise this process's open-file soft limit to ``needed``, or skip when the hard limit forbids it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"this test needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def send_rest_and_read(sock: socket.socket, payload: bytes, sent: int) -> bytes:
    """Send ``payload`` from ``sent`` on while reading, half-close, and read until the server closes."""
    received = bytearray()
    deadline = time.monotonic() + 90
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while True:
            assert time.monotonic() < deadline, f"stuck with {sent} sent and {len(received)} received"
            for _, events in sel.select(1.0):
                if events & selectors.EVENT_WRITE:
                    try:
                        sent += sock.send(payload[sent : sent + 65536])
                    except BlockingIOError:
                        pass
                    if sent == len(payload):
                        sock.shutdown(socket.SHUT_WR)
                        sel.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(1 << 18)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        return bytes(received)
                    received += chunk


def report(scenario: str, **figures: object) -> None:
    """Print a scenario's measured figures (``pytest -s`` shows them; docs/reliability.md quotes them)."""
    shown = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in figures.items())
    print(f"\n[figures] {scenario}: {shown}")
