"""The load driver: each workload's clients run in child processes, every reply is checked.

The driver speaks the protocol with bare sockets and compares reply bytes with
the expected bytes, rather than through the client library, because it must
cost less per reply than the servers it measures (the Locust user is the
library's load face).  The clients of one workload are spread over several
processes; each reports its own CPU time so the report can say how much of
the machine the driver itself used.

A run has three steps, so that setting up (connecting, warming up) is never
timed: the children set up and say "ready"; the parent notes the server's CPU
time and says "go"; the children run to a deadline and report.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import resource
import select
import signal
import socket
import ssl
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

from loadtest.servers import RunningServer

MESSAGE = b"upperecho bench: hola, mundo 42\n"  # the 32-byte line of BENCH.md
REPLY = MESSAGE.upper()
DISCONNECT = b"DESCONEXION\n"
SOCKET_TIMEOUT = 30.0
SETUP_TIMEOUT = 120.0
_READ = 65536

Address = tuple[str, int]
Ready = Callable[[], Any]


class DriverError(RuntimeError):
    """A workload could not be run or a reply was wrong: the figure would be meaningless."""


def raise_fd_limit() -> int:
    """Lift this process's open-file soft limit to the hard one (children and servers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


# -- what the children do ------------------------------------------------------


def _connect(address: Address, cafile: str | None = None) -> socket.socket:
    """A connected socket; with ``cafile``, a TLS socket whose server certificate that file vouches for (W8)."""
    sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(SOCKET_TIMEOUT)
    sock.connect(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if cafile is not None:
        sock = ssl.create_default_context(cafile=cafile).wrap_socket(sock, server_hostname=address[0])
    return sock


def _expect(sock: socket.socket, expected: bytes) -> None:
    """Read exactly ``expected`` or fail with what came instead."""
    got = b""
    while len(got) < len(expected):
        data = sock.recv(len(expected) - len(got))
        if not data:
            raise DriverError(f"connection closed after {got!r}, expected {expected!r}")
        got += data
    if got != expected:
        raise DriverError(f"wrong reply {got!r}, expected {expected!r}")


def _expect_close(sock: socket.socket) -> None:
    data = sock.recv(_READ)
    if data:
        raise DriverError(f"expected the server to close, got {data!r}")


def _round_trip(sock: socket.socket) -> None:
    sock.sendall(MESSAGE)
    _expect(sock, REPLY)


def _deadline_ns(end: float) -> int:
    """``end`` (a ``time.monotonic`` instant) on the ``perf_counter_ns`` clock."""
    return time.perf_counter_ns() + int((end - time.monotonic()) * 1e9)


def _ping_pong(sock: socket.socket, end: float) -> tuple[int, array]:
    """One connection, one message in flight (W1)."""
    latencies = array("q")
    send, recv, clock = sock.sendall, sock.recv, time.perf_counter_ns
    size = len(REPLY)
    end_ns = _deadline_ns(end)
    while True:  # at least one round trip, however late this process got the CPU
        started = clock()
        send(MESSAGE)
        got = recv(size)
        while len(got) < size:
            more = recv(size - len(got))
            if not more:
                raise DriverError(f"connection closed after {got!r}")
            got += more
        if got != REPLY:
            raise DriverError(f"wrong reply {got!r}, expected {REPLY!r}")
        now = clock()
        latencies.append(now - started)
        if now >= end_ns:
            return len(latencies), latencies


def _epoll_loop(socks: Sequence[socket.socket], end: float) -> tuple[int, array]:
    """Many connections, one message in flight on each (W2), multiplexed with epoll."""
    latencies = array("q")
    clock = time.perf_counter_ns
    end_ns = _deadline_ns(end)
    poller = select.epoll()
    by_fd = {}
    sent_at = {}
    partial: dict[int, bytes] = {}
    for sock in socks:
        sock.setblocking(False)
        fd = sock.fileno()
        by_fd[fd] = (sock.recv, sock.send)
        poller.register(fd, select.EPOLLIN)
    for fd, (_, send) in by_fd.items():
        sent_at[fd] = clock()
        send(MESSAGE)
    active = len(by_fd)
    size = len(REPLY)
    try:
        while active:
            events = poller.poll(SOCKET_TIMEOUT)
            if not events:
                raise DriverError(f"no reply within {SOCKET_TIMEOUT} s")
            for fd, _ in events:
                recv, send = by_fd[fd]
                try:
                    got = recv(_READ)
                except ssl.SSLWantReadError:
                    continue  # TLS: part of a record, or a record with no data (a session ticket)
                if fd in partial:
                    got = partial.pop(fd) + got
                if got != REPLY:
                    if not got:
                        raise DriverError("the server closed a connection")
                    if len(got) < size and REPLY.startswith(got):
                        partial[fd] = got
                        continue
                    raise DriverError(f"wrong reply {got!r}, expected {REPLY!r}")
                now = clock()
                latencies.append(now - sent_at[fd])
                if now >= end_ns:
                    poller.unregister(fd)
                    active -= 1
                    continue
                sent_at[fd] = now
                if send(MESSAGE) != len(MESSAGE):
                    raise DriverError("a 32-byte send did not fit in an empty socket buffer")
    finally:
        poller.close()
    return len(latencies), latencies


def closed_loop_client(job: tuple[Address, int], ready: Ready) -> dict[str, Any]:
    """``connections`` clients that each send the line, wait for its reply and repeat (W1, W2; over TLS, W8)."""
    address, connections, *tls = job
    socks = [_connect(address, *tls) for _ in range(connections)]
    try:
        for sock in socks:
            _round_trip(sock)
        end = ready()
        started, cpu = time.monotonic(), time.process_time()
        if connections == 1:
            replies, latencies = _ping_pong(socks[0], end)
        else:
            replies, latencies = _epoll_loop(socks, end)
        return {
            "replies": replies,
            "latencies": latencies.tobytes(),
            "started": started,
            "finished": time.monotonic(),
            "cpu": time.process_time() - cpu,
        }
    finally:
        for sock in socks:
            sock.close()


def _churn_loop(address: Address, end: float, results: list) -> None:
    sessions = 0
    latencies = array("q")
    clock = time.perf_counter_ns
    try:
        while not sessions or time.monotonic() < end:  # at least one session, however late the start
            started = clock()
            sock = _connect(address)
            try:
                _round_trip(sock)
                sock.sendall(DISCONNECT)
                _expect(sock, DISCONNECT)
                _expect_close(sock)
            finally:
                sock.close()
            latencies.append(clock() - started)
            sessions += 1
    except (OSError, DriverError) as exc:
        results.append(exc)
        return
    results.append((sessions, latencies))


def churn_client(job: tuple[Address, int], ready: Ready) -> dict[str, Any]:
    """``loops`` threads that each connect, send a line, DESCONEXION, wait for the close, repeat (W3)."""
    address, loops = job
    end = ready()
    started, cpu = time.monotonic(), time.process_time()
    results: list = []
    threads = [threading.Thread(target=_churn_loop, args=(address, end, results)) for _ in range(loops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished, cpu = time.monotonic(), time.process_time() - cpu
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        raise DriverError(f"{len(failures)} of {loops} churn loops failed: {failures[0]}")
    latencies = array("q")
    for _, part in results:
        latencies.extend(part)
    return {
        "sessions": sum(count for count, _ in results),
        "latencies": latencies.tobytes(),
        "started": started,
        "finished": finished,
        "cpu": cpu,
    }


def hold_client(job: tuple[Address, int], ready: Ready) -> dict[str, Any]:
    """Open ``count`` connections, each answered once, and hold them until released (W4).

    Two hand-shakes: "all open" (the parent measures), then "all checked"
    (the parent may stop the server before these connections close).
    """
    address, count = job
    socks = []
    try:
        for _ in range(count):
            sock = _connect(address)
            socks.append(sock)
            _round_trip(sock)
        ready()
        for sock in socks:  # still open, nothing unexpected said meanwhile
            sock.setblocking(False)
            try:
                data = sock.recv(_READ)
            except BlockingIOError:
                continue
            raise DriverError(f"a held connection got {data!r}" if data else "a held connection was closed")
        ready()
        return {"held": len(socks)}
    finally:
        for sock in socks:
            sock.close()


def pipeline_client(job: tuple[Address, int], ready: Ready) -> dict[str, Any]:
    """One connection sends ``lines`` lines without waiting while it reads the replies (W5).

    Sending and reading run at once (two threads): a client that wrote
    everything before reading would deadlock with a server that stops reading
    a client whose replies pile up (L12), as ours rightly does.
    """
    address, lines = job
    payload = MESSAGE * lines
    expected_size = len(REPLY) * lines
    sock = _connect(address)
    try:
        _round_trip(sock)
        ready()
        started, cpu = time.monotonic(), time.process_time()
        send_error: list[BaseException] = []

        def send() -> None:
            try:
                sock.sendall(payload)
            except OSError as exc:
                send_error.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        received = bytearray()
        while len(received) < expected_size:
            data = sock.recv(_READ)
            if not data:
                break
            received += data
        finished = time.monotonic()
        sender.join()
        if send_error:
            raise DriverError(f"sending failed: {send_error[0]}")
        if len(received) != expected_size or received != REPLY * lines:
            raise DriverError(f"replies differ from the upper-cased lines ({len(received)} of {expected_size} bytes)")
        return {"replies": lines, "started": started, "finished": finished, "cpu": time.process_time() - cpu}
    finally:
        sock.close()


# -- running children ----------------------------------------------------------


def _child(target: Callable[[Any, Ready], dict], job: Any, pipe: Pipe) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cleans up

    def ready() -> Any:
        pipe.send(("ready", None))
        return pipe.recv()

    try:
        result = target(job, ready)
    except (OSError, DriverError, EOFError) as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    else:
        pipe.send(("done", result))
    finally:
        pipe.close()


class Crew:
    """Driver processes running one target: set up, wait for "go", run, report.  A context manager."""

    def __init__(self, target: Callable[[Any, Ready], dict], jobs: Sequence[Any]) -> None:
        # Not "fork": the parent may have threads (a test runner's, a server's output readers).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        self.pipes: list[Pipe] = []
        self.procs = []
        for job in jobs:
            parent, child = context.Pipe()
            proc = context.Process(target=_child, args=(target, job, child), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def _receive(self, pipe: Pipe, deadline: float, expected: str) -> Any:
        if not pipe.poll(max(0.0, deadline - time.monotonic())):
            raise DriverError(f"a driver process did not report {expected} in time")
        try:
            kind, value = pipe.recv()
        except EOFError:
            raise DriverError("a driver process died") from None
        if kind == "error":
            raise DriverError(value)
        if kind != expected:
            raise DriverError(f"a driver process said {kind!r}, expected {expected!r}")
        return value

    def wait_ready(self, timeout: float = SETUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for pipe in self.pipes:
            self._receive(pipe, deadline, "ready")

    def go(self, value: Any = None) -> None:
        for pipe in self.pipes:
            pipe.send(value)

    def results(self, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        return [self._receive(pipe, deadline, "done") for pipe in self.pipes]

    def __enter__(self) -> Crew:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal positive counts (fewer parts if total is small)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# -- the workloads, as the parent runs them --------------------------------------


@dataclass
class Sample:
    """One measured run of one workload on one server."""

    value: float  # the headline figure (replies/s, sessions/s, lines/s)
    replies: int
    elapsed: float
    server_cpu: float  # seconds, user + system
    driver_cpu: float
    latencies_us: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def server_cpu_us_per_reply(self) -> float:
        return self.server_cpu / self.replies * 1e6 if self.replies else float("nan")

    @property
    def driver_cpu_us_per_reply(self) -> float:
        return self.driver_cpu / self.replies * 1e6 if self.replies else float("nan")

    @property
    def machine_busy(self) -> float:
        """Share of all the machine's cores that server and driver used: near 1, the machine was the limit."""
        cores = os.cpu_count() or 1
        return (self.server_cpu + self.driver_cpu) / (self.elapsed * cores) if self.elapsed > 0 else float("nan")

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_us, q)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; NaN when there is no value."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def _latencies(results: Sequence[dict]) -> list[float]:
    merged = array("q")
    for result in results:
        merged.frombytes(result["latencies"])
    return [ns / 1000 for ns in merged]


def _timed(server: RunningServer, crew: Crew, duration: float | None) -> tuple[list[dict], float]:
    """Say "go" (with the deadline, if timed) and collect; returns the results and the server's CPU seconds."""
    crew.wait_ready()
    cpu = server.cpu_seconds()
    crew.go(time.monotonic() + duration if duration is not None else None)
    results = crew.results(timeout=(duration or 0) + SETUP_TIMEOUT)
    return results, server.cpu_seconds() - cpu


def _window(results: Sequence[dict]) -> float:
    return max(r["finished"] for r in results) - min(r["started"] for r in results)


def closed_loop(
    server: RunningServer, connections: int, duration: float, procs: int, cafile: str | None = None
) -> Sample:
    """W1 (one connection) and W2 (many): replies per second with one message in flight per connection.

    With ``cafile`` the clients speak TLS and check the server's certificate against it (W8)."""
    address = server.address
    tls = (cafile,) if cafile is not None else ()
    with Crew(closed_loop_client, [(address, n, *tls) for n in split(connections, procs)]) as crew:
        results, server_cpu = _timed(server, crew, duration)
    replies = sum(r["replies"] for r in results)
    elapsed = _window(results)
    return Sample(
        value=replies / elapsed,
        replies=replies,
        elapsed=elapsed,
        server_cpu=server_cpu,
        driver_cpu=sum(r["cpu"] for r in results),
        latencies_us=_latencies(results),
        extra={"connections": connections, "driver_processes": len(results)},
    )


def churn(server: RunningServer, loops: int, duration: float, procs: int) -> Sample:
    """W3: sessions per second; each session is two replies (the line and DESCONEXION)."""
    address = server.address
    with Crew(churn_client, [(address, n) for n in split(loops, procs)]) as crew:
        results, server_cpu = _timed(server, crew, duration)
    sessions = sum(r["sessions"] for r in results)
    elapsed = _window(results)
    return Sample(
        value=sessions / elapsed,
        replies=2 * sessions,
        elapsed=elapsed,
        server_cpu=server_cpu,
        driver_cpu=sum(r["cpu"] for r in results),
        latencies_us=_latencies(results),
        extra={"sessions": sessions, "loops": loops, "driver_processes": len(results)},
    )


def pipelined(server: RunningServer, lines: int) -> Sample:
    """W5: lines per second through one connection that sends without waiting."""
    with Crew(pipeline_client, [(server.address, lines)]) as crew:
        results, server_cpu = _timed(server, crew, None)
    (result,) = results
    elapsed = result["finished"] - result["started"]
    return Sample(
        value=lines / elapsed,
        replies=lines,
        elapsed=elapsed,
        server_cpu=server_cpu,
        driver_cpu=result["cpu"],
        extra={"lines": lines},
    )


def held_load(
    server: RunningServer, held: int, duration: float, procs: int, discard: Callable[[], None] | None = None
) -> Sample:
    """W4: W1 alone, then ``held`` open connections plus W1 on one more; threads, memory and p99 of both.

    ``discard``, if given, is called once everything is measured and before
    the held connections close (to kill a server that will not be used again).
    """
    unloaded = closed_loop(server, 1, duration, 1)
    threads_before, rss_before = server.threads(), server.rss()
    with Crew(hold_client, [(server.address, n) for n in split(held, procs)]) as holders:
        holders.wait_ready()
        threads_held, rss_held = server.threads(), server.rss()
        loaded = closed_loop(server, 1, duration, 1)
        threads_after = server.threads()
        holders.go()
        holders.wait_ready()
        if discard is not None:
            discard()
        holders.go()
        holders.results(timeout=SETUP_TIMEOUT)
    unloaded_p99 = unloaded.percentile(99)
    loaded.extra |= {
        "held": held,
        "threads_before": threads_before,
        "threads_held": max(threads_held, threads_after),
        "rss_before": rss_before,
        "rss_held": rss_held,
        "rss_per_held_kib": (rss_held - rss_before) / held / 1024,
        "unloaded_replies_per_s": unloaded.value,
        "unloaded_p50_us": unloaded.percentile(50),
        "unloaded_p99_us": unloaded_p99,
        "p99_vs_unloaded": loaded.percentile(99) / unloaded_p99,
        "holding_processes": len(split(held, procs)),
    }
    return loaded
