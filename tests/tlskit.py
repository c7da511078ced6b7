"""TLS for tests: a throwaway certificate made at run time, and a client that controls every record.

The certificate is made with the ``openssl`` command (:mod:`loadtest.certs`) in a temporary directory
(no private key is ever kept in the repository); a test that needs it is
skipped, naming the tool, when ``openssl`` is missing.  :class:`RecordClient`
speaks TLS over a plain blocking socket through ``ssl.MemoryBIO``, so a test
can send ``close_notify`` with or without a TCP half-close, and can tell a
clean ``close_notify`` from a bare end of stream or a reset.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtest.certs import DEFAULT_NAMES, openssl, throwaway_cert

OPENSSL = openssl()
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="needs the openssl command (Debian package openssl) to make a throwaway certificate"
)


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def server_args(self) -> tuple[str, ...]:
        return ("--tls-cert", str(self.cert), "--tls-key", str(self.key))

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def make_cert(directory: Path, name: str = "localhost", names: str = DEFAULT_NAMES) -> Cert:
    """A self-signed certificate for ``names`` (subjectAltName; localhost and 127.0.0.1), valid for a day."""
    if OPENSSL is None:
        pytest.skip("needs the openssl command (Debian package openssl) to make a throwaway certificate")
    return Cert(*throwaway_cert(directory, name, names))


class RecordClient:
    """A TLS client over a blocking socket where the test decides when ``close_notify`` and FIN go out."""

    def __init__(
        self, address: tuple[str, int], context: ssl.SSLContext, timeout: float = 30.0, hold_finished: bool = False
    ) -> None:
        """``hold_finished``: our last handshake flight goes out with the next write, so the
        server reads the end of the handshake together with what follows it."""
        self.sock = socket.create_connection(address, timeout=timeout)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_hostname="localhost")
        self.timeout = timeout
        self.close_notify = False  # the server's close_notify arrived
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._push()
                self._pull_or_fail()
        if not hold_finished:
            self._push()

    def _push(self) -> None:
        if self._out.pending:
            self.sock.sendall(self._out.read())

    def _pull_or_fail(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed during the handshake")
        self._in.write(data)

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._push()

    def send_close_notify(self, half_close: bool = True) -> None:
        """Our ``close_notify`` (without waiting for the server's), and a TCP half-close if asked."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._push()
        if half_close:
            self.sock.shutdown(socket.SHUT_WR)

    def send_and_close_notify(self, data: bytes, half_close: bool = True) -> None:
        """``data`` and our ``close_notify`` in one write, so the server reads them together."""
        self.tls.write(data)
        self.send_close_notify(half_close)

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes of plaintext (fewer only if the stream ends)."""
        data = bytearray()
        deadline = time.monotonic() + self.timeout
        while len(data) < size:
            chunk = self._read_some(deadline)
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def read_to_end(self) -> bytes:
        """Plaintext until the server's ``close_notify`` or the end of the stream (``close_notify`` tells which)."""
        data = bytearray()
        deadline = time.monotonic() + self.timeout
        while chunk := self._read_some(deadline):
            data += chunk
        return bytes(data)

    def _read_some(self, deadline: float) -> bytes:
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                self.close_notify = True
                return b""
            else:
                if not chunk:
                    self.close_notify = True
                return chunk
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the server neither answered nor closed in time")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                return b""
            self._in.write(data)

    def wait_tcp_end(self) -> bytes:
        """After the server's ``close_notify``: the TCP end of stream (anything else that came is returned)."""
        deadline = time.monotonic() + self.timeout
        rest = bytearray()
        while True:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                return bytes(rest)
            rest += data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RecordClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
