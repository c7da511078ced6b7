"""A reference model of the protocol, written from SPEC L1-L8, L14, R1-R4 and O2, not from the code.

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
import re
import socket
import struct
import unicodedata
from dataclasses import dataclass
from itertools import accumulate

LF = b"\n"
CRLF = b"\r\n"
INVALID_UTF8 = b"error: invalid utf-8"
SHUTTING_DOWN = b"error: server shutting down"
LINE_TIMED_OUT = b"error: line timeout"

# How a connection's input ended, if it did (the server's view).
EOF = "eof"
SHUTDOWN = "shutdown"
LINE_TIMEOUT = "line_timeout"  # L14: the message deadline passed (an end only when a message is unfinished)

# O6: how a TLS handshake ended.  Its bytes belong to the TLS layer, not to this
# protocol, so the model knows only the outcome: a completed handshake starts
# the byte protocol above as if the connection had just been made; every other
# outcome (a bad handshake or plain text, the deadline, the client's end of
# stream, the server's shutdown) closes the connection with nothing sent.
HANDSHAKE_DONE = "done"
HANDSHAKE_FAILURES = ("bad", "timeout", EOF, SHUTDOWN)

#: What this model predicts, in the session machine's words (tests/formal/test_every_check.py walks them):
#: every answered message, and each reason a session closes for, from the bytes (line_replies, raw_replies)
#: or from the clock (deadline_due, and timed_line_replies for L14); the TLS handshake's outcomes
#: (after_handshake) and the PROXY header, read or refused (proxy_header).  The rest is named in
#: NOT_COVERED with the check that covers it.
COVERS_TRIGGERS = frozenset(
    {"message", "disconnect", "end_of_stream", "line_too_long", "shutdown", "idle_timeout", "line_timeout"}
    | {"handshake_done", "handshake_failed", "proxy_header", "proxy_rejected"}
)
COVERS_STATES = frozenset({"CONNECTED", "ECHOING", "CLOSING", "HANDSHAKE", "PROXY_HEADER"})  # see Expected.state
NOT_COVERED = {
    "flushed": ("timed core model", "when replies leave the socket is the server's, not the protocol's"),
    "abort": ("timed core model", "a reset or a write error ends a session with nothing left to predict"),
    "CLOSED": ("timed core model", "the model predicts what is sent; CLOSED follows once it has been sent"),
}


def too_long(max_line: int) -> bytes:
    return f"error: line too long (max {max_line} bytes)".encode()


def disconnects(text: str) -> bool:
    """L4 as docs/protocol.md states it: strip, NFD, drop combining marks, case-fold; nothing beyond the BMP."""
    if any(ord(char) > 0xFFFF for char in text):
        return False
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
    """L9 (and every deadline like it): ``limit`` seconds since ``started`` have passed at ``now``; 0 is off.

    Where each clock starts: L9's at the protocol's start (the accept, the end of
    the TLS handshake or of the PROXY header) and again at every byte received;
    L14's at :func:`message_started`; the TLS handshake's (O6) and the PROXY
    header's (O2) at the accept, whatever arrives before they end.
    """
    return bool(limit) and now >= started + limit


def message_started(reads: list[tuple[float, bytes]]) -> float | None:
    """L14: when the unfinished message of ``reads`` ((time, bytes), in order) began; None when there is none.

    The stream is cut at its last LF; the message's clock is the time of the read
    that brought the first byte after it, which later bytes do not move.
    """
    stream = b"".join(data for _, data in reads)
    start = stream.rfind(LF) + 1
    if start == len(stream):
        return None
    ends = accumulate(len(data) for _, data in reads)  # where each read's bytes end in the stream
    return next(at for (at, _), end in zip(reads, ends, strict=True) if end > start)


def after_handshake(outcome: str) -> Expected | None:
    """None when the handshake completed (the protocol starts); else what the client gets: nothing, then a close."""
    if outcome == HANDSHAKE_DONE:
        return None
    if outcome not in HANDSHAKE_FAILURES:
        raise ValueError(f"unknown handshake outcome {outcome!r}")
    return Expected(b"", 0, "handshake_failed")


def line_replies(stream: bytes, max_line: int, end: str | None = None) -> Expected:
    """Replies to ``stream`` in line framing (L1-L8, L11), read as a whole.

    ``end`` is None while the client may still send, ``EOF`` after its
    half-close (L7), ``SHUTDOWN`` after the server was told to stop (L11),
    ``LINE_TIMEOUT`` once the unfinished message's deadline passed (L14).
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
    if end is None or (end == LINE_TIMEOUT and not tail):  # no unfinished message: no deadline
        return Expected(bytes(out), answered, None)
    if end == SHUTDOWN:  # the unterminated partial line is dropped
        return Expected(bytes(out + SHUTTING_DOWN + last_terminator), answered, "shutdown")
    if end == LINE_TIMEOUT:  # so is the unfinished message
        return Expected(bytes(out + LINE_TIMED_OUT + last_terminator), answered, "line_timeout")
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


def timed_line_replies(reads: list[tuple[float, bytes]], max_line: int, line_timeout: float, now: float) -> Expected:
    """L14 over reads that arrive at given times; the deadline is looked at before each read and at ``now``.

    A message's clock starts at the time of the read that brought its first
    byte (:func:`message_started`).
    """
    for count, (at, _) in enumerate([*reads, (now, b"")]):
        so_far = reads[:count]
        stream = b"".join(data for _, data in so_far)
        expected = line_replies(stream, max_line)
        if expected.closed:
            return expected
        first = message_started(so_far)
        if first is not None and deadline_due(first, line_timeout, at):
            return line_replies(stream, max_line, LINE_TIMEOUT)
    return expected


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


# -- the PROXY protocol header (O2), from HAProxy's proxy-protocol.txt ----------------------

#: What a header names, as the reference reads it: (version, command, family, source, destination);
#: addresses as the bytes ``inet_pton`` gives, so that two spellings of one IPv6 address compare equal.
ProxyFields = tuple[int, str, str, tuple[bytes, int] | None, tuple[bytes, int] | None]
REJECTED = "rejected"

_V2_SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rb"(?:" + _OCTET + rb"\.){3}" + _OCTET
_PORT = rb"(?:0|[1-9][0-9]{0,4})"
_V1_LINE = re.compile(rb"PROXY ([\x20-\x7e]*)\r\n")
_TCP4 = re.compile(rb"TCP4 (" + _IPV4 + rb") (" + _IPV4 + rb") (" + _PORT + rb") (" + _PORT + rb")")
_TCP6 = re.compile(rb"TCP6 ([0-9A-Fa-f:.]+) ([0-9A-Fa-f:.]+) (" + _PORT + rb") (" + _PORT + rb")")


def proxy_header(stream: bytes, accepts: str) -> tuple[ProxyFields, bytes] | str:
    """The header at the start of a whole stream (its end of stream included) and the bytes after it,
    or REJECTED.  ``accepts`` is "v1", "v2" or "any"."""
    if stream.startswith(b"PROXY") and accepts != "v2":
        return _proxy_v1(stream)
    if stream.startswith(_V2_SIGNATURE) and accepts != "v1":
        return _proxy_v2(stream)
    return REJECTED


def _proxy_v1(stream: bytes) -> tuple[ProxyFields, bytes] | str:
    line = _V1_LINE.match(stream)
    if line is None or line.end() > 107:
        return REJECTED
    body, rest = line.group(1), stream[line.end() :]
    if body == b"UNKNOWN" or body.startswith(b"UNKNOWN "):
        return (1, "PROXY", "UNSPEC", None, None), rest
    for pattern, family, af in ((_TCP4, "INET", socket.AF_INET), (_TCP6, "INET6", socket.AF_INET6)):
        match = pattern.fullmatch(body)
        if match is None:
            continue
        try:
            source, destination = (socket.inet_pton(af, match.group(i).decode()) for i in (1, 2))
        except OSError:
            return REJECTED
        ports = int(match.group(3)), int(match.group(4))
        if max(ports) > 65535:
            return REJECTED
        return (1, "PROXY", family, (source, ports[0]), (destination, ports[1])), rest
    return REJECTED


def _proxy_v2(stream: bytes) -> tuple[ProxyFields, bytes] | str:
    if len(stream) < 16:
        return REJECTED
    _, version_command, family_transport, length = struct.unpack("!12sBBH", stream[:16])
    version, command = version_command >> 4, version_command & 0x0F
    family, transport = family_transport >> 4, family_transport & 0x0F
    if version != 2 or command > 1 or family > 3 or transport > 2 or length > 1024:
        return REJECTED
    if len(stream) < 16 + length:
        return REJECTED
    block, rest = stream[16 : 16 + length], stream[16 + length :]
    names = {0: "UNSPEC", 1: "INET", 2: "INET6", 3: "UNIX"}
    if command == 0:
        return (2, "LOCAL", names[family], None, None), rest
    if family in (1, 2) and transport == 2:
        return REJECTED  # UDP
    if family not in (1, 2) or transport != 1:
        return (2, "PROXY", names[family], None, None), rest
    size = 4 if family == 1 else 16
    if length < 2 * size + 4:
        return REJECTED
    source, destination = block[:size], block[size : 2 * size]
    source_port, destination_port = struct.unpack("!HH", block[2 * size : 2 * size + 4])
    tlvs = block[2 * size + 4 :]
    while tlvs:
        if len(tlvs) < 3:
            return REJECTED
        (value_length,) = struct.unpack("!H", tlvs[1:3])
        if len(tlvs) < 3 + value_length:
            return REJECTED
        tlvs = tlvs[3 + value_length :]
    return (2, "PROXY", names[family], (source, source_port), (destination, destination_port)), rest


def proxy_fields(header: object) -> ProxyFields:
    """The core's ProxyHeader in the reference's terms."""

    def packed(address: tuple[str, int] | None) -> tuple[bytes, int] | None:
        if address is None:
            return None
        host, port = address
        return socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host), port

    return (header.version, header.command, header.family, packed(header.source), packed(header.destination))
