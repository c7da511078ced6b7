"""How a session ends when its client does not read (L4, L12, L13): a late reader loses nothing, a gone one is reset.

Both scenarios use a client with a tiny receive window (a small ``SO_RCVBUF``
and a small MSS, set before it connects), so that the server's replies cannot
all fit in the kernel's buffers and some stay in the server's own output while
the session is CLOSING.  The client sends every message and the disconnect
word and then reads nothing; the server reads all of it (the replies stay under
the output bound), so the session is CLOSING with replies still unsent.

* Within the drain time the replies are owed: a client that reads late, but
  before the drain time ends, gets every reply and a normal end of stream.
* Past the drain time the session is aborted: the client sees a reset, never a
  normal end of stream that would pass a cut-off reply for a complete one, and
  the worker goes on serving others.
"""

from __future__ import annotations

import socket

import pytest

from server.messages import ENGLISH
from tests.hardening.harness import honest_traffic
from tests.wire import read_until_closed

pytestmark = pytest.mark.timeout(120)

LINE = b"a" * 9999 + b"\n"
# 600 kB: above what a tiny window takes, under the 1 MiB output bound; in long lines, so that the
# console has few lines to write and its disconnect line comes soon even on a busy machine (S6)
PAYLOAD = LINE * 60 + b"DESCONEXION\n"
REPLIES = PAYLOAD.upper()


def _tiny_window_client(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.settimeout(30)
    sock.connect(address)
    return sock


def _read_to_the_end(sock: socket.socket, timeout: float = 60.0) -> tuple[bytes, BaseException | None]:
    """Everything until the connection ends, and the error that ended it (None: a normal end of stream)."""
    data = bytearray()
    sock.settimeout(timeout)
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as exc:
            return bytes(data), exc
        if not chunk:
            return bytes(data), None
        data += chunk


def _closed_line(reason: str):
    """The transcript's line for a session ended for ``reason``, named in words (S4)."""
    return lambda line: (
        line.startswith("Connection closed with client") and line.endswith(f": {ENGLISH.reasons[reason]}")
    )


def test_a_late_reader_within_the_drain_time_gets_every_reply(start_server):
    """L4, L13: every reply before DESCONEXION's reaches a client that reads while the drain time runs.

    The idle timeout (1 s) keeps the session's timer running while it closes;
    a second client, connected after the first has sent everything, waits for
    its own idle notice, so the first session's timers have certainly come due
    (one worker: one loop, deadlines in order) before the first client reads.
    """
    srv = start_server("--lang", "en", "--workers", "1", "--idle-timeout", "1", "--drain-timeout", "60")
    with _tiny_window_client(srv.address) as late:
        late.sendall(PAYLOAD)
        srv.wait_for_text("asks to disconnect", timeout=30)
        with socket.create_connection(srv.address, timeout=30) as watcher:
            assert read_until_closed(watcher, timeout=30) == b"error: idle timeout\n"
        received, error = _read_to_the_end(late)
    assert error is None, f"reset after {len(received)} of {len(REPLIES)} bytes, within the drain time"
    assert received == REPLIES
    assert not any(_closed_line("abort")(line) for line in srv.stdout), "the closing session was aborted"


def test_an_abort_resets_the_client_and_the_worker_keeps_serving(start_server):
    """L13, L12: past the drain time the session is aborted with a reset, promptly, and others are served.

    The client that never reads must see a reset (ECONNRESET), not a normal end
    of stream; the honest client on the same worker completes a session after
    the abort.
    """
    srv = start_server("--lang", "en", "--workers", "1", "--idle-timeout", "0", "--drain-timeout", "1")
    with honest_traffic(srv.address) as honest, _tiny_window_client(srv.address) as gone:
        gone.sendall(PAYLOAD)
        srv.wait_for_line(_closed_line("abort"), timeout=60)
        honest.served(1)  # an honest session begun after the abort completes
        received, error = _read_to_the_end(gone)
    assert isinstance(error, ConnectionResetError), (
        f"{len(received)} bytes then {'a normal end of stream' if error is None else repr(error)}, not a reset"
    )
    assert REPLIES.startswith(received)
    assert len(received) < len(REPLIES)
