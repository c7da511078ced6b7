"""L16: one client cannot make others wait.

Ten clients pipeline the costliest lines known (a near miss of the disconnect
word, invalid UTF-8) as fast as they can, from a process of their own so that
this test's threads do not share their interpreter; meanwhile an honest client
must be served.  Nothing here is timed: the honest client must only complete
its round trips, each checked, while every abuser is still connected and
sending (BENCH W6 measures how long they take).
"""

from __future__ import annotations

import selectors
import subprocess
import sys

import pytest

from client.connection import Connection
from tests.serverproc import ROOT

pytestmark = pytest.mark.timeout(300)

ABUSERS = 10
ROUND_TRIPS = 20

# Each abuser sends and reads at once (so that L12 does not pause it), never stops,
# and the process says "ready" once every abuser has had replies.
_ABUSE = r"""
import selectors, socket, sys

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = b"\xc3\xb1x\n" * 8192 + b"\xff\n" * 8192
sel = selectors.DefaultSelector()
for _ in range(count):
    sock = socket.create_connection((host, port))
    sock.setblocking(False)
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
answered = set()
while True:
    for key, events in sel.select():
        sock = key.fileobj
        if events & selectors.EVENT_WRITE:
            try:
                sock.send(payload)
            except BlockingIOError:
                pass
        if events & selectors.EVENT_READ:
            if not sock.recv(1 << 20):
                sys.exit("the server closed an abuser's connection")
            if key.fd not in answered:
                answered.add(key.fd)
                if len(answered) == count:
                    print("ready", flush=True)
"""


def _wait_ready(abusers: subprocess.Popen, timeout: float) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(abusers.stdout, selectors.EVENT_READ)
        assert sel.select(timeout), f"the abusers were not all answered within {timeout} s"
    line = abusers.stdout.readline()
    assert line == "ready\n", f"abusers: {line!r} {abusers.stderr.read() if abusers.poll() is not None else ''}"


def test_an_honest_client_is_served_beside_ten_clients_pipelining_the_costliest_lines(start_server):
    srv = start_server("-q")
    abusers = subprocess.Popen(
        [sys.executable, "-c", _ABUSE, srv.host, str(srv.port), str(ABUSERS)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(abusers, timeout=120)
        with Connection(*srv.address, timeout=120) as honest:
            for i in range(ROUND_TRIPS):
                text = f"honesto {i} ñandú"
                assert honest.request(text) == text.upper()
            assert honest.disconnect() == "DESCONEXION"
        assert abusers.poll() is None, f"the abuse stopped before the honest client was done: {abusers.stderr.read()}"
    finally:
        abusers.kill()
        abusers.wait(30)
