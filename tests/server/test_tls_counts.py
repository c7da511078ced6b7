"""Failed TLS handshakes are counted (the plain integer the metrics read) and free their session slot.

The server runs in this process (its workers, without the signal-handling
main loop) so the test can read ``Server.refusals`` and the live-session count.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from server.app import Server
from server.config import Config
from tests.tlskit import RecordClient, make_cert, needs_openssl
from tests.wire import connect, read_until_closed

pytestmark = [needs_openssl, pytest.mark.timeout(60)]


def _wait(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_each_failed_handshake_is_counted_once_and_frees_its_slot(tmp_path):
    cert = make_cert(tmp_path)
    config = Config(
        port=0,
        max_connections=2,
        tls_cert=str(cert.cert),
        tls_key=str(cert.key),
        tls_handshake_timeout=0.3,
        log_level="warning",
    )
    server = Server(config)
    host, port = server.bind()
    for worker in server.workers:
        worker.listen(server._listener, exclusive=False)
        worker.start()
    try:
        with RecordClient((host, port), cert.client_context()) as honest:
            honest.send(b"hola\n")
            assert honest.read(5) == b"HOLA\n"
            for payload in (b"hola\n", b"\x16\x03\x01\x00\x05garbage", b""):  # plain text, bad bytes, silence
                with connect((host, port)) as sock:
                    if payload:
                        sock.sendall(payload)
                    try:
                        read_until_closed(sock, timeout=30)
                    except ConnectionResetError:
                        pass
            assert _wait(lambda: server.refusals["tls"] == 3), server.refusals
            assert server._live == 1, "a failed handshake kept its session slot"
            # with max_connections 2, a new honest client still gets in: the slots were freed
            with RecordClient((host, port), cert.client_context()) as second:
                second.send(b"DESCONEXION\n")
                assert second.read_to_end() == b"DESCONEXION\n"
            honest.send(b"adios\n")
            assert honest.read(6) == b"ADIOS\n"
        assert _wait(lambda: server._live == 0)
        assert server.refusals == {"tls": 3}
    finally:
        for worker in server.workers:
            worker.request_stop()
        for worker in server.workers:
            worker.join(timeout=30)
        server._listener.close()
