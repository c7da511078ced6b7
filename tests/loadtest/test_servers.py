"""Starting and watching a bench server: reading its output must not disturb its writing."""

from __future__ import annotations

import os
import sys

import pytest

from loadtest.servers import RunningServer, ServerSpec

pytestmark = pytest.mark.timeout(60)

# A "server" that prints its address, then more than one read's worth of log, then exits.
_CHATTY = (
    "import sys; sys.stdout.write('listening on 127.0.0.1:5000\\n' + 'x' * 20000 + '\\n'); "
    "sys.stderr.write('e' * 20000)"
)


def _chatty() -> RunningServer:
    server = RunningServer(ServerSpec("chatty", "chatty", "-", command=lambda: [sys.executable, "-c", _CHATTY]))
    server.proc.wait(30)
    return server


def test_reading_the_address_and_the_errors_leaves_the_server_writing_where_it_was():
    """The output files share their offset with the server: a read that moved it would let the
    server's next write land over what it wrote before (a first line read back empty, once)."""
    with _chatty() as server:
        out, err = server._out.fileno(), server._err.fileno()
        ends = os.fstat(out).st_size, os.fstat(err).st_size
        assert server.address == ("127.0.0.1", 5000)
        assert server.stderr() == "e" * 20000
        assert (os.lseek(out, 0, os.SEEK_CUR), os.lseek(err, 0, os.SEEK_CUR)) == ends
