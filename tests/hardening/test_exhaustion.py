"""Resource exhaustion (L10, S5): the flood guard keeps no state, and running out of descriptors is survived."""

from __future__ import annotations

import re
import resource
import selectors
import socket
import time

import pytest

from tests.hardening.harness import (
    MiB,
    cpu_seconds,
    hold_sessions,
    honest_round_trips,
    open_fds,
    report,
    wait_until,
)
from tests.wire import connect, read_exactly, read_until_closed

pytestmark = pytest.mark.timeout(120)

BUSY = b"error: server busy\n"


def test_connections_over_the_limit_get_the_busy_line_and_leave_nothing_behind(start_server):
    limit = 20
    srv = start_server("-q", "--max-connections", str(limit))
    fds_idle = open_fds(srv)
    held = hold_sessions(srv.address, limit)
    try:
        fds_full = open_fds(srv)
        rss_full = srv.rss()
        threads = srv.threads()
        for i in range(500):
            with connect(srv.address, timeout=30) as sock:
                if i % 2:
                    sock.sendall(b"me cuelo\n")  # input from a refused client is discarded
                assert read_until_closed(sock) == BUSY, f"refused connection {i}"
        wait_until(lambda: open_fds(srv) <= fds_full, 30, "the refused connections are all closed")
        assert srv.threads() == threads
        growth = srv.rss() - rss_full
        report("busy refusals", refused=500, rss_growth_MiB=f"{growth / MiB:.2f}")
        assert growth < 4 * MiB, f"server memory grew by {growth / MiB:.1f} MiB refusing 500 connections"
        # the held sessions were not disturbed
        for i, sock in enumerate(held):
            sock.sendall(f"sigo {i}\n".encode())
            assert read_exactly(sock, len(f"SIGO {i}\n")) == f"SIGO {i}\n".encode()
    finally:
        for sock in held:
            sock.close()
    # refusals took no slot: a full set of sessions is admitted again
    wait_until(lambda: open_fds(srv) <= fds_idle, 30, "every held session is closed")
    for sock in hold_sessions(srv.address, limit):
        sock.close()


def test_a_flood_of_refusals_cannot_flood_the_console_and_every_one_is_counted(start_server):
    refused = 200
    srv = start_server("-q", "--lang", "en", "--max-connections", "1")
    (held,) = hold_sessions(srv.address, 1)
    try:
        for i in range(refused):
            with connect(srv.address, timeout=30) as sock:
                assert read_until_closed(sock) == BUSY, f"refused connection {i}"
    finally:
        held.close()
    assert srv.stop() == 0
    one = [line for line in srv.stderr if "Server busy: connection refused from" in line]
    summaries = [re.search(r"Server busy: (\d+) more connections refused and not logged", line) for line in srv.stderr]
    unlogged = sum(int(m.group(1)) for m in summaries if m)
    # a burst of 10 lines, then at most one a second: 200 refusals within the test's
    # timeout cannot all be logged one by one, and the summaries account for the rest
    assert unlogged > 0 and len(one) < refused, srv.stderr[-5:]
    assert len(one) + unlogged == refused, srv.stderr[-5:]


def test_running_out_of_descriptors_pauses_accepting_without_spinning_and_recovers(start_server):
    limit = 64
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < limit:
        pytest.skip(f"the hard open-file limit ({hard}) is below {limit}")

    def low_limits() -> None:
        # the server lifts its soft limit to the hard one (S5): lower both
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    srv = start_server("-q", "--max-connections", "1000", preexec_fn=low_limits)
    base = open_fds(srv)
    honest_round_trips(srv.address, 1)  # the workers start after the address is printed
    threads = srv.threads()
    wait_until(lambda: open_fds(srv) <= base, 30, "the first session is closed")
    capacity = limit - base
    extra = 8
    socks: list[socket.socket] = []
    try:
        for i in range(capacity + extra):
            sock = socket.create_connection(srv.address, timeout=30)  # the kernel completes it
            sock.sendall(f"cliente {i}\n".encode())
            socks.append(sock)
        srv.wait_for_text("cannot accept connections: too many open files", stream="stderr")
        wait_until(lambda: open_fds(srv) == limit, 30, f"the server holds {limit} descriptors")
        # the server accepts in order: the first `capacity` clients are served
        for i, sock in enumerate(socks[:capacity]):
            assert read_exactly(sock, len(f"CLIENTE {i}\n")) == f"CLIENTE {i}\n".encode()
        pending = socks[capacity:]
        warnings = _accept_warnings(srv)

        # exhausted: no reply can come, and the server must not spin while it waits
        window = 3.0
        cpu_before = cpu_seconds(srv)
        started = time.monotonic()
        with selectors.DefaultSelector() as sel:
            for sock in pending:
                sel.register(sock, selectors.EVENT_READ)
            assert sel.select(window) == [], "a client got an answer the server had no descriptor for"
        elapsed = time.monotonic() - started
        used = cpu_seconds(srv) - cpu_before
        report("EMFILE", fd_limit=limit, served=capacity, waiting=extra, cpu_s=f"{used:.2f} in {elapsed:.1f} s")
        assert used < 0.3 * elapsed, f"the server used {used:.2f} s of CPU in {elapsed:.2f} s while out of descriptors"
        assert _accept_warnings(srv) == warnings == 1, "the exhaustion warning must be logged once, not per retry"
        assert srv.proc.poll() is None

        # descriptors free up: the waiting clients are accepted and answered
        for sock in socks[: extra + 2]:
            sock.close()
        for i, sock in enumerate(pending, start=capacity):
            assert read_exactly(sock, len(f"CLIENTE {i}\n")) == f"CLIENTE {i}\n".encode()
        honest_round_trips(srv.address)
        assert srv.threads() == threads
    finally:
        for sock in socks:
            sock.close()
    assert srv.stop() == 0


def _accept_warnings(srv) -> int:
    return sum("cannot accept connections" in line for line in srv.stderr)
