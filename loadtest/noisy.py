"""W6, noisy neighbours (BENCH.md, L16): W1 on one honest connection while abusers hammer the server.

Each abuser connection pipelines the costliest lines a client can send (the
contents of :mod:`loadtest.readcost`: non-ASCII text holding ``x``, invalid
UTF-8, control characters, long lines) as fast as the server takes them, and
reads its replies slowly.  The abusers run in driver processes of their own,
so the driver's GIL does not colour the honest client's figures; the honest
client is the bench's W1, in its own process too.  The figures are the honest
client's p50 and p99 with 0, 1, 4 and 10 abusers, and each as a ratio to the
same run's figure with none.
"""

from __future__ import annotations

import multiprocessing
import socket
import time
from typing import Any

from loadtest import driver, readcost
from loadtest.servers import OURS, RunningServer

LEVELS = (0, 1, 4, 10)
ABUSER_PROCESSES = 2
READ_EVERY = 0.01  # seconds between an abuser's reads: slowly, but it does read
READ_CHUNK = 16384  # bytes per read and connection
WARM_UP = 0.5  # seconds of abuse before the honest client starts
PATIENCE = 5.0  # seconds the honest client waits for one reply before it gives up
IDLE_WINDOW = 0.5  # seconds of server CPU watched before the read cost is timed
IDLE_SHARE = 0.05  # the server is idle once it uses at most this share of a core over a window
IDLE_TIMEOUT = 60.0  # seconds to wait for that before timing anyway (and saying so)
#: Rounds of the read cost per W6 round, each content keeping its best: on a noisy machine five let
#: one round read 11x where the quiet figure was 6-7x; fifteen take about 2 s.
READ_COST_ROUNDS = 15
_SKIPPED = ("ascii a\\n", "ascii x\\n", "ña\\n", "CRLF lines", "empty lines")
#: One cycle of what an abuser sends: every costly content of readcost, one read's worth each.
PAYLOAD = b"".join(data for name, data in readcost.CONTENTS.items() if name not in _SKIPPED)


def abuser_client(job: tuple[driver.Address, int, Any], ready: driver.Ready) -> dict[str, Any]:
    """``connections`` abusers: send ``PAYLOAD`` round and round, read a little every ``READ_EVERY``, until ``stop``."""
    address, connections, stop = job
    socks = [driver._connect(address) for _ in range(connections)]
    payload = memoryview(PAYLOAD)
    offsets = [0] * connections
    sent = received = 0
    try:
        for sock in socks:
            sock.setblocking(False)
        end = ready()
        while time.monotonic() < end and not stop.is_set():
            tick = time.monotonic() + READ_EVERY
            for i, sock in enumerate(socks):
                try:
                    count = sock.send(payload[offsets[i] :])
                except BlockingIOError:
                    count = 0
                offsets[i] = (offsets[i] + count) % len(PAYLOAD)
                sent += count
                try:
                    received += len(sock.recv(READ_CHUNK))
                except BlockingIOError:
                    pass
            time.sleep(max(0.0, tick - time.monotonic()))
        return {"sent": sent, "received": received}
    finally:
        for sock in socks:  # a reset: the server drops what it holds for them at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()


def honest_client(job: tuple[driver.Address, float], ready: driver.Ready) -> dict[str, Any]:
    """W1 on one connection, giving up on a reply after ``patience`` seconds (a server may answer nothing)."""
    address, patience = job
    with driver._connect(address) as sock:
        sock.settimeout(patience)
        driver._round_trip(sock)
        end = ready()
        started, cpu = time.monotonic(), time.process_time()
        replies, latencies = driver._ping_pong(sock, end)
        return {
            "replies": replies,
            "latencies": latencies.tobytes(),
            "started": started,
            "finished": time.monotonic(),
            "cpu": time.process_time() - cpu,
        }


def _honest(server: RunningServer, duration: float, patience: float) -> driver.Sample:
    with driver.Crew(honest_client, [(server.address, duration + patience)]) as crew:
        results, server_cpu = driver._timed(server, crew, duration)
    (result,) = results
    elapsed = result["finished"] - result["started"]
    return driver.Sample(
        value=result["replies"] / elapsed,
        replies=result["replies"],
        elapsed=elapsed,
        server_cpu=server_cpu,
        driver_cpu=result["cpu"],
        latencies_us=driver._latencies(results),
    )


def _honest_beside(
    server: RunningServer, abusers: int, duration: float, patience: float
) -> tuple[driver.Sample, dict[str, int]]:
    """W1 on one connection while ``abusers`` connections abuse the server."""
    if not abusers:
        return _honest(server, duration, patience), {"sent": 0, "received": 0}
    stop = multiprocessing.get_context("forkserver").Event()
    jobs = [(server.address, n, stop) for n in driver.split(abusers, ABUSER_PROCESSES)]
    with driver.Crew(abuser_client, jobs) as crew:
        crew.wait_ready()
        crew.go(time.monotonic() + driver.SETUP_TIMEOUT)  # a backstop: they stop when told
        try:
            time.sleep(WARM_UP)
            honest = _honest(server, duration, patience)
        finally:
            stop.set()
        results = crew.results(timeout=driver.SETUP_TIMEOUT)
    return honest, {key: sum(r[key] for r in results) for key in ("sent", "received")}


def wait_idle(server: Any, window: float = IDLE_WINDOW, timeout: float = IDLE_TIMEOUT) -> bool:
    """Until the server has (almost) stopped using CPU, e.g. draining the abusers' input; False on timeout.

    The core's read cost is timed on this machine right after the abusers stop: a
    server still answering their last reads would share the cores with the timing.
    """
    deadline = time.monotonic() + timeout
    before = server.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(window)
        after = server.cpu_seconds()
        if after - before <= IDLE_SHARE * window:
            return True
        before = after
    return False


def noisy_neighbours(server: RunningServer, duration: float, patience: float = PATIENCE) -> driver.Sample:
    """One W6 round: the honest client beside each number of abusers in ``LEVELS``.

    ``patience``: seconds the honest client waits for one reply before it gives up.

    The sample's figure and latencies are those with the most abusers; ``extra``
    holds every level's p50 and p99 (us), round trips/s and its ratios to none.
    """
    extra: dict[str, Any] = {}
    samples = {}
    for abusers in LEVELS:
        try:
            sample, traffic = _honest_beside(server, abusers, duration, patience)
        except driver.DriverError as exc:  # the honest client was not served at all: say so, go on
            extra[f"failed_{abusers}"] = str(exc)
            sample = driver.Sample(float("nan"), 0, duration, 0.0, 0.0, [float("inf")])
            traffic = {"sent": 0, "received": 0}
        samples[abusers] = sample
        extra[f"p50_us_{abusers}"] = sample.percentile(50)
        extra[f"p99_us_{abusers}"] = sample.percentile(99)
        extra[f"round_trips_{abusers}"] = sample.value
        extra[f"abuse_sent_{abusers}"] = traffic["sent"]
    for abusers in LEVELS[1:]:
        extra[f"p50_ratio_{abusers}"] = extra[f"p50_us_{abusers}"] / extra["p50_us_0"]
        extra[f"p99_ratio_{abusers}"] = extra[f"p99_us_{abusers}"] / extra["p99_us_0"]
    if server.spec.id == OURS:  # the core's part: the costliest read against plain ASCII, same machine and run
        extra["server_idle_before_read_cost"] = wait_idle(server)
        costs = readcost.read_costs(rounds=READ_COST_ROUNDS)
        name, ratio = readcost.costliest(costs)
        extra |= {"costliest_read": name, "costliest_read_ms": costs[name] * 1e3, "costliest_read_ratio": ratio}
        extra["ascii_read_ms"] = costs[readcost.BASELINE] * 1e3
    most = samples[LEVELS[-1]]
    most.extra |= extra
    most.server_cpu = sum(s.server_cpu for s in samples.values())
    most.replies = sum(s.replies for s in samples.values())
    return most


def table(rows: list[Any], labels: dict[str, str]) -> list[str]:
    """W6's own table: the honest client's p50/p99 per number of abusers, and the ratios to none."""
    lines = [
        "",
        "| W6 server | abusers | honest p50 us | honest p99 us | p50 / none | p99 / none | round trips/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        extra = row.extra
        for abusers in LEVELS:
            ratio = (
                (f"{extra[f'p50_ratio_{abusers}']:.1f}x", f"{extra[f'p99_ratio_{abusers}']:.1f}x")
                if abusers
                else ("1", "1")
            )
            if f"failed_{abusers}" in extra:
                lines.append(
                    f"| {labels.get(row.server, row.server)} | {abusers} | no reply: {extra[f'failed_{abusers}']} "
                    "| | | | |"
                )
                continue
            lines.append(
                f"| {labels.get(row.server, row.server)} | {abusers} | {extra[f'p50_us_{abusers}']:,.0f} "
                f"| {extra[f'p99_us_{abusers}']:,.0f} | {ratio[0]} | {ratio[1]} "
                f"| {extra[f'round_trips_{abusers}']:,.0f} |"
            )
        if "costliest_read" in extra:
            busy = extra.get("server_idle_before_read_cost") is False
            lines.append(
                f"| {labels.get(row.server, row.server)}: costliest 64 KiB read | {extra['costliest_read']} "
                f"| {extra['costliest_read_ms']:.2f} ms | plain ASCII {extra['ascii_read_ms']:.2f} ms "
                f"| {extra['costliest_read_ratio']:.1f}x | {'timed while the server was still busy' * busy} | |"
            )
    return lines
