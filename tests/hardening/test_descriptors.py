"""Descriptors under a flood of refusals and at the descriptor limit (L10, L13, S5; docs/reliability.md).

A refused connection lingers briefly so that its client reads the refusal
line rather than a reset, but a flood of them cannot hold more than a fixed
number of descriptors; nor can a flood of sessions that say DESCONEXION and
never close, though each closed session lingers for the drain time; and alternating failures and recoveries at the
descriptor limit cannot flood the console with warnings.
"""

from __future__ import annotations

import re
import resource
import socket
import time

import pytest

from server.worker import CLOSED_LINGERING, REFUSED_LINGERING
from tests.hardening.harness import ensure_fd_limit, hold_sessions, honest_round_trips, open_fds, report, wait_until
from tests.wire import read_exactly, read_until_closed

pytestmark = pytest.mark.timeout(180)

BUSY = b"error: server busy\n"


def test_a_flood_of_refused_connections_holds_a_bounded_number_of_descriptors(start_server):
    refused = 1000
    ensure_fd_limit(refused + 300)
    limit = 5
    # a long drain time: were refusals to linger for it, every one would still hold its descriptor
    srv = start_server("-q", "--max-connections", str(limit), "--drain-timeout", "600")
    fds_idle = open_fds(srv)
    held = hold_sessions(srv.address, limit)
    clients: list[socket.socket] = []
    try:
        for _ in range(refused):
            clients.append(socket.create_connection(srv.address, timeout=60))
        # every client gets the line and the end of the stream, and keeps its end open
        for i, sock in enumerate(clients):
            assert read_until_closed(sock, timeout=60) == BUSY, f"refused connection {i}"
        # all were accepted and answered, and still open on the client side: the server
        # holds the sessions, at most the lingering cap of refusals, and nothing more (once the
        # last refusal past the cap is closed: its client sees the end of the stream just before)
        bound = limit + REFUSED_LINGERING
        wait_until(lambda: open_fds(srv) - fds_idle <= bound, 30, f"at most {bound} descriptors held")
        held_fds = open_fds(srv) - fds_idle
        report("refusal flood", refused=refused, descriptors_held=held_fds, cap=REFUSED_LINGERING)
        assert held_fds <= bound, f"{held_fds} descriptors held for {refused} refusals"
        for i, sock in enumerate(held):  # the sessions were not disturbed
            sock.sendall(f"sigo {i}\n".encode())
            assert read_exactly(sock, len(f"SIGO {i}\n")) == f"SIGO {i}\n".encode()
    finally:
        for sock in clients + held:
            sock.close()
    wait_until(lambda: open_fds(srv) <= fds_idle, 60, "every connection closed")


def test_closed_sessions_that_never_close_hold_a_bounded_number_of_descriptors(start_server):
    """L13 lingers after the last reply; a loop of clients that say DESCONEXION and keep their
    end open frees every --max-connections slot at once, so only the lingering cap bounds them."""
    extra = 200
    ensure_fd_limit(CLOSED_LINGERING + extra + 300)
    # one worker (one cap), and a drain time long enough that every one would still linger
    srv = start_server("-q", "--workers", "1", "--max-connections", "50", "--drain-timeout", "600")
    fds_idle = open_fds(srv)
    clients: list[socket.socket] = []
    try:
        for i in range(CLOSED_LINGERING + extra):
            sock = socket.create_connection(srv.address, timeout=60)
            clients.append(sock)
            sock.sendall(f"adiós {i}\nDESCONEXION\n".encode())
            # the replies, then the server's end of the stream: the session is CLOSED, its slot
            # free (more sessions than --max-connections were served), and it lingers
            assert read_until_closed(sock, timeout=60) == f"ADIÓS {i}\nDESCONEXION\n".encode(), i
        wait_until(lambda: open_fds(srv) - fds_idle <= CLOSED_LINGERING, 60, "the lingering cap")
        held = open_fds(srv) - fds_idle
        report("closed flood", closed=len(clients), descriptors_held=held, cap=CLOSED_LINGERING)
        # exactly the cap: the newest linger (they have had the least time to read), the
        # oldest were closed to make room
        assert held == CLOSED_LINGERING
        honest_round_trips(srv.address)
    finally:
        for sock in clients:
            sock.close()
    wait_until(lambda: open_fds(srv) <= fds_idle, 60, "every connection closed")


def test_failures_at_the_descriptor_limit_do_not_flood_the_console(start_server):
    limit = 64
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < limit:
        pytest.skip(f"the hard open-file limit ({hard}) is below {limit}")

    def low_limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))  # the server lifts soft to hard (S5)

    srv = start_server("-q", "--max-connections", "1000", preexec_fn=low_limits)
    base = open_fds(srv)
    honest_round_trips(srv.address, 1)  # the workers start after the address is printed
    wait_until(lambda: open_fds(srv) <= base, 30, "the first session is closed")
    capacity = limit - base
    started = time.monotonic()
    socks: list[socket.socket] = []
    cycles = 40
    try:
        # more clients than descriptors: the server fills up, the rest wait in the listen queue
        for _ in range(capacity + cycles + 1):
            sock = socket.create_connection(srv.address, timeout=60)
            sock.sendall(b"hola\n")
            socks.append(sock)
        wait_until(lambda: open_fds(srv) == limit, 60, f"the server holds {limit} descriptors")
        # each close lets exactly one waiting client in, and the next accept fails again
        for k in range(cycles):
            socks[k].close()
            newcomer = socks[capacity + k]
            assert read_exactly(newcomer, 5, timeout=60) == b"HOLA\n", f"waiting client {k} was not served"
    finally:
        for sock in socks:
            sock.close()
    assert srv.stop() == 0
    elapsed = time.monotonic() - started
    lines = [line for line in srv.stderr if "cannot accept connections" in line]
    counted = sum(int(m[1]) for line in lines if (m := re.search(r"(\d+) more times", line)))
    report("descriptor limit churn", cycles=cycles, warnings=len(lines), not_logged=counted, seconds=f"{elapsed:.1f}")
    # a burst of three, then one a minute (however long the test took), plus the summary at exit;
    # every failure after a recovery is either a line of its own or counted in one
    assert len(lines) <= 3 + int(elapsed / 60) + 1 + 1, lines[:5]
    assert len(lines) - (1 if counted else 0) + counted >= cycles, (lines, counted)
