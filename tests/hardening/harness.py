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


class HonestClient:
    """An honest client working in a background thread; see :func:`honest_traffic`."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.started = 0
        self.completed = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="honest-client", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.started += 1
                honest_round_trips(self.address, 20, tag=f"ronda {self.started}")
                self.completed += 1
        except Exception as exc:  # handed to the test thread by served() and on leaving
            self.failure = exc

    def _check(self) -> None:
        if self.failure is not None:
            raise AssertionError(
                f"the honest client failed after {self.completed} sessions: {self.failure!r}"
            ) from self.failure

    def served(self, sessions: int = 1, timeout: float = 90.0) -> None:
        """Wait until ``sessions`` honest sessions that began from now on have completed.

        This is the test's evidence that the server serves others while the
        abuse set up so far is in place: a condition with a generous deadline,
        whatever the relative speed of the threads.
        """
        target = self.started + sessions  # a session already under way does not count

        def done() -> bool:
            self._check()
            return self.completed >= target

        wait_until(done, timeout, f"{sessions} honest sessions begun after this point")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(90)
        self._check()
        assert not self._thread.is_alive(), "the honest client is stuck"


@contextmanager
def honest_traffic(address: tuple[str, int]) -> Iterator[HonestClient]:
    """An honest client keeps working in the background for the duration of the block.

    Every reply it gets is checked; its first wrong reply or error is raised
    by :meth:`HonestClient.served` or on leaving the block.  How many sessions
    it completes while the test's own thread runs is not asserted (it depends
    on the threads' relative speed): the test calls ``served(n)`` at the points
    where it needs the server to have served others.
    """
    client = HonestClient(address)
    client.start()
    try:
        yield client
    finally:
        client.stop()


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
