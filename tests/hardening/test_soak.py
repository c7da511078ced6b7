"""Soak (slow): minutes of mixed load with churn; server memory, threads and descriptors stay flat.

The honest load is the project's Locust user, run headless in its own
process: many users echoing ASCII and Unicode messages, every reply checked,
now and then saying DESCONEXION and coming back (churn).  Beside it, in
threads, users Locust does not model: pipelining bursts, abusers (invalid
UTF-8, over-long lines, partial lines then a reset), a slowloris whose partial
lines meet the idle timeout, and a client that stops reading for a while;
each checks every byte it gets.  A sampler records the server's resident
memory, threads and descriptors; the figures are printed for
docs/reliability.md.
"""

from __future__ import annotations

import csv
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from client.connection import Connection
from tests.hardening.harness import MiB, open_fds, push_until_stalled, report, reset, send_rest_and_read, wait_until
from tests.serverproc import ROOT, ServerProcess
from tests.wire import connect, read_until_closed

DURATION = 120.0
WARM_UP = 20.0
SAMPLE_EVERY = 2.0
MAX_LINE = 4096
IDLE = 2.0
THINK = 0.05  # seconds, at most, between one user's sessions
LOCUST_USERS = 20


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

    def names(self) -> set[str]:
        return {thread.name for thread in self._threads}

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not [t.name for t in self._threads if t.is_alive()], "a load thread is stuck"


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


def _locust(server: ServerProcess, csv_prefix: Path, console: IO[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtest/locustfile.py",
            "--headless",
            "--users",
            str(LOCUST_USERS),
            "--spawn-rate",
            "10",
            "--run-time",
            f"{DURATION:.0f}s",
            "--host",
            f"tcp://{server.host}:{server.port}",
            "--disconnect-rate",
            "0.05",
            "--reply-timeout",
            "60",  # a busy CI machine may be slow; a wrong or lost reply still fails at once
            "--csv",
            str(csv_prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
    )


def _locust_counts(csv_prefix: Path) -> dict[str, tuple[int, int]]:
    """``{request name: (requests, failures)}`` from Locust's CSV statistics."""
    with open(f"{csv_prefix}_stats.csv", newline="") as stats:
        return {row["Name"]: (int(row["Request Count"]), int(row["Failure Count"])) for row in csv.DictReader(stats)}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_soak_mixed_load_with_churn_keeps_memory_threads_and_descriptors_flat(start_server, tmp_path):
    srv = start_server("-q", "--max-line", str(MAX_LINE), "--idle-timeout", str(IDLE), "--drain-timeout", "5")
    with Connection(*srv.address) as warm:
        assert warm.request("calentar") == "CALENTAR"
    fds_idle = open_fds(srv)
    start = _sample(srv)
    csv_prefix = tmp_path / "soak"
    load = Load(srv.address)
    samples = [start]
    # Locust writes to a file, so a chatty run can never block on a full pipe
    with open(tmp_path / "locust.log", "w") as console:
        locust = _locust(srv, csv_prefix, console)
        users = [("pipeliner", _pipeliner), ("abuser", _abuser), ("slowloris", _slowloris), ("hog", _hog)]
        for seed, (name, make) in enumerate(users):
            load.start(f"{name}-{seed}", make(srv.address), seed)
        began = time.monotonic()
        try:
            while locust.poll() is None and not load.failures and time.monotonic() - began < DURATION + 40:
                load.stop.wait(SAMPLE_EVERY)
                samples.append(_sample(srv))
        finally:
            load.join()
            if locust.poll() is None:
                locust.terminate()
            locust.wait(timeout=30)
    assert not load.failures, load.failures
    output = (tmp_path / "locust.log").read_text(errors="replace")
    assert locust.returncode == 0, f"Locust reported failures or did not finish:\n{output[-3000:]}"
    locust_counts = _locust_counts(csv_prefix)
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
        locust=locust_counts,
        other_sessions=counts,
        rss_MiB=f"start {start[1] / MiB:.1f}, steady early {early / MiB:.1f}, late {late / MiB:.1f}, "
        f"peak {peak / MiB:.1f}, end {end[1] / MiB:.1f}",
        threads=sorted(thread_counts),
        descriptors=f"idle {fds_idle}, peak {max(s[3] for s in samples)}, end {end[3]}",
    )
    requests, failures = locust_counts["Aggregated"]
    assert failures == 0 and requests > 0, locust_counts
    assert locust_counts["DESCONEXION"][0] > 0 and locust_counts["connect"][0] > LOCUST_USERS, "no churn"
    assert set(counts) == load.names(), f"a kind of user never finished a session: {counts}"
    assert thread_counts == {start[2]}, f"thread count changed under load: {sorted(thread_counts)}"
    assert late - early < 8 * MiB, f"memory kept growing: {early / MiB:.1f} -> {late / MiB:.1f} MiB"
    assert peak - start[1] < 64 * MiB, f"peak memory {peak / MiB:.1f} MiB from {start[1] / MiB:.1f} MiB"
    assert srv.stop() == 0
