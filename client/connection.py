"""The one client connection class: the CLI, the tests and the Locust user all use it.

It speaks wire protocol v1 (line framing) with a plain blocking socket and a
timeout, so it also works under gevent's monkey-patching (Locust).  Replies
are framed with the core's :class:`~statemachine.framing.LineFramer`.  With
``framing="raw"`` it speaks the classroom's own protocol instead (C5): text
sent with no newline, and what one read returns is the answer.  Given an
``ssl.SSLContext`` (see :func:`tls_context`) it speaks either over TLS (O6),
checking the server's certificate and host name unless told otherwise.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from statemachine.framing import LineFramer, LineTooLong, split_block
from statemachine.session import FRAMINGS, LINE, RAW
from statemachine.text import DISCONNECT_WORD, incomplete_tail

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
# With a ``notice`` callback: say after this long that no reply came yet, and
# wait at most this long for the close that follows the disconnect word's reply.
NOTICE_AFTER = 2.0
_RAW_HINT = (
    "a server that reads one message per line (upperecho's default framing) does not answer "
    "text sent without a newline: leave out --framing raw"
)


class ClientError(Exception):
    """Base of the client's errors; ``str()`` is one clear line."""


class ConnectError(ClientError):
    """The server could not be reached (refused, unreachable, timed out)."""


class ConnectionLost(ClientError):
    """The connection ended, or went silent, before an expected reply."""


class ReplyTimeout(ConnectionLost):
    """No reply came within the timeout."""


class NotClosed(ClientError):
    """The server answered the disconnect word but kept the connection open."""


class TlsSetupError(ClientError):
    """The TLS settings cannot be used (an unreadable or invalid CA file)."""


def tls_context(cafile: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A client context: the system's CAs (or ``cafile``'s), host name checked; ``insecure`` checks nothing."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else getattr(exc, "reason", None) or exc
        raise TlsSetupError(f"cannot use the CA file {cafile}: {str(detail).replace('_', ' ').lower()}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ServerError(ClientError):
    """The server sent a line of its own (``error: …``) instead of a reply."""

    def __init__(self, line: str) -> None:
        super().__init__(f"server said: {line}")
        self.line = line

    @property
    def about_message(self) -> bool:
        """True when the line answers the message just sent (invalid UTF-8, too long), not the session."""
        return self.line.startswith(_MESSAGE_ERRORS)


class Connection:
    """A session with an upperecho server.

    ``request`` sends one message and returns its reply; ``pipeline`` sends
    ahead and yields replies in order; ``disconnect`` ends the session the
    protocol's way.  Use as a context manager to always close the socket.

    ``notice`` (optional) is told, in one line, when a reply is slow to come
    (after ``NOTICE_AFTER`` seconds, before the timeout ends); with it, the
    close that must follow the disconnect word's reply is awaited no longer
    than that either, so a server that echoes the word and stays open (the
    classroom's, in line framing) is found out at once.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        timeout: float | None = DEFAULT_TIMEOUT,
        framing: str = LINE,
        notice: Callable[[str], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.framing = framing
        self.notice = notice
        self.ssl_context = ssl_context
        self._sock: socket.socket | None = None
        self._framer = LineFramer(_MAX_REPLY)
        self._lines: deque[str] = deque()
        self.closed_by_server = False

    # -- life cycle -----------------------------------------------------------

    def connect(self) -> Connection:
        sock = None
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except TimeoutError as exc:
            _close_quietly(sock)
            raise ConnectError(f"cannot connect to {self._where()}: timed out") from exc
        except ssl.SSLCertVerificationError as exc:
            _close_quietly(sock)
            why = exc.verify_message or str(exc.reason or exc)
            raise ConnectError(f"cannot connect to {self._where()}: TLS certificate verify failed: {why}") from exc
        except ssl.SSLError as exc:
            _close_quietly(sock)
            why = str(exc.reason or exc).replace("_", " ").lower()
            raise ConnectError(f"cannot connect to {self._where()}: TLS handshake failed: {why}") from exc
        except OSError as exc:
            _close_quietly(sock)
            reason = exc.strerror or str(exc)
            raise ConnectError(f"cannot connect to {self._where()}: {reason.lower()}") from exc
        self._sock = sock
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
        """Send several messages in one write; read their replies afterwards (line framing only)."""
        if self.framing == RAW:
            texts = list(texts)
            if len(texts) != 1:
                raise ValueError("raw framing sends one message at a time: the server cannot tell two apart")
            self._send_bytes(encode_raw(texts[0]))
            return
        self._send_bytes(b"".join(encode_message(text) for text in texts))

    def _send_bytes(self, data: bytes) -> None:
        try:
            self._socket().sendall(data)
        except TimeoutError as exc:
            raise ConnectionLost(f"the server took no data for {self.timeout} s") from exc
        except OSError as exc:
            raise ConnectionLost(f"connection lost while sending: {_reason(exc)}") from exc

    def receive_line(self) -> str:
        """The next line from the server, terminator removed (server lines included).

        In raw framing: the next answer, what one read returns (completed to a
        whole character); a server line loses its LF.
        """
        if self.framing == RAW:
            return self._receive_raw()
        while not self._lines:
            data = self._recv()
            try:
                block = self._framer.feed(data)
            except LineTooLong as exc:
                raise ConnectionLost("the server sent a line longer than any reply can be") from exc
            self._lines.extend(line.decode(errors="replace") for line, _ in split_block(block))
        return self._lines.popleft()

    def _receive_raw(self) -> str:
        data = self._recv()
        while incomplete_tail(data):
            try:
                data += self._recv()
            except ConnectionLost:
                if not self.closed_by_server:
                    raise
                break  # the stream ended mid-character: show what came, U+FFFD for the cut; the next read tells
        text = data.decode(errors="replace")
        if text.startswith(SERVER_LINE_PREFIX) and text.endswith("\n"):
            return text[:-1]
        return text

    def _recv(self, within: float | None = None) -> bytes:
        """One read; ``within`` (shorter than the timeout) raises :class:`ReplyTimeout` sooner, silently."""
        sock = self._socket()
        try:
            if within is not None:
                return self._recv_within(sock, within)
            if self.notice is not None and (self.timeout is None or self.timeout > NOTICE_AFTER):
                try:
                    return self._recv_within(sock, NOTICE_AFTER)
                except ReplyTimeout:
                    self.notice(self._slow_notice())
                    remaining = None if self.timeout is None else self.timeout - NOTICE_AFTER
                    return self._recv_within(sock, remaining)
            data = sock.recv(_READ_SIZE)
        except TimeoutError as exc:
            raise ReplyTimeout(f"no reply from the server within {self.timeout} s") from exc
        except OSError as exc:
            raise ConnectionLost(f"connection lost: {_reason(exc)}") from exc
        if not data:
            self.closed_by_server = True
            raise ConnectionLost("the server closed the connection")
        return data

    def _recv_within(self, sock: socket.socket, seconds: float | None) -> bytes:
        sock.settimeout(seconds)
        try:
            data = sock.recv(_READ_SIZE)
        except TimeoutError as exc:
            raise ReplyTimeout(f"no reply from the server within {self.timeout} s") from exc
        finally:
            sock.settimeout(self.timeout)
        if not data:
            self.closed_by_server = True
            raise ConnectionLost("the server closed the connection")
        return data

    def _slow_notice(self) -> str:
        waiting = "for ever" if self.timeout is None else f"up to {self.timeout:g} s"
        line = f"warning: no reply after {NOTICE_AFTER:g} s, still waiting {waiting}"
        return f"{line}; {_RAW_HINT}" if self.framing == RAW else line

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
        self,
        texts: Iterable[str],
        window: int = DEFAULT_WINDOW,
        max_bytes: int = DEFAULT_PIPELINE_BYTES,
        ready: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Send ahead and yield the replies in order.

        At most ``window`` messages and about ``max_bytes`` bytes are unanswered
        at any time, so neither side can fill the other's buffers while both
        wait (see ``DEFAULT_PIPELINE_BYTES``).  ``texts`` is consumed lazily.
        Messages go out in batches; ``ready`` (optional) says whether
        ``texts`` can give its next message without waiting: when it cannot,
        what was taken is sent at once and the replies due are read while the
        input pauses (C6: a message already in is never held back).
        """
        if window < 1 or max_bytes < 1:
            raise ValueError("window and max_bytes must be at least 1")
        if self.framing == RAW:
            raise ValueError("raw framing cannot pipeline: the server cannot tell messages sent together apart")
        in_flight: deque[int] = deque()  # sizes of the messages sent and not yet answered
        in_flight_bytes = 0
        batch: list[bytes] = []
        batch_bytes = 0
        for text in texts:
            data = encode_message(text)
            batch.append(data)
            batch_bytes += len(data)
            more = ready is None or ready()
            if (
                more
                and len(batch) < _BATCH
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
            if not more:
                while in_flight and not ready():
                    yield self.read_reply()
                    in_flight_bytes -= in_flight.popleft()
        while in_flight and in_flight_bytes + batch_bytes > max_bytes:
            yield self.read_reply()
            in_flight_bytes -= in_flight.popleft()
        if batch:
            self._send_bytes(b"".join(batch))
        for _ in range(len(in_flight) + len(batch)):
            yield self.read_reply()

    def disconnect(self, word: str = DISCONNECT_WORD) -> str:
        """Send the disconnect word, return its reply and wait for the server to close.

        In raw framing the word goes out as the bare ``DESCONEXION`` whatever
        the spelling of ``word``, since the classroom's server compares the
        exact text, and it closes without an answer: the reply is then ``""``.
        """
        if self.framing == RAW:
            self.send(DISCONNECT_WORD)
            within = None
            if self.notice is not None and (self.timeout is None or self.timeout > NOTICE_AFTER):
                within = NOTICE_AFTER
            reply = b""
            try:
                reply = self._recv()
                while True:  # an answer (upperecho's raw framing gives one), then the close
                    reply += self._recv(within)
            except ReplyTimeout as exc:
                self.close()
                if reply:
                    raise NotClosed(
                        f"the server answered {DISCONNECT_WORD} but kept the connection open "
                        f"({within or self.timeout:g} s)"
                    ) from exc
                raise
            except ConnectionLost:
                self.close()
            return reply.decode(errors="replace")
        reply = self.request(word)
        self.wait_closed()
        return reply

    def wait_closed(self) -> None:
        """Read until the server closes; a line it still sends is a protocol error.

        A server that stays open raises :class:`NotClosed` (after the timeout,
        or sooner with a ``notice``).
        """
        within = None
        if self.notice is not None and (self.timeout is None or self.timeout > NOTICE_AFTER):
            within = NOTICE_AFTER
        try:
            if self._lines:
                extra = self._lines.popleft()
            else:
                extra = self._recv(within).decode(errors="replace").rstrip("\n")
        except ReplyTimeout as exc:
            self.close()
            raise NotClosed(
                f"the server answered DESCONEXION but kept the connection open "
                f"({within or self.timeout:g} s); a classroom server (like the seed's server.py) "
                "obeys only the bare word: try --framing raw"
            ) from exc
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


def encode_raw(text: str) -> bytes:
    """``text`` as one raw-framing message: bare, so it must not be empty (nothing would be sent)."""
    if not text:
        raise ValueError("raw framing cannot send an empty message: the server would see nothing")
    return text.encode()


# The server lines that answer one message; the others (idle timeout, busy,
# shutting down) concern the session, whatever was sent last.
_MESSAGE_ERRORS = ("error: invalid utf-8", "error: line too long")


def _close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()


def _reason(exc: OSError) -> str:
    return (exc.strerror or exc.__class__.__name__).lower()
