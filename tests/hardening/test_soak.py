"""Soak (slow): minutes of mixed load with churn; server memory, threads and descriptors stay flat.

Several kinds of users share one server, each checking every reply:
conversational sessions that churn (the protocol's goodbye, a plain close or
a reset), pipelining bursts, abusers (invalid UTF-8, over-long lines, partial
lines then a reset, slowloris partial lines that meet the idle timeout) and a
client that stops reading for a while.  A sampler records the server's
resident memory, threads and descriptors; the test prints the figures that
docs/reliability.md reports.
"""

from __future__ import annotations

import random
import socket
import statistics
import threading
import time
from collections.abc import Callable

import pytest

from client.connection import Connection
from tests.hardening.harness import MiB, open_fds, push_until_stalled, report, reset, send_rest_and_read, wait_until
from tests.serverproc import ServerProcess
from tests.wire import connect, read_until_closed

DURATION = 120.0
WARM_UP = 20.0
SAMPLE_EVERY = 2.0
MAX_LINE = 4096
IDLE = 2.0
THINK = 0.05  # seconds, at most, between one user's sessions


class Load:
    """Runs user loops in threads until stopped; remembers the first failure and counts the work."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, name: str, user: Callable[[random.Random], None], seed: int) -> None:
        def loop() -> None:
            rng = random.Random(seed)
            while not self.stop.is_set():
                try:
                    user(rng)
                except Exception as exc:  # reported by the test thread
                    with self._lock:
                        self.failures.append(f"{name}: {exc!r}")
                    return
                with self._lock:
                    self.counts[name] = self.counts.get(name, 0) + 1
                self.stop.wait(rng.uniform(0.0, THINK))  # a user's pause between sessions, as in Locust

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not [t.name for t in self._threads if t.is_alive()], "a load thread is stuck"


def _talker(address: tuple[str, int]) -> Callable[[random.Random], None]:
    def user(rng: random.Random) -> None:
        conn = Connection(*address, timeout=30).connect()
        try:
            for i in range(rng.randint(1, 40)):
                text = f"charla {i} {'ñandú straße ' * rng.randint(0, 20)}"
                assert conn.request(text) == text.upper()
            ending = rng.random()
            if ending < 0.6:
                assert conn.disconnect() == "DESCONEXION"
            elif ending < 0.8:
                conn.close()
            else:
                reset(conn._socket())
                conn._sock = None
        finally:
            conn.close()

    return user


def _pipeliner(address: tuple[str, int]) -> Callable[[random.Random], None]:
    def user(rng: random.Random) -> None:
        lines = [f"ráfaga {i} {rng.random()}" for i in range(rng.randint(100, 3000))]
        with Connection(*address, timeout=30) as conn:
            assert list(conn.pipeline(lines)) == [line.upper() for line in lines]
            conn.disconnect()

    return user


def _abuser(address: tuple[str, int]) -> Callable[[random.Random], None]:
    def user(rng: random.Random) -> None:
        kind = rng.randrange(3)
        with connect(address, timeout=30) as sock:
            if kind == 0:
                sock.sendall(b"bien\n\xff\xfe mal\n")
                sock.shutdown(socket.SHUT_WR)
                assert read_until_closed(sock) == b"BIEN\nerror: invalid utf-8\n"
            elif kind == 1:
                sock.sendall(b"z" * (MAX_LINE + rng.randint(1, 20000)))
                sock.shutdown(socket.SHUT_WR)
                assert read_until_closed(sock) == f"error: line too long (max {MAX_LINE} bytes)\n".encode()
            else:
                sock.sendall(b"a medias sin fin de l\xc3")
                reset(sock)

    return user


def _slowloris(address: tuple[str, int]) -> Callable[[random.Random], None]:
    def user(rng: random.Random) -> None:
        with connect(address, timeout=30) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: lento")
            assert read_until_closed(sock) == b"GET / HTTP/1.1\r\n".upper() + b"error: idle timeout\r\n"

    return user


def _hog(address: tuple[str, int]) -> Callable[[random.Random], None]:
    def user(rng: random.Random) -> None:
        line = b"h" * 511 + b"\n"
        payload = line * (16 * MiB // len(line))
        with connect(address, timeout=60) as sock:
            pushed = push_until_stalled(sock, payload, stall=1.0)
            assert pushed < len(payload), "the server read 16 MiB from a client that was not reading"
            assert send_rest_and_read(sock, payload, pushed) == payload.upper()

    return user


def _sample(server: ServerProcess) -> tuple[float, int, int, int]:
    return (time.monotonic(), server.rss(), server.threads(), open_fds(server))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_soak_mixed_load_with_churn_keeps_memory_threads_and_descriptors_flat(start_server):
    srv = start_server("-q", "--max-line", str(MAX_LINE), "--idle-timeout", str(IDLE), "--drain-timeout", "5")
    with Connection(*srv.address) as warm:
        assert warm.request("calentar") == "CALENTAR"
    fds_idle = open_fds(srv)
    start = _sample(srv)
    load = Load(srv.address)
    users = [("talker", _talker)] * 4 + [("pipeliner", _pipeliner)] * 2
    users += [("abuser", _abuser), ("slowloris", _slowloris), ("hog", _hog)]
    for seed, (name, make) in enumerate(users):
        load.start(f"{name}-{seed}", make(srv.address), seed)
    samples = [start]
    began = time.monotonic()
    try:
        while time.monotonic() - began < DURATION and not load.failures:
            load.stop.wait(SAMPLE_EVERY)
            samples.append(_sample(srv))
    finally:
        load.join()
    assert not load.failures, load.failures
    wait_until(lambda: open_fds(srv) <= fds_idle, 30, f"the server back to {fds_idle} descriptors")
    end = _sample(srv)

    steady = [s for s in samples if s[0] - began >= WARM_UP]
    third = max(1, len(steady) // 3)
    early = statistics.mean(s[1] for s in steady[:third])
    late = statistics.mean(s[1] for s in steady[-third:])
    peak = max(s[1] for s in samples)
    thread_counts = {s[2] for s in samples}
    counts = dict(sorted(load.counts.items()))
    report(
        "soak",
        seconds=f"{DURATION:.0f}",
        sessions=sum(counts.values()),
        by_user=counts,
        rss_MiB=f"start {start[1] / MiB:.1f}, steady early {early / MiB:.1f}, late {late / MiB:.1f}, "
        f"peak {peak / MiB:.1f}, end {end[1] / MiB:.1f}",
        threads=sorted(thread_counts),
        descriptors=f"idle {fds_idle}, peak {max(s[3] for s in samples)}, end {end[3]}",
    )
    assert all(count > 0 for count in counts.values())
    assert thread_counts == {start[2]}, f"thread count changed under load: {sorted(thread_counts)}"
    assert late - early < 8 * MiB, f"memory kept growing: {early / MiB:.1f} -> {late / MiB:.1f} MiB"
    assert peak - start[1] < 64 * MiB, f"peak memory {peak / MiB:.1f} MiB from {start[1] / MiB:.1f} MiB"
    assert srv.stop() == 0
