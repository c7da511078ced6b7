"""A reference model of the protocol, written from SPEC L1-L8 and R1-R4, not from the code.

It is deliberately naive: it sees the whole byte stream of a connection at once
and cuts it with ``bytes.find``, decodes with Python's strict decoder and folds
the disconnect word as docs/protocol.md words it.  It never holds partial state
between reads, so it cannot have the core's framing bugs; the core
(:mod:`statemachine.session`) must give the same bytes however the stream is cut.
The property tests and the model-based test against the live server both predict
every reply byte and every close with it.
"""

from __future__ import annotations

import codecs
import unicodedata
from dataclasses import dataclass

LF = b"\n"
CRLF = b"\r\n"
INVALID_UTF8 = b"error: invalid utf-8"
SHUTTING_DOWN = b"error: server shutting down"

# How a connection's input ended, if it did (the server's view).
EOF = "eof"
SHUTDOWN = "shutdown"

#: What this model predicts, in the session machine's words (tests/formal/test_every_check.py walks them):
#: every answered message, and each reason a session closes for, from the bytes (line_replies, raw_replies)
#: or from the clock (deadline_due).  The rest is named in NOT_COVERED with the check that covers it.
COVERS_TRIGGERS = frozenset({"message", "disconnect", "end_of_stream", "line_too_long", "shutdown", "idle_timeout"})
COVERS_STATES = frozenset({"CONNECTED", "ECHOING", "CLOSING"})  # see Expected.state
NOT_COVERED = {
    "flushed": ("timed core model", "when replies leave the socket is the server's, not the protocol's"),
    "abort": ("timed core model", "a reset or a write error ends a session with nothing left to predict"),
    "CLOSED": ("timed core model", "the model predicts what is sent; CLOSED follows once it has been sent"),
}


def too_long(max_line: int) -> bytes:
    return f"error: line too long (max {max_line} bytes)".encode()


def disconnects(text: str) -> bool:
    """L4 as docs/protocol.md states it: strip, NFD, drop combining marks, case-fold."""
    decomposed = unicodedata.normalize("NFD", text.strip())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.casefold() == "desconexion"


@dataclass(frozen=True)
class Expected:
    """What the server must have sent for a stream, and whether and why it closed."""

    replies: bytes
    messages: int  # messages answered (each one is logged by the server)
    reason: str | None  # None while the session is open; else the trigger that closed it

    @property
    def closed(self) -> bool:
        return self.reason is not None

    @property
    def state(self) -> str:
        """The session's state once the stream has been read: CLOSING while its last replies are owed."""
        if self.closed:
            return "CLOSING"
        return "ECHOING" if self.messages else "CONNECTED"


def deadline_due(started: float, limit: float, now: float) -> bool:
    """L9 (and every deadline like it): ``limit`` seconds since ``started`` have passed at ``now``; 0 is off."""
    return bool(limit) and now >= started + limit


def line_replies(stream: bytes, max_line: int, end: str | None = None) -> Expected:
    """Replies to ``stream`` in line framing (L1-L8, L11), read as a whole.

    ``end`` is None while the client may still send, ``EOF`` after its
    half-close (L7), ``SHUTDOWN`` after the server was told to stop (L11).
    """
    out = bytearray()
    last_terminator = LF  # L8: server lines end like the last message (LF if none)
    answered = 0
    pos = 0
    while (lf := stream.find(LF, pos)) >= 0:
        line = stream[pos:lf]
        pos = lf + 1
        text, terminator = (line[:-1], CRLF) if line.endswith(b"\r") else (line, LF)
        if len(text) > max_line:
            return Expected(bytes(out + too_long(max_line) + last_terminator), answered, "line_too_long")
        last_terminator = terminator
        answered += 1
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            out += INVALID_UTF8 + terminator
            continue
        out += decoded.upper().encode() + terminator
        if disconnects(decoded):
            return Expected(bytes(out), answered, "disconnect")
    tail = stream[pos:]
    # L6: refused as soon as it is certain, i.e. once no CRLF can end it within max_line.
    if len(tail) > max_line + 1 or (len(tail) == max_line + 1 and not tail.endswith(b"\r")):
        return Expected(bytes(out + too_long(max_line) + last_terminator), answered, "line_too_long")
    if end is None:
        return Expected(bytes(out), answered, None)
    if end == SHUTDOWN:  # the unterminated partial line is dropped
        return Expected(bytes(out + SHUTTING_DOWN + last_terminator), answered, "shutdown")
    if not tail:
        return Expected(bytes(out), answered, "end_of_stream")
    if len(tail) > max_line:  # a last message is still a message (L6): its CR is data here
        return Expected(bytes(out + too_long(max_line) + last_terminator), answered, "line_too_long")
    answered += 1
    try:
        decoded = tail.decode("utf-8")
    except UnicodeDecodeError:
        return Expected(bytes(out + INVALID_UTF8 + last_terminator), answered, "end_of_stream")
    out += decoded.upper().encode()  # L7: no terminator
    return Expected(bytes(out), answered, "disconnect" if disconnects(decoded) else "end_of_stream")


def _waiting_tail(data: bytes) -> int:
    """R4: length of the suffix the strict decoder would wait on (an unfinished character)."""
    for back in range(min(3, len(data)), 0, -1):
        try:
            if codecs.getincrementaldecoder("utf-8")().decode(data[-back:], final=False) == "":
                return back
        except UnicodeDecodeError:
            continue
    return 0


def raw_replies(chunks: list[bytes], end: str | None = None) -> Expected:
    """Replies in raw framing (R1-R4): one message per read; server lines end with LF."""
    out = bytearray()
    answered = 0
    held = b""
    for chunk in chunks:
        data = held + chunk
        cut = _waiting_tail(data)
        data, held = (data[:-cut], data[-cut:]) if cut else (data, b"")
        if not data:
            continue
        answered += 1
        try:
            decoded = data.decode("utf-8")
        except UnicodeDecodeError:
            out += INVALID_UTF8 + LF
            continue
        out += decoded.upper().encode()
        if disconnects(decoded):
            return Expected(bytes(out), answered, "disconnect")
    if end is None:
        return Expected(bytes(out), answered, None)
    if end == SHUTDOWN:
        return Expected(bytes(out + SHUTTING_DOWN + LF), answered, "shutdown")
    if held:  # an unfinished character that never finished
        return Expected(bytes(out + INVALID_UTF8 + LF), answered + 1, "end_of_stream")
    return Expected(bytes(out), answered, "end_of_stream")
