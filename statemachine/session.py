"""One connection's protocol, without I/O: bytes in, reply bytes out.

A :class:`Session` is fed what the socket read and returns what the socket
must send.  It owns the framing (line or raw), the decoding, the upper-casing
and the session's state, which changes only through the shared machine of
:mod:`statemachine.machine`.  Time is an argument (``now``); nothing here
reads a clock, opens a socket or starts a thread.

The server's duties that follow from a state: in CLOSING it sends what it
holds, then calls :meth:`Session.flushed`; on a reset or a write error it calls
:meth:`Session.abort`.  A TLS session starts in HANDSHAKE: the handshake's bytes
are the TLS layer's, not the protocol's, so the session only learns its outcome
(:meth:`Session.handshake_done`, :meth:`Session.handshake_failed`) and keeps its
deadline (:meth:`Session.check_handshake`).

With the PROXY protocol on (O2) a session starts in PROXY_HEADER: its input
goes to a :class:`~statemachine.proxy.ProxyParser` until the load balancer's
header is complete (``proxy_header``, then the bytes after it are the client's
first input, in the same call) or refused (``proxy_rejected``: CLOSED at once).
Nothing is ever answered in PROXY_HEADER: every input there returns ``b""``,
so no client can make the server speak before a valid header.  The header must
be complete within ``proxy_timeout`` of the session's start; the server asks
with :meth:`Session.check_header`, as it does for the idle time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from statemachine.framing import CRLF, LF, LineFramer, LineTooLong, split_block
from statemachine.machine import CLOSED, CLOSING, CONNECTED, ECHOING, HANDSHAKE, PROXY_HEADER, SessionModel, fire
from statemachine.proxy import ACCEPTS, ProxyHeader, ProxyParser, ProxyRejected
from statemachine.text import (
    INVALID_CR_MARK,
    INVALID_MARK,
    find_disconnect,
    find_disconnect_line,
    incomplete_tail,
    is_disconnect,
)

LINE = "line"
RAW = "raw"
FRAMINGS = (LINE, RAW)

DEFAULT_MAX_LINE = 65536
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
PROXY_OFF = "off"
PROXY_MODES = (PROXY_OFF, *ACCEPTS)
DEFAULT_PROXY_TIMEOUT = 5.0
DEFAULT_LINE_TIMEOUT = 60.0

ERROR_INVALID_UTF8 = "error: invalid utf-8"
ERROR_IDLE = "error: idle timeout"
ERROR_LINE_TIMEOUT = "error: line timeout"
ERROR_SHUTDOWN = "error: server shutting down"
ERROR_BUSY = "error: server busy"


_OPEN_STATES = frozenset((CONNECTED, ECHOING))


# -- invalid lines, a whole block at a time (L5, L16) ------------------------------
#
# A block holding invalid lines is folded first: each invalid line becomes one
# mark, which takes the place of the LF before it (``mark_invalid_lines``).
# Every LF left then starts a valid line, so the disconnect search spends nothing
# on invalid ones, and the error lines come back after upper-casing (``unmark``).
#
# Finding the invalid lines takes no step per line: a regular expression would
# cost a match per line, about five times what plain ASCII costs a line.  The
# block is handled as big integers instead, one byte per 8-bit lane, each step one
# pass in C over all of it:
#
# * ``escaped``: the block as it came, and as "replace" encodes its decoded text:
#   the two differ exactly on the invalid bytes (each became one "?"), and there by
#   0x80 or more;
# * ``content``: 0xFF on each byte of a line, 0x00 on its LF;
# * ``content + escaped``, lanes in text order (little-endian): a line's first
#   invalid byte overflows its 0xFF lane and the carry runs over the rest of the
#   line to land on its LF, and nowhere else: an LF lane holds 1 exactly when its
#   line was invalid;
# * those lanes moved one back, to the line's last byte, and added to ``content``
#   with the lanes in reverse order (big-endian): the carry runs back over the line
#   and lands on the LF before it.  The lanes it crossed, 0xFF before, are 0x00:
#   the line's bytes;
# * the block with those bytes and the LF before each invalid line set to 0xFF,
#   except each invalid line's last byte, set to 0xFE, or to 0xFD when it is a CR
#   (the CRLF terminator's, which the rule line by line keeps); UTF-8 holds none of
#   them.  One ``translate`` deletes the 0xFF bytes and the decoder turns the others
#   into the marks.
_CONTENT_LANES = bytes(0x00 if byte == 0x0A else 0xFF for byte in range(256))
_CR_LANES = bytes(int(byte == 0x0D) for byte in range(256))
_MARK_BYTE = INVALID_MARK.encode(errors="surrogateescape")
_CR_MARK_BYTE = INVALID_CR_MARK.encode(errors="surrogateescape")
_ERROR_AFTER_LF = b"\n" + ERROR_INVALID_UTF8.encode()


def mark_invalid_lines(block: bytes, text: str) -> str:
    """``text`` with an LF put first and each line that was not UTF-8 folded into a mark.

    ``text`` is ``block`` (whole lines) decoded with ``surrogateescape``.  The
    mark of an invalid line (``INVALID_CR_MARK`` when it ended in CRLF, else
    ``INVALID_MARK``) takes the place of the LF before it, so it ends the line
    before it, and the invalid line's LF ends that line in turn: ``a``, ``\\xff``
    and ``b``, each with an LF, become an LF, ``a``, the mark, an LF, ``b`` and an
    LF.  A fixed number of passes in C over the block, however many of its lines
    are invalid (L16).
    """
    raw = b"\n" + block
    data = b"\n" + text.encode(errors="replace")  # one "?" for each invalid byte: lane for lane with raw
    size = len(raw)
    lanes = data.translate(_CONTENT_LANES)
    content = int.from_bytes(lanes, "little")
    forward = content + (int.from_bytes(raw, "little") ^ int.from_bytes(data, "little"))
    invalid_lfs = forward - (forward & content)  # the LF lanes alone
    lasts = int.from_bytes(invalid_lfs.to_bytes(size, "little")[1:] + b"\0", "big")  # each one lane back
    content = int.from_bytes(lanes, "big")
    backward = content + lasts
    crossed = (content ^ backward) & content
    landed = backward - (backward & content)  # the LF lanes before invalid lines
    if b"\r" in data:
        lasts += lasts & int.from_bytes(data.translate(_CR_LANES), "big")  # 2 where the last byte is a CR
    out = (int.from_bytes(raw, "big") | crossed | landed * 0xFF) - lasts
    return out.to_bytes(size, "big").translate(None, b"\xff").decode(errors="surrogateescape")


def unmark(marked: str) -> bytes:
    """``marked`` (from ``mark_invalid_lines``, from its start) encoded, each mark back to its LF and error line."""
    out = marked.encode(errors="surrogateescape").replace(_MARK_BYTE, _ERROR_AFTER_LF)
    if _CR_MARK_BYTE in out:
        out = out.replace(_CR_MARK_BYTE, _ERROR_AFTER_LF + b"\r")
    return out[1:]


def replace_invalid_lines(data: bytes) -> bytes:
    """``data`` with each line that is not UTF-8 replaced by the error line (L5), as the core does it."""
    block = data if data.endswith(b"\n") else data + b"\n"
    out = unmark(mark_invalid_lines(block, block.decode(errors="surrogateescape")))
    return out if block is data else out[:-1]


def error_too_long(max_line: int) -> str:
    return f"error: line too long (max {max_line} bytes)"


#: Called with (message text, reply text) for every message, when logging wants it.
MessageHook = Callable[[str, str], None]
#: Called with the PROXY header once read, before the bytes after it are answered.
HeaderHook = Callable[[ProxyHeader], None]


@dataclass(frozen=True, slots=True)
class Limits:
    """Settings shared by every session of a server (one object, not one per session)."""

    framing: str = LINE
    max_line: int = DEFAULT_MAX_LINE
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # seconds; 0 turns it off
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT  # seconds for the TLS handshake (O6); always on
    proxy: str = PROXY_OFF  # O2: which PROXY protocol header a session must start with
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT  # seconds for the whole header
    line_timeout: float = DEFAULT_LINE_TIMEOUT  # seconds from a message's first byte to its end; 0: off

    @property
    def reply_per_byte(self) -> int:
        """The most reply bytes one byte read can add, beyond finishing what was held (L12).

        An invalid byte is answered with the 21-byte error line: with its LF in
        line framing (10.5 per byte, so 11), alone in raw framing (21).  An
        upper case is at most 3 times as long as its text.  Finishing a held
        line adds at most 3 times that line, and a closing notice a few bytes.
        """
        return len(ERROR_INVALID_UTF8) + 1 if self.framing == RAW else (len(ERROR_INVALID_UTF8) + 2) // 2

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}")
        if self.max_line < 1:
            raise ValueError("max_line must be at least 1")
        if self.idle_timeout < 0:
            raise ValueError("idle_timeout must not be negative")
        if not self.handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive")
        if self.proxy not in PROXY_MODES:
            raise ValueError(f"proxy must be one of {', '.join(PROXY_MODES)}")
        if not self.proxy_timeout > 0:
            raise ValueError("proxy_timeout must be positive")
        if self.line_timeout < 0:
            raise ValueError("line_timeout must not be negative")


class Session(SessionModel):
    """The protocol state of one connection.

    ``reason`` names the trigger that moved the session to CLOSING or CLOSED.
    ``messages`` counts the messages answered (for the server's metrics).
    ``on_message`` (optional) sees every message and its reply, for logging.
    ``start`` is an entry state: CONNECTED, HANDSHAKE when TLS comes first, or
    (the default when ``limits.proxy`` is on) PROXY_HEADER; in HANDSHAKE and
    PROXY_HEADER, ``last_input`` is when the connection was accepted.
    ``header`` is the PROXY header once read (``on_header``, optional, sees it
    then); ``proxy_error`` says in words why one was refused.
    ``line_started`` is when the first byte of the unfinished message arrived
    (None when no message is unfinished): the L14 clock, which later bytes of
    the same message do not restart.
    """

    __slots__ = (
        "_framer",
        "_held",
        "_proxy",
        "_terminator",
        "eof",
        "header",
        "last_input",
        "limits",
        "line_started",
        "messages",
        "on_header",
        "on_message",
        "proxy_error",
        "reason",
    )

    def __init__(
        self,
        limits: Limits,
        now: float,
        on_message: MessageHook | None = None,
        on_header: HeaderHook | None = None,
        start: str | None = None,
    ) -> None:
        proxied = limits.proxy != PROXY_OFF
        super().__init__(start if start is not None else PROXY_HEADER if proxied else None)
        self._proxy = ProxyParser(limits.proxy) if proxied else None
        self.header: ProxyHeader | None = None
        self.proxy_error: str | None = None
        self.on_header = on_header
        self.limits = limits
        self.on_message = on_message
        self.last_input = now
        self.line_started: float | None = None
        self.reason: str | None = None
        self.messages = 0
        self.eof = False
        self._terminator = LF
        self._framer = LineFramer(limits.max_line) if limits.framing == LINE else None
        self._held = b""  # raw mode: an unfinished UTF-8 sequence

    # -- what the server asks -------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True while input is still answered (CONNECTED or ECHOING)."""
        return self.state in _OPEN_STATES

    def idle_deadline(self) -> float | None:
        """When the idle timeout (L9) fires if nothing arrives; None when off or closing."""
        timeout = self.limits.idle_timeout
        if not timeout or not self.is_open:
            return None
        return self.last_input + timeout

    def handshake_deadline(self) -> float | None:
        """When a TLS handshake still under way fails (O6); None once it is over."""
        if self.state != HANDSHAKE:
            return None
        return self.last_input + self.limits.handshake_timeout

    # -- the TLS handshake (O6): only its outcome reaches the session ---------

    def handshake_done(self, now: float) -> None:
        """The handshake succeeded: the protocol starts, and so does the idle clock."""
        fire(self, "handshake_done")
        self.last_input = now

    def handshake_failed(self) -> None:
        """Bad handshake, plain text, timeout, end of stream or shutdown before it ended: closed, no reply."""
        self.reason = "handshake_failed"
        fire(self, "handshake_failed")

    def check_handshake(self, now: float) -> bool:
        """Call when the handshake deadline may have passed; True when it has (the session is then CLOSED)."""
        deadline = self.handshake_deadline()
        if deadline is None or now < deadline:
            return False
        self.handshake_failed()
        return True

    @property
    def awaiting_header(self) -> bool:
        """True in PROXY_HEADER: the input is the load balancer's, not yet the client's."""
        return self.state == PROXY_HEADER

    @property
    def client_address(self) -> tuple[str, int] | None:
        """The client's address from the PROXY header; None without one or when it names none."""
        return self.header.source if self.header is not None else None

    def header_deadline(self) -> float | None:
        """When the PROXY header must be complete (O2); None once it is, or without PROXY."""
        if self.state != PROXY_HEADER:
            return None
        return self.last_input + self.limits.proxy_timeout  # last_input stays the start until the header

    def line_deadline(self) -> float | None:
        """When the message deadline (L14) fires for the unfinished message; None when there is none."""
        started = self.line_started
        timeout = self.limits.line_timeout
        if started is None or not timeout or not self.is_open:
            return None
        return started + timeout

    def next_deadline(self) -> float | None:
        """The earlier of the idle and message deadlines: when :meth:`check_deadlines` may act."""
        idle = self.idle_deadline()
        line = self.line_deadline()
        if line is None or (idle is not None and idle <= line):
            return idle
        return line

    # -- inputs ---------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> bytes:
        """Bytes read from the client; returns the replies to send."""
        if self.state not in _OPEN_STATES or not data:
            if self.state == PROXY_HEADER:
                return self._receive_header(data, now) if data else b""
            self.last_input = now
            return b""  # CLOSING and CLOSED discard input
        self.last_input = now
        if self._framer is None:
            return self._receive_raw(data)
        framer = self._framer
        try:
            block = framer.feed(data)
        except LineTooLong as exc:
            out = self._reply_block(exc.block) if exc.block else b""
            if not self.is_open:
                return out
            return out + self._close("line_too_long", error_too_long(exc.max_line))
        if not framer.holding:
            self.line_started = None
        elif block or self.line_started is None:
            self.line_started = now  # this read began the unfinished message
        return self._reply_block(block) if block else b""

    def end_of_stream(self) -> bytes:
        """The client half-closed (L7): answer the unterminated tail, then close."""
        self.eof = True
        if self.state == HANDSHAKE:
            self.handshake_failed()
        if self.state == PROXY_HEADER:
            try:
                self._proxy.finish()
            except ProxyRejected as exc:
                self._reject_header(exc.reason)
            return b""
        if not self.is_open:
            return b""
        if self._framer is None:
            tail, self._held = self._held, b""
            out = self._reply_line(tail, b"") if tail else b""  # an unfinished sequence: invalid
            return out + self._close("end_of_stream")
        try:
            tail = self._framer.finish()
        except LineTooLong as exc:
            return self._close("line_too_long", error_too_long(exc.max_line))
        if not tail:
            return self._close("end_of_stream")
        out = self._reply_line(tail, b"")
        if not self.is_open:  # the tail was the disconnect word
            return out
        return out + self._close("end_of_stream")

    def check_idle(self, now: float) -> bytes:
        """Call when the idle deadline may have passed; returns the notice, if due."""
        deadline = self.idle_deadline()
        if deadline is None or now < deadline:
            return b""
        return self._close("idle_timeout", ERROR_IDLE)

    def check_header(self, now: float) -> None:
        """Call when the header deadline may have passed: refuses the session if it has."""
        deadline = self.header_deadline()
        if deadline is not None and now >= deadline:
            self._reject_header(f"no complete PROXY header within {self.limits.proxy_timeout:g} s")

    def check_deadlines(self, now: float) -> bytes:
        """Call when :meth:`next_deadline` may have passed; returns the notice of the one due (L9, L14)."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return b""
        if deadline == self.line_deadline():
            self._framer.take_pending()  # the unfinished message is dropped, not answered
            return self._close("line_timeout", ERROR_LINE_TIMEOUT)
        return self._close("idle_timeout", ERROR_IDLE)

    def shutdown(self) -> bytes:
        """The server is stopping (L11): drop the partial line, send the notice."""
        if self.state == HANDSHAKE:
            self.handshake_failed()
        if self.state == PROXY_HEADER:
            self._reject_header("the server is shutting down")
            return b""
        if not self.is_open:
            return b""
        if self._framer is not None:
            self._framer.take_pending()
        self._held = b""
        return self._close("shutdown", ERROR_SHUTDOWN)

    def flushed(self) -> None:
        """Every reply of a CLOSING session has been handed to the network."""
        fire(self, "flushed")

    def abort(self) -> None:
        """Reset, write error or drain time exceeded: the session ends now."""
        if self.state == CLOSED:
            return
        if self.state != CLOSING:
            self.reason = "abort"
        self.on_header = None
        fire(self, "abort")

    # -- the PROXY header (O2) --------------------------------------------------

    def _receive_header(self, data: bytes, now: float) -> bytes:
        try:
            header = self._proxy.feed(data)
        except ProxyRejected as exc:
            self._reject_header(exc.reason)
            return b""
        if header is None:
            return b""
        rest = self._proxy.leftover
        self._proxy = None
        self.header = header
        self.last_input = now
        fire(self, "proxy_header")
        hook, self.on_header = self.on_header, None  # used once; the server's hook may refer back to us
        if hook is not None:
            hook(header)
        return self.receive(rest, now) if rest else b""

    def _reject_header(self, why: str) -> None:
        self._proxy = None
        self.on_header = None
        self.proxy_error = why
        self.reason = "proxy_rejected"
        fire(self, "proxy_rejected")

    # -- line framing ---------------------------------------------------------

    def _reply_block(self, block: bytes) -> bytes:
        """Complete lines, answered a whole block at a time (L16: no Python work per line).

        Decoding, upper-casing, replacing invalid lines and finding the disconnect
        word are each one pass over the block, whatever it holds; only the
        logging hook, when set, is called once per message.
        """
        try:
            text = block.decode()
        except UnicodeDecodeError:
            return self._reply_marked(block)
        word = find_disconnect(text)
        if word < 0:
            return self._reply_text(text)
        # The lines before the word are messages; the word is answered, what follows it dropped (L4).
        out = self._reply_text(text[:word]) if word else b""
        line, terminator = split_block(text[word : text.index("\n", word) + 1].encode())[0]
        return out + self._reply_line(line, terminator)

    def _reply_text(self, text: str) -> bytes:
        """Valid lines, none of which is the disconnect word."""
        reply = text.upper()
        if self.on_message is not None:
            self._log_lines(text.split("\n")[:-1], reply.split("\n")[:-1])
        fire(self, "message")
        self.messages += text.count("\n")
        self._terminator = CRLF if text.endswith("\r\n") else LF
        return reply.encode()

    def _reply_marked(self, block: bytes) -> bytes:
        """Complete lines, some of them not UTF-8: each folded into a mark first (``mark_invalid_lines``)."""
        text = block.decode(errors="surrogateescape")
        marked = mark_invalid_lines(block, text)
        word = find_disconnect_line(marked)
        head = marked if word < 0 else marked[:word]
        out = unmark(head.upper())  # a mark, a surrogate, has no case
        if word < 0:
            lines = block.count(b"\n")
        else:  # each mark took an LF, and the first LF is the one put first
            lines = head.count("\n") - 1 + head.count(INVALID_MARK) + head.count(INVALID_CR_MARK)
        if lines:
            if self.on_message is not None:
                self._log_lines(text.split("\n")[:lines], out.decode().split("\n")[:lines])
            fire(self, "message")
            self.messages += lines
            self._terminator = CRLF if out.endswith(b"\r\n") else LF
        if word < 0:
            return out
        # The word's line ends at its first mark, if invalid lines followed it: they are dropped with the rest.
        line = marked[word : marked.index("\n", word)].rstrip(INVALID_MARK + INVALID_CR_MARK) + "\n"
        return out + self._reply_line(*split_block(line.encode())[0])

    def _log_lines(self, lines: list[str], answers: list[str]) -> None:
        """The hook sees each message and its reply, as the raw path and the tail show them."""
        hook = self.on_message
        for line, answer in zip(lines, answers, strict=True):
            if line.endswith("\r"):
                line, answer = line[:-1], answer[:-1]
            hook(line, answer)  # an invalid byte stays a surrogate: the log writes it as \xNN (S3)

    def _reply_line(self, line: bytes, terminator: bytes) -> bytes:
        """One message; ``terminator`` is b"" for the unterminated tail (L7)."""
        if terminator:
            self._terminator = terminator
        self.messages += 1
        try:
            text = line.decode()
        except UnicodeDecodeError:
            fire(self, "message")
            reply = ERROR_INVALID_UTF8
            if self.on_message is not None:
                self.on_message(line.decode(errors="surrogateescape"), reply)  # the log writes \xNN (S3)
            return reply.encode() + self._terminator
        reply = text.upper()
        if self.on_message is not None:
            self.on_message(text, reply)
        if is_disconnect(text):
            self.reason = "disconnect"
            fire(self, "disconnect")
        else:
            fire(self, "message")
        return reply.encode() + terminator

    # -- raw framing ----------------------------------------------------------

    def _receive_raw(self, data: bytes) -> bytes:
        if self._held:
            data = self._held + data
        cut = incomplete_tail(data)
        if cut:
            data, self._held = data[:-cut], data[-cut:]
        else:
            self._held = b""
        if not data:
            return b""
        return self._reply_line(data, b"")

    # -- closing --------------------------------------------------------------

    def _error_line(self, text: str) -> bytes:
        return text.encode() + self._terminator

    def _close(self, trigger: str, notice: str | None = None) -> bytes:
        self.reason = trigger
        fire(self, trigger)
        return self._error_line(notice) if notice else b""


__all__ = [
    "CLOSED",
    "CLOSING",
    "CONNECTED",
    "DEFAULT_PROXY_TIMEOUT",
    "ECHOING",
    "ERROR_BUSY",
    "ERROR_IDLE",
    "ERROR_INVALID_UTF8",
    "ERROR_LINE_TIMEOUT",
    "ERROR_SHUTDOWN",
    "FRAMINGS",
    "HANDSHAKE",
    "LINE",
    "Limits",
    "PROXY_HEADER",
    "PROXY_MODES",
    "PROXY_OFF",
    "RAW",
    "Session",
    "error_too_long",
]
