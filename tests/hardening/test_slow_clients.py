"""Slow, stuck and vanishing clients (L9, L12, L13): nothing lost, nothing leaked, nobody disturbed.

Each scenario runs while an honest client keeps making requests in the
background (``honest_traffic``); once the abuse is in place, the test waits
(with a generous deadline) for honest sessions begun after that point to
complete, and never counts what the background thread managed meanwhile.
Each ends by showing that the server kept no
state for the abusers: a small ``--max-connections`` must admit a full set of
new sessions afterwards, and its descriptors return to their count before.
"""

from __future__ import annotations

import socket

import pytest

from tests.hardening.harness import (
    MiB,
    ensure_fd_limit,
    hold_sessions,
    honest_round_trips,
    honest_traffic,
    open_fds,
    peak_rss,
    push_until_stalled,
    report,
    reset,
    send_rest_and_read,
    wait_until,
)
from tests.wire import connect, read_exactly, read_until_closed

pytestmark = pytest.mark.timeout(120)


def _settled_fds(server, baseline: int) -> None:
    """Every abusive connection is gone from the server (condition with a deadline)."""
    wait_until(lambda: open_fds(server) <= baseline, 30, f"server back to {baseline} descriptors")


def test_forty_mib_writer_that_never_reads_is_paused_and_loses_nothing(start_server):
    srv = start_server("-q")
    line = b"a" * 1023 + b"\n"
    total = 40 * MiB
    payload = line * (total // len(line))
    with honest_traffic(srv.address) as honest:
        rss_before = srv.rss()
        with connect(srv.address, timeout=60) as hog:
            pushed = push_until_stalled(hog, payload)
            assert pushed < total, "the server read 40 MiB from a client that never reads (L12)"
            growth = peak_rss(srv) - rss_before
            report("40 MiB writer", taken_MiB=f"{pushed / MiB:.1f}", peak_growth_MiB=f"{growth / MiB:.2f}")
            assert growth < 16 * MiB, f"server peak memory grew by {growth / MiB:.1f} MiB for a stuck client"
            # the honest client is served while the hog is stuck
            honest.served(2)
            # now the hog reads: every line it sent is answered, in order, nothing lost
            received = send_rest_and_read(hog, payload, pushed)
    assert len(received) == len(payload)
    assert received == payload.upper()


def test_a_stuck_reader_is_let_go_after_the_idle_and_drain_times(start_server):
    """A client that never reads stops being read, so it goes idle; then it has the drain time to read."""
    srv = start_server("-q", "--idle-timeout", "1", "--drain-timeout", "1")
    fds_before = open_fds(srv)
    with connect(srv.address, timeout=30) as hog:
        line = b"a" * 1023 + b"\n"
        try:
            push_until_stalled(hog, line * (8 * MiB // len(line)), stall=0.5)
        except (ConnectionResetError, BrokenPipeError):
            pass  # aborted after the drain time (L13): what a client that does not read must expect
        # the hog still holds its end, never reading: the server frees everything it held for it
        _settled_fds(srv, fds_before)
        honest_round_trips(srv.address)


def test_slowloris_partial_lines_time_out_and_free_their_slots(start_server):
    held = 40
    srv = start_server("-q", "--idle-timeout", "1", "--max-connections", str(held + 2))
    fds_before = open_fds(srv)
    with honest_traffic(srv.address) as honest:
        loris = [connect(srv.address, timeout=30) for _ in range(held)]
        try:
            for i, sock in enumerate(loris):
                sock.sendall(f"GET /{i} HTTP/1.1\r\nHost: example".encode())  # never finished
            honest.served(2)
            for i, sock in enumerate(loris):
                # the complete lines are answered, the partial one is dropped with the notice
                data = read_until_closed(sock, timeout=30)
                assert data == f"GET /{i} HTTP/1.1\r\n".upper().encode() + b"error: idle timeout\r\n", data
        finally:
            for sock in loris:
                sock.close()
    _settled_fds(srv, fds_before)
    # the slots are free again: a full set of new sessions is admitted
    for sock in hold_sessions(srv.address, held + 2):
        sock.close()


def test_a_thousand_connections_that_connect_and_vanish(start_server):
    # The clients can outrun the server (the kernel completes a connection
    # before the server accepts it), so the limit leaves room for all of them
    # at once; admitting that many afterwards shows none was kept.
    slots = 1100
    ensure_fd_limit(slots + 200)
    srv = start_server("-q", "--max-connections", str(slots))
    fds_before = open_fds(srv)  # before any connection, so nothing is still closing
    hold_sessions(srv.address, 1)[0].close()
    threads_before = srv.threads()
    rss_before = srv.rss()
    with honest_traffic(srv.address) as honest:
        for i in range(1000):
            if i % 250 == 0:
                honest.served(1)  # served among the vanishing clients, not only after them
            sock = socket.create_connection(srv.address, timeout=30)
            kind = i % 4
            if kind == 1:
                sock.sendall(b"a medias")  # a partial line, then gone
            elif kind == 2:
                sock.sendall(b"hola\n" * 100)  # replies it will never read
            if kind == 3:
                reset(sock)
            else:
                sock.close()
        honest.served(2)
    _settled_fds(srv, fds_before)
    assert srv.threads() == threads_before
    growth = srv.rss() - rss_before
    report("1,000 vanishing clients", rss_growth_MiB=f"{growth / MiB:.2f}")
    assert growth < 8 * MiB, f"server memory grew by {growth / MiB:.1f} MiB after 1,000 vanished clients"
    # no session was leaked: every slot admits a new session
    for sock in hold_sessions(srv.address, slots):
        sock.close()


def test_resets_mid_line_and_mid_reply(start_server):
    resets = 60
    slots = resets + 10  # room for every reset session not yet reaped, plus the honest client
    srv = start_server("-q", "--max-connections", str(slots))
    fds_before = open_fds(srv)  # before any connection, so nothing is still closing
    hold_sessions(srv.address, 1)[0].close()
    batch = "".join(f"línea {i} de una ráfaga larga\n" for i in range(20000)).encode()
    with honest_traffic(srv.address) as honest:
        for i in range(resets):
            if i % 20 == 0:
                honest.served(1)
            with_reply = i % 2 == 1
            sock = connect(srv.address, timeout=30)
            if with_reply:
                # ~600 KiB of replies in flight; read the start of them, then reset
                sock.sendall(batch)
                first = read_exactly(sock, 64)
                assert first == batch[:64].decode().upper().encode()[:64]
            else:
                sock.sendall(b"linea completa\nlinea a medi")
                assert read_exactly(sock, 15) == b"LINEA COMPLETA\n"
            reset(sock)
        honest.served(2)
    _settled_fds(srv, fds_before)
    assert not [line for line in srv.stderr if "Traceback" in line or "failed" in line], srv.stderr
    for sock in hold_sessions(srv.address, slots):
        sock.close()


def _churn(address: tuple[str, int], sessions: int) -> None:
    for i in range(sessions):
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(b"hola\n")
            assert sock.recv(16) == b"HOLA\n", f"session {i}"


def test_session_churn_with_the_default_idle_timeout_does_not_grow_memory(start_server):
    """One client opening and closing short sessions in a loop; every closed session must be forgotten."""
    srv = start_server("-q")  # the default idle timeout, 300 s, outlives the whole test
    _churn(srv.address, 2000)
    rss_before = srv.rss()
    sessions = 20000
    _churn(srv.address, sessions)
    growth = srv.rss() - rss_before
    report("session churn", sessions=sessions, rss_growth_MiB=f"{growth / MiB:.2f}")
    assert growth < 5 * MiB, f"server memory grew by {growth / MiB:.1f} MiB over {sessions} closed sessions"
