"""L12 for every content: what the server holds for a client that does not read stays under the documented bound.

The bound (docs/reliability.md): held input at most ``max_line + 1`` bytes, and
unsent output at most ``output_limit + 3 * (max_line + 1) + 64`` bytes.  Reading
stops once the unsent output is over ``output_limit``, and each read is sized
so that its replies, however large, cannot carry it further.

The worker is driven in this thread, over a socket pair whose far end never
reads: after every read the test looks at exactly what the worker holds for the
connection (its unsent output and the session's unfinished line).  A measure
from outside (the process's memory, or what the client receives later) would
also count the kernel's socket buffers and the allocator, and could not tell
1.2 MiB from 1.6 MiB.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from server.app import Server
from server.config import DEFAULT_OUTPUT_LIMIT, Config
from server.poller import READ
from statemachine.session import DEFAULT_MAX_LINE

BOUND = DEFAULT_OUTPUT_LIMIT + 3 * (DEFAULT_MAX_LINE + 1) + 64
HELD = DEFAULT_MAX_LINE + 1


def _held(session) -> int:
    framer = session._framer
    return len(framer.pending) if framer is not None else len(session._held)


@pytest.mark.parametrize(
    ("framing", "line"),
    [
        ("line", b"\xff\n"),  # the largest reply per byte: 21 bytes for 2
        ("line", b"\xff\r\n"),
        ("line", "ΐ\n".encode()),  # an upper case three times as long
        ("line", "ΐ".encode() * 32767 + b"\n"),  # long lines, upper-cased x3, finished across reads
        ("raw", b"\xff"),  # one invalid byte per read: 21 bytes for 1
    ],
    ids=["invalid LF", "invalid CRLF", "upper case x3", "long upper case x3", "raw invalid byte"],
)
@pytest.mark.timeout(120)
def test_a_client_that_never_reads_holds_no_more_than_the_bound(framing, line):
    with _one_connection(framing) as (worker, conn, theirs):
        session = conn.session
        payload = line * max(1, 65536 // len(line)) if framing == "line" else line
        reply = len(session.receive(line, 0.0)) if framing == "line" else 21  # what one line costs
        most = reads = 0
        while conn.mask & READ:  # until the worker stops reading this client (L12)
            # The worst timing: creep up to just under the limit, then a full read's worth.
            room = DEFAULT_OUTPUT_LIMIT - len(conn.out)
            chunk = payload if room < 2 * reply or room > reply * len(payload) // len(line) else line
            try:
                theirs.send(chunk * (1 if chunk is payload else max(1, room // reply - 1)))
            except BlockingIOError:
                pass
            worker._on_readable(conn, time.monotonic())
            reads += 1
            held, unsent = _held(session), len(conn.out)
            assert held <= HELD
            assert unsent <= BOUND, f"{unsent} bytes unsent after {reads} reads (bound {BOUND})"
            most = max(most, held + unsent)
            assert reads < 200_000, "the worker never stopped reading"
        assert session.is_open
        assert len(conn.out) > DEFAULT_OUTPUT_LIMIT  # it stopped because of the bound, not by chance
        print(f"[figures] {framing} {line[:8]!r}: most held + unsent {most / 2**20:.3f} MiB after {reads} reads")


@contextmanager
def _one_connection(framing: str = "line") -> Iterator[tuple[Any, Any, socket.socket]]:
    """A worker driven in this thread with one admitted connection; yields the worker, the connection
    and the client's end of the socket pair (non-blocking; it never reads unless the test does)."""
    server = Server(Config(framing=framing, workers=1, idle_timeout=0, line_timeout=0))
    worker = server.workers[0]
    ours, theirs = socket.socketpair()
    try:
        theirs.setblocking(False)
        worker._adopt(ours, ("127.0.0.1", 1), None, time.monotonic())  # admitted: no refusal line
        yield worker, worker.conns[ours.fileno()], theirs
    finally:
        for conn in list(worker.conns.values()):
            worker._abort(conn)
        worker.poller.close()
        theirs.close()
        for sock in (worker._wake_r, worker._wake_w, server._wake_r, server._wake_w):
            sock.close()


@pytest.mark.timeout(60)
def test_reading_pauses_once_the_unsent_output_exceeds_the_bound_and_not_at_it():
    """L12: a client is not read from while its unsent output *exceeds* the bound; at the bound it still is."""
    with _one_connection() as (worker, conn, _):
        limit = DEFAULT_OUTPUT_LIMIT
        for queued, reading in ((limit - 1, True), (limit, True), (limit + 1, False)):
            conn.out[:] = bytes(queued)
            worker._interest(conn)
            assert bool(conn.mask & READ) == reading, queued
