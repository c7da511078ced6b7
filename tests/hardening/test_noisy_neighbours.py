"""L16 live: ten clients pipelining the costliest lines they can do not stop an honest client being served.

The abusers are the bench's (W6, :mod:`loadtest.noisy`), in driver processes of
their own: each pipelines every costly content of :mod:`loadtest.readcost` and
reads its replies slowly.  The honest client must get every reply right, each
within a generous deadline; how fast is the bench's to say (W6), never this test's.
"""

from __future__ import annotations

import multiprocessing

import pytest

from client.connection import Connection
from loadtest import driver, noisy
from tests.serverproc import ServerProcess

ABUSERS = 10
REQUESTS = 40
PER_REPLY = 60.0  # seconds: generous, only reached when the honest client is starved


@pytest.mark.timeout(300)
def test_an_honest_client_is_served_beside_ten_abusers():
    server = ServerProcess("-q")
    stop = multiprocessing.get_context("forkserver").Event()
    jobs = [(server.address, n, stop) for n in driver.split(ABUSERS, noisy.ABUSER_PROCESSES)]
    try:
        with driver.Crew(noisy.abuser_client, jobs) as crew:
            crew.wait_ready()
            crew.go(float("inf"))  # they stop when told
            try:
                with Connection(server.host, server.port, timeout=PER_REPLY) as honest:
                    for i in range(REQUESTS):
                        assert honest.request(f"hola {i} ñandú") == f"HOLA {i} ÑANDÚ"
            finally:
                stop.set()
            results = crew.results(timeout=driver.SETUP_TIMEOUT)
        assert sum(result["sent"] for result in results) > 0  # the abuse did happen
        assert sum(result["received"] for result in results) > 0  # and was answered, not refused
        assert server.proc.poll() is None
    finally:
        server.kill()
