"""The one client connection class: the CLI, the tests and the Locust user all use it.

It speaks wire protocol v1 (line framing) with a plain blocking socket and a
timeout, so it also works under gevent's monkey-patching (Locust).  Replies
are framed with the core's :class:`~statemachine.framing.LineFramer`.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterable, Iterator

from statemachine.framing import LineFramer, LineTooLong, split_block
from statemachine.text import DISCONNECT_WORD

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_TIMEOUT = 10.0
SERVER_LINE_PREFIX = "error: "
# A reply can be longer than its message (``ß`` -> ``SS``): allow for it.
_MAX_REPLY = 4 * 65536 + 64
_READ_SIZE = 65536
# Pipelining: messages are sent in batches, and the bytes sent but not yet
# answered stay under DEFAULT_PIPELINE_BYTES.  The server stops reading a
# client with more than 1 MiB of unsent replies (L12) while this client does
# not read while it sends; a reply is at most about 3 times its message
# (``ΐ`` -> ``Ϊ́``), so 128 KiB (plus one 64 KiB message) in flight can never
# leave both sides waiting for each other.
DEFAULT_WINDOW = 1000
DEFAULT_PIPELINE_BYTES = 128 * 1024
_BATCH = 256


class ClientError(Exception):
    """Base of the client's errors; ``str()`` is one clear line."""


class ConnectError(ClientError):
    """The server could not be reached (refused, unreachable, timed out)."""


class ConnectionLost(ClientError):
    """The connection ended, or went silent, before an expected reply."""


class ServerError(ClientError):
    """The server sent a line of its own (``error: …``) instead of a reply."""

    def __init__(self, line: str) -> None:
        super().__init__(f"server said: {line}")
        self.line = line


class Connection:
    """A session with an upperecho server.

    ``request`` sends one message and returns its reply; ``pipeline`` sends
    ahead and yields replies in order; ``disconnect`` ends the session the
    protocol's way.  Use as a context manager to always close the socket.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._framer = LineFramer(_MAX_REPLY)
        self._lines: deque[str] = deque()
        self.closed_by_server = False

    # -- life cycle -----------------------------------------------------------

    def connect(self) -> Connection:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except TimeoutError as exc:
            raise ConnectError(f"cannot connect to {self._where()}: timed out") from exc
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConnectError(f"cannot connect to {self._where()}: {reason.lower()}") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def _where(self) -> str:
        """``host:port``, an IPv6 address in brackets (O7)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Connection:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # -- messages -------------------------------------------------------------

    def send(self, text: str) -> None:
        """Send one message (a newline is added)."""
        self.send_many([text])

    def send_many(self, texts: Iterable[str]) -> None:
        """Send several messages in one write; read their replies afterwards."""
        self._send_bytes(b"".join(encode_message(text) for text in texts))

    def _send_bytes(self, data: bytes) -> None:
        try:
            self._socket().sendall(data)
        except TimeoutError as exc:
            raise ConnectionLost(f"the server took no data for {self.timeout} s") from exc
        except OSError as exc:
            raise ConnectionLost(f"connection lost while sending: {_reason(exc)}") from exc

    def receive_line(self) -> str:
        """The next line from the server, terminator removed (server lines included)."""
        while not self._lines:
            try:
                data = self._socket().recv(_READ_SIZE)
            except TimeoutError as exc:
                raise ConnectionLost(f"no reply from the server within {self.timeout} s") from exc
            except OSError as exc:
                raise ConnectionLost(f"connection lost: {_reason(exc)}") from exc
            if not data:
                self.closed_by_server = True
                raise ConnectionLost("the server closed the connection")
            try:
                block = self._framer.feed(data)
            except LineTooLong as exc:
                raise ConnectionLost("the server sent a line longer than any reply can be") from exc
            self._lines.extend(line.decode(errors="replace") for line, _ in split_block(block))
        return self._lines.popleft()

    def read_reply(self) -> str:
        """The next reply; a server line raises :class:`ServerError`."""
        line = self.receive_line()
        if line.startswith(SERVER_LINE_PREFIX):
            raise ServerError(line)
        return line

    def request(self, text: str) -> str:
        """Send one message and return its reply."""
        self.send(text)
        return self.read_reply()

    def pipeline(
        self, texts: Iterable[str], window: int = DEFAULT_WINDOW, max_bytes: int = DEFAULT_PIPELINE_BYTES
    ) -> Iterator[str]:
        """Send ahead and yield the replies in order.

        At most ``window`` messages and about ``max_bytes`` bytes are unanswered
        at any time, so neither side can fill the other's buffers while both
        wait (see ``DEFAULT_PIPELINE_BYTES``).  ``texts`` is consumed lazily.
        """
        if window < 1 or max_bytes < 1:
            raise ValueError("window and max_bytes must be at least 1")
        in_flight: deque[int] = deque()  # sizes of the messages sent and not yet answered
        in_flight_bytes = 0
        batch: list[bytes] = []
        batch_bytes = 0
        for text in texts:
            data = encode_message(text)
            batch.append(data)
            batch_bytes += len(data)
            if (
                len(batch) < _BATCH
                and len(in_flight) + len(batch) < window
                and in_flight_bytes + batch_bytes < max_bytes
            ):
                continue
            while in_flight and (len(in_flight) + len(batch) > window or in_flight_bytes + batch_bytes > max_bytes):
                yield self.read_reply()
                in_flight_bytes -= in_flight.popleft()
            self._send_bytes(b"".join(batch))
            in_flight.extend(len(data) for data in batch)
            in_flight_bytes += batch_bytes
            batch = []
            batch_bytes = 0
        while in_flight and in_flight_bytes + batch_bytes > max_bytes:
            yield self.read_reply()
            in_flight_bytes -= in_flight.popleft()
        if batch:
            self._send_bytes(b"".join(batch))
        for _ in range(len(in_flight) + len(batch)):
            yield self.read_reply()

    def disconnect(self, word: str = DISCONNECT_WORD) -> str:
        """Send the disconnect word, return its reply and wait for the server to close."""
        reply = self.request(word)
        self.wait_closed()
        return reply

    def wait_closed(self) -> None:
        """Read until the server closes; a line it still sends is a protocol error."""
        try:
            extra = self.receive_line()
        except ConnectionLost:
            self.close()
            return
        self.close()
        raise ClientError(f"unexpected line after the session ended: {extra!r}")

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ClientError("not connected")
        return self._sock


def encode_message(text: str) -> bytes:
    """``text`` as one framed message; refuse what line framing cannot carry (L1).

    An LF inside would make two messages and a final CR would be taken for a
    CRLF terminator: either way the replies would no longer match the requests.
    """
    if "\n" in text or text.endswith("\r"):
        raise ValueError(f"a message cannot contain LF or end with CR: {text[:60]!r}")
    return text.encode() + b"\n"


def _reason(exc: OSError) -> str:
    return (exc.strerror or exc.__class__.__name__).lower()
