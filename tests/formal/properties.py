"""Properties of the sans-I/O core, as factories over the module that provides ``Session``.

Each factory takes the core (normally :mod:`statemachine.session`) and returns
a Hypothesis test for it.  test_properties.py runs them on the real core;
test_mutations.py runs the same properties on deliberately broken copies and
expects them to fail, which is how we know they bite.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from types import ModuleType

from hypothesis import assume, given
from hypothesis import strategies as st

from tests.formal import reference
from tests.formal.strategies import (
    any_char,
    cuts,
    deterministic,
    disconnect_variants,
    line_streams,
    near_misses,
    proxy_headers,
    spaces,
)

T0 = 1000.0  # the core never reads a clock: any start time does
ASCII_LOWER = re.compile(rb"[a-z]")
SERVER_LINE = b"error: "
Property = Callable[[], None]


def new_session(core: ModuleType, framing: str, max_line: int = 65536, hooked: bool = False, line_timeout: float = 0):
    """A session as the server makes it; ``hooked`` adds the logging hook (the per-line path)."""
    hook = (lambda text, reply: None) if hooked else None
    limits = core.Limits(framing=framing, max_line=max_line, idle_timeout=0, line_timeout=line_timeout)
    return core.Session(limits, T0, hook)


def feed(session, pieces: Iterable[bytes], end: str | None) -> bytes:
    """Each piece as one read, then the end of input the server would see."""
    out = b"".join(session.receive(piece, T0) for piece in pieces)
    if end == reference.EOF:
        out += session.end_of_stream()
    elif end == reference.SHUTDOWN:
        out += session.shutdown()
    return out


def assert_outcome(session, expected: reference.Expected) -> None:
    if expected.closed:
        assert not session.is_open, f"open, expected closed by {expected.reason}"
        assert session.reason == expected.reason
    else:
        assert session.is_open, f"closed by {session.reason}, expected open"


_ends = st.sampled_from([None, reference.EOF, reference.SHUTDOWN])
_max_lines = st.sampled_from([8, 64, 4096])


def framing_invariance(core: ModuleType, max_examples: int = 600, shrink: bool = True) -> Property:
    """L3 (with L1, L2, L5-L8): any split of a stream gives the reference's replies and close."""

    @deterministic(max_examples, shrink)
    @given(data=st.data(), max_line=_max_lines, end=_ends, hooked=st.booleans())
    def prop(data: st.DataObject, max_line: int, end: str | None, hooked: bool) -> None:
        stream = data.draw(line_streams(max_line), label="stream")
        expected = reference.line_replies(stream, max_line, end)
        whole = new_session(core, core.LINE, max_line, hooked)
        in_one = feed(whole, [stream] if stream else [], end)
        split = new_session(core, core.LINE, max_line, hooked)
        in_pieces = feed(split, data.draw(cuts(stream), label="segments"), end)
        assert in_pieces == in_one, "the replies depend on how the stream was cut"
        assert in_one == expected.replies
        assert_outcome(whole, expected)
        assert_outcome(split, expected)

    return prop


LINE_TIMEOUT = 10
# Gaps between reads, in whole seconds so that sums are exact: some land just on the deadline.
_gaps = st.lists(st.sampled_from([0, 1, 3, 9, 10, 11, 30]), min_size=1, max_size=40)


def line_deadline(core: ModuleType, max_examples: int = 500, shrink: bool = True) -> Property:
    """L14: reads at arbitrary times; the message deadline closes exactly when the reference says.

    Trickled bytes of one message do not restart its clock; a new message starts a new one.
    The server looks at the deadline whenever its timer fires: here, before each read and at the end.
    """

    @deterministic(max_examples, shrink)
    @given(data=st.data(), max_line=_max_lines, hooked=st.booleans())
    def prop(data: st.DataObject, max_line: int, hooked: bool) -> None:
        stream = data.draw(line_streams(max_line), label="stream")
        pieces = data.draw(cuts(stream), label="segments")
        gaps = data.draw(_gaps, label="gaps")
        times = [T0 + sum(gaps[: i + 1]) for i in range(len(pieces) + 1)]
        end = times[len(pieces)] if len(pieces) < len(gaps) else times[-1] + gaps[-1]
        expected = reference.timed_line_replies(list(zip(times, pieces, strict=False)), max_line, LINE_TIMEOUT, end)
        session = new_session(core, core.LINE, max_line, hooked, line_timeout=LINE_TIMEOUT)
        out = b""
        for at, piece in [*zip(times, pieces, strict=False), (end, b"")]:
            out += session.check_deadlines(at)
            if piece:
                out += session.receive(piece, at)
        assert out == expected.replies
        assert_outcome(session, expected)

    def check() -> None:
        _every_message_starts_its_own_clock(core)
        prop()

    return check


# The edge cases of L14 that random gaps reach only by luck, each a list of (time, read).
_DEADLINE_EDGES = [
    [(0, b"ab"), (9, b"c\nde"), (11, b"f"), (18, b"\n")],  # a message begun after a complete line, same read
    [(0, b"ab"), (9, b"c\n"), (11, b"de"), (20, b"f\n")],  # a message begun in a read of its own
    [(0, b"ab"), (9, b"c"), (10, b"d\n")],  # later bytes of the same message do not restart its clock
    [(0, b"ab\r"), (9, b"\ncd"), (19, b"e\n")],  # a CRLF split across reads ends the first message
]


def _every_message_starts_its_own_clock(core: ModuleType) -> None:
    """L14 on fixed timelines: each message's clock starts with its own first byte, however the reads fall."""
    for reads in _DEADLINE_EDGES:
        timeline = [(T0 + at, data) for at, data in reads]
        end = timeline[-1][0] + 1
        expected = reference.timed_line_replies(timeline, 64, LINE_TIMEOUT, end)
        for hooked in (False, True):
            session = new_session(core, core.LINE, 64, hooked, line_timeout=LINE_TIMEOUT)
            out = b""
            for at, data in [*timeline, (end, b"")]:
                out += session.check_deadlines(at)
                if data:
                    out += session.receive(data, at)
            assert out == expected.replies, reads
            assert_outcome(session, expected)


_line_text = st.text(any_char, max_size=40).map(lambda text: text.replace("\n", ""))


def echoes_have_no_lower_case(core: ModuleType, max_examples: int = 500, shrink: bool = True) -> Property:
    """L8 and L2: an echo is the text upper-cased, never holds a-z, and is never taken for a server line."""

    @deterministic(max_examples, shrink)
    @given(texts=st.lists(_line_text, min_size=1, max_size=5), crlf=st.booleans(), hooked=st.booleans())
    def prop(texts: list[str], crlf: bool, hooked: bool) -> None:
        assume(not any(reference.disconnects(text) for text in texts))
        terminator = b"\r\n" if crlf else b"\n"
        session = new_session(core, core.LINE, hooked=hooked)
        out = feed(session, [b"".join(text.encode() + terminator for text in texts)], None)
        replies = out.split(b"\n")[:-1]
        assert len(replies) == len(texts), "one reply per message (L3)"
        for text, reply in zip(texts, replies, strict=True):
            wire = reply + b"\n"
            text_sent = text[:-1] if text.endswith("\r") and not crlf else text  # a final CR joins the LF
            assert wire == text_sent.upper().encode() + (b"\r\n" if crlf or text.endswith("\r") else b"\n")
            assert not ASCII_LOWER.search(reply), f"lower case in an echo: {reply!r}"
            assert not reply.startswith(SERVER_LINE)

    return prop


def all_of_unicode_echoes(core: ModuleType) -> None:
    """L8 over every Unicode scalar value, 4,096 to a line, through one session."""
    session = new_session(core, core.LINE, hooked=False)
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and c not in (0x0A, 0x0D)]
    lines = ["".join(chars[i : i + 4096]) for i in range(0, len(chars), 4096)]
    out = feed(session, [line.encode() + b"\n" for line in lines], None)
    assert session.is_open
    replies = out.split(b"\n")[:-1]
    assert len(replies) == len(lines)
    for line, reply in zip(lines, replies, strict=True):
        assert reply == line.upper().encode()
        assert not ASCII_LOWER.search(reply), f"lower case in an echo of {line[:20]!r}..."


def disconnect_variants_close(core: ModuleType, max_examples: int = 400, shrink: bool = True) -> Property:
    """L4: every spelling the rule allows disconnects, answered with its upper case; later bytes are dropped."""

    @deterministic(max_examples, shrink)
    @given(
        word=disconnect_variants(),
        before=st.lists(_line_text, max_size=2),
        invalid_before=st.booleans(),
        crlf=st.booleans(),
        after=st.sampled_from([b"after\n", b"\xffafter\n", b"\xff\r\nafter\n"]),  # invalid lines too (L5)
        hooked=st.booleans(),
    )
    def prop(word: str, before: list[str], invalid_before: bool, crlf: bool, after: bytes, hooked: bool) -> None:
        assume(not any(reference.disconnects(text) for text in before))
        line = word.encode() + (b"\r\n" if crlf else b"\n")
        text, terminator = (line[:-2], b"\r\n") if line.endswith(b"\r\n") else (line[:-1], b"\n")
        head = b"".join(text.encode() + b"\n" for text in before) + (b"\xff\n" if invalid_before else b"")
        session = new_session(core, core.LINE, hooked=hooked)
        out = feed(session, [head + line + after], None)
        assert session.reason == "disconnect", f"{word!r} did not disconnect"
        assert not session.is_open
        assert out.endswith(text.decode().upper().encode() + terminator)
        assert b"AFTER" not in out

    return prop


def near_misses_stay_open(core: ModuleType, max_examples: int = 400, shrink: bool = True) -> Property:
    """L4: a text one edit away from the word is an ordinary message."""

    @deterministic(max_examples, shrink)
    @given(text=near_misses(), hooked=st.booleans())
    def prop(text: str, hooked: bool) -> None:
        session = new_session(core, core.LINE, hooked=hooked)
        out = feed(session, [text.encode() + b"\n"], None)
        assert session.is_open, f"{text!r} disconnected"
        assert out == text.upper().encode() + b"\n"
        last = new_session(core, core.LINE, hooked=hooked)  # the same text as the last message (L7)
        assert feed(last, [text.encode()], reference.EOF) == text.upper().encode()
        assert last.reason == "end_of_stream", f"{text!r} as the last message disconnected"

    return prop


_around_the_word = st.lists(
    st.one_of(
        st.sampled_from(["DESCONEXION", "desconexion", "Desconexión", "DESCONEXIÓN", "x", "X", "ẋ", "é"]),
        st.sampled_from(list("desconexionDESCONEXION")),
        spaces,
        st.characters(codec="utf-8", categories=["Mn"]),
        any_char,
    ),
    max_size=14,
).map("".join)


def disconnect_is_exactly_the_rule(core: ModuleType, max_examples: int = 800, shrink: bool = True) -> Property:
    """L4 both ways: over texts made of the word's pieces, marks and spaces, disconnect iff the rule says so."""

    @deterministic(max_examples, shrink)
    @given(text=_around_the_word.map(lambda text: text.replace("\n", "")), hooked=st.booleans())
    def prop(text: str, hooked: bool) -> None:
        if text.endswith("\r"):
            text = text[:-1] + "."  # a final CR would join the terminator
        session = new_session(core, core.LINE, hooked=hooked)
        feed(session, [text.encode() + b"\n"], None)
        assert (session.reason == "disconnect") == reference.disconnects(text), repr(text)
        last = new_session(core, core.LINE, hooked=hooked)  # the same text as the last message (L7)
        feed(last, [text.encode()], reference.EOF)
        assert (last.reason == "disconnect") == reference.disconnects(text), f"last message {text!r}"

    return prop


# Raw framing.  The tokens include bytes no character starts with (C0, E0 80)
# and characters cut between reads.
_RAW_TOKENS = [b"a", b"hola", b" ", b"\n", "ñ".encode(), "straße".encode(), "😀".encode(), b"\xff", b"\x80", b"\xc3("]
_RAW_TOKENS += [b"\xc0", b"\xe0\x80", b"\xf0\x80", b"\xf4\x90"]  # no character starts so
_RAW_TOKENS += ["😀".encode()[:2], "😀".encode()[2:], "ñ".encode()[:1]]  # characters cut between reads
_raw_chunk = st.one_of(
    st.lists(st.sampled_from(_RAW_TOKENS), min_size=1, max_size=6).map(b"".join),
    st.text(any_char, min_size=1, max_size=8).map(str.encode),
    disconnect_variants().map(str.encode),
)


def raw_reads_are_messages(core: ModuleType, max_examples: int = 500, shrink: bool = True) -> Property:
    """R1-R3: each read is one message, answered upper-cased with nothing added; the word closes."""

    @deterministic(max_examples, shrink)
    @given(chunks=st.lists(_raw_chunk, max_size=8), end=_ends, hooked=st.booleans())
    def prop(chunks: list[bytes], end: str | None, hooked: bool) -> None:
        expected = reference.raw_replies(chunks, end)
        session = new_session(core, core.RAW, hooked=hooked)
        assert feed(session, chunks, end) == expected.replies
        assert_outcome(session, expected)

    return prop


def raw_split_characters_wait(core: ModuleType, max_examples: int = 400, shrink: bool = True) -> Property:
    """R4: valid text cut anywhere, even inside a character, is answered as the text upper-cased."""

    @deterministic(max_examples, shrink)
    @given(data=st.data(), text=st.text(any_char, min_size=1, max_size=30), hooked=st.booleans())
    def prop(data: st.DataObject, text: str, hooked: bool) -> None:
        pieces = data.draw(cuts(text.encode()), label="reads")
        assume(not any(reference.disconnects(piece.decode(errors="ignore")) for piece in pieces))
        session = new_session(core, core.RAW, hooked=hooked)
        out = feed(session, pieces, reference.EOF)
        assert out == text.upper().encode()
        assert session.reason == "end_of_stream"

    return prop


_handshake_outcomes = st.sampled_from([reference.HANDSHAKE_DONE, *reference.HANDSHAKE_FAILURES])


def handshake_outcomes(core: ModuleType, max_examples: int = 300, shrink: bool = True) -> Property:
    """O6: nothing is answered during the TLS handshake; once done, the session is a plain one (the
    reference's replies); every failure, the deadline included, closes it with nothing sent."""

    @deterministic(max_examples, shrink)
    @given(data=st.data(), outcome=_handshake_outcomes, max_line=_max_lines, end=_ends, hooked=st.booleans())
    def prop(data: st.DataObject, outcome: str, max_line: int, end: str | None, hooked: bool) -> None:
        timeout = 10.0
        hook = (lambda text, reply: None) if hooked else None
        idle = 300.0
        limits = core.Limits(framing=core.LINE, max_line=max_line, idle_timeout=idle, handshake_timeout=timeout)
        session = core.Session(limits, T0, hook, start=core.HANDSHAKE)
        early = data.draw(st.binary(max_size=16), label="bytes handed over during the handshake")
        assert session.receive(early, T0) == b"", "an answer before the handshake ended"
        assert session.handshake_deadline() == T0 + timeout
        assert not session.check_handshake(T0 + timeout / 2)
        expected = reference.after_handshake(outcome)
        if outcome == reference.HANDSHAKE_DONE:
            session.handshake_done(T0 + 1)
            assert session.handshake_deadline() is None
            assert session.idle_deadline() == T0 + 1 + idle, "the idle clock (L9) starts when the handshake ends"
            assert not session.check_handshake(T0 + 2 * timeout), "the deadline outlived the handshake"
            stream = data.draw(line_streams(max_line), label="stream")
            expected = reference.line_replies(stream, max_line, end)
            assert feed(session, data.draw(cuts(stream), label="segments"), end) == expected.replies
            assert_outcome(session, expected)
            return
        if outcome == "bad":
            session.handshake_failed()
        elif outcome == "timeout":
            assert session.check_handshake(T0 + timeout)
        elif outcome == reference.EOF:
            assert session.end_of_stream() == b""
        else:
            assert session.shutdown() == b""
        assert session.state == "CLOSED" and session.reason == expected.reason
        assert feed(session, [b"hola\n"], end) == expected.replies, "a failed handshake answered"

    return prop


# -- the PROXY protocol header (O2): the parser, then the session's header phase ----------

_accepts = st.sampled_from(["any", "v1", "v2"])


def parse_outcome(proxy: ModuleType, pieces: list[bytes], accepts: str) -> tuple[reference.ProxyFields, bytes] | str:
    """Feed ``pieces`` read by read, then end the stream: the header and every byte after it, or REJECTED."""
    parser = proxy.ProxyParser(accepts)
    try:
        for i, piece in enumerate(pieces):
            header = parser.feed(piece)
            if header is not None:
                return reference.proxy_fields(header), parser.leftover + b"".join(pieces[i + 1 :])
        parser.finish()
    except proxy.ProxyRejected as exc:
        assert exc.reason, "a rejection says why"
        return reference.REJECTED
    raise AssertionError("finish() accepted an incomplete header")


def _fits(header: bytes, accepts: str) -> bool:
    return accepts == "any" or (accepts == "v1") == header.startswith(b"PROXY")


def proxy_split_invariance(proxy: ModuleType, max_examples: int = 400, shrink: bool = True) -> Property:
    """Any split of a valid header (and what follows it) gives the reference's header and the same leftover."""

    @deterministic(max_examples, shrink)
    @given(data=st.data(), header=proxy_headers(), after=st.binary(max_size=24), accepts=_accepts)
    def prop(data: st.DataObject, header: bytes, after: bytes, accepts: str) -> None:
        stream = header + after
        expected = reference.proxy_header(stream, accepts)
        if _fits(header, accepts):
            assert expected != reference.REJECTED and expected[1] == after, "the generator made a bad header"
        else:
            assert expected == reference.REJECTED
        assert parse_outcome(proxy, [stream], accepts) == expected
        assert parse_outcome(proxy, data.draw(cuts(stream), label="reads"), accepts) == expected

    return prop


def proxy_truncations_rejected(proxy: ModuleType, max_examples: int = 200, shrink: bool = True) -> Property:
    """Every strict prefix of a valid header, read whole or a byte at a time, then the end of stream: rejected."""

    @deterministic(max_examples, shrink)
    @given(header=proxy_headers())
    def prop(header: bytes) -> None:
        for size in range(len(header)):
            prefix = header[:size]
            assert parse_outcome(proxy, [prefix], "any") == reference.REJECTED, f"accepted {prefix!r}"
            assert parse_outcome(proxy, [bytes([b]) for b in prefix], "any") == reference.REJECTED

    return prop


#: Bytes a corruption puts in: mostly the ones a header is made of, so that it can look valid.
_header_bytes = st.one_of(st.sampled_from(b"0123456789abcdefABCDEF.: \r\n\x00\x11\x21"), st.integers(0, 255))


def _v1_number_starts(header: bytes) -> list[int]:
    """Where the IPv4 numbers and the ports of a TCP4/TCP6 line begin."""
    if not header.startswith((b"PROXY TCP4 ", b"PROXY TCP6 ")):
        return []
    fields = header[:-2].split(b" ")
    starts, at = [], 0
    for index, field in enumerate(fields):
        if index >= 4 or (index >= 2 and header.startswith(b"PROXY TCP4")):
            starts.extend(at + i for i, part in enumerate(field) if i == 0 or field[i - 1] == ord("."))
        at += len(field) + 1
    return starts


@st.composite
def _corrupted(draw: st.DrawFn) -> tuple[bytes, bytes, bool]:
    """A valid header with one byte replaced, dropped or added, or one of the breaks the format
    names (a leading zero in a v1 number, a v1 line ended by LF alone or over 107 bytes, a v2
    version other than 2, a v2 length over the cap, a TLV cut short).  The flag is True when
    the result must be a rejection: a named break, or a fixed byte changed (v1: "PROXY ",
    the separators, CRLF; v2: the signature)."""
    header = draw(proxy_headers())
    edit = draw(st.sampled_from(["replace", "drop", "insert"] * 2 + ["named"]))
    if edit == "named":
        broken = [b for b in _named_breaks(draw, header) if b is not None]
        if broken:
            return draw(st.sampled_from(broken)), header, True
        edit = "insert"
    at = draw(st.integers(0, len(header) - 1))
    if header.startswith(b"PROXY"):
        tcp = not header.startswith(b"PROXY UNKNOWN")
        line_end = len(header) - 2
        fixed = at < 6 or at >= line_end or (tcp and header[at] == 0x20)
    else:
        fixed = at < 12
    if edit == "replace":
        byte = draw(_header_bytes.filter(lambda b: b != header[at]))
        return header[:at] + bytes([byte]) + header[at + 1 :], header, fixed
    if edit == "drop":
        return header[:at] + header[at + 1 :], header, fixed
    byte = draw(_header_bytes)
    return header[:at] + bytes([byte]) + header[at:], header, fixed and at < 6


def _named_breaks(draw: st.DrawFn, header: bytes) -> list[bytes | None]:
    if header.startswith(b"PROXY"):
        starts = _v1_number_starts(header)
        zero = draw(st.sampled_from(starts)) if starts else None
        return [
            header[:zero] + b"0" + header[zero:] if zero is not None else None,
            header[:-2] + b"\n",
            b"PROXY UNKNOWN " + b"f" * (108 - 16) + b"\r\n",  # 108 bytes
        ]
    version = draw(st.sampled_from([0, 1, 3, 4, 15]))
    length = draw(st.integers(1025, 2048))  # and the bytes to fill it: the header is whole, only too long
    oversized = header[:14] + struct.pack("!H", length) + header[16:]
    addressed = header[12] == 0x21 and header[13] in (0x11, 0x21)
    (old_length,) = struct.unpack("!H", header[14:16])
    return [
        header[:12] + bytes([version << 4 | header[12] & 0x0F]) + header[13:],
        oversized + bytes(16 + length - len(oversized)),
        header[:14] + struct.pack("!H", old_length + 2) + header[16:] + b"\x01\x00" if addressed else None,
    ]


def proxy_corruptions_rejected(proxy: ModuleType, max_examples: int = 800, shrink: bool = True) -> Property:
    """A corrupted header is rejected, or read exactly as the reference reads those bytes; a corrupted
    fixed byte is always rejected.  Never a header with other data, never its bytes left as input."""

    @deterministic(max_examples, shrink)
    @given(data=st.data(), corrupted=_corrupted(), after=st.sampled_from([b"", b"hola\n", b"\r\n", b"\n\n"]))
    def prop(data: st.DataObject, corrupted: tuple[bytes, bytes, bool], after: bytes) -> None:
        header, original, fixed = corrupted
        stream = header + after
        expected = reference.proxy_header(stream, "any")
        if fixed and not stream.startswith(original):  # a dropped LF that the next bytes put back is no corruption
            assert expected == reference.REJECTED, "the reference accepts a broken fixed byte"
        assert parse_outcome(proxy, [stream], "any") == expected
        assert parse_outcome(proxy, data.draw(cuts(stream), label="reads"), "any") == expected
        # and every break the format names, on every example: whether one is drawn above is chance
        for broken in filter(None, _named_breaks(data.draw, original)):
            assert reference.proxy_header(broken + after, "any") == reference.REJECTED, "the reference accepts a break"
            assert parse_outcome(proxy, [broken + after], "any") == reference.REJECTED

    return prop


def proxy_session_phase(core: ModuleType, max_examples: int = 400, shrink: bool = True) -> Property:
    """O2 through the session: after a valid header, the replies are the reference's for what follows it,
    however the stream is cut; a missing, broken or cut header gets no byte back, no message is read,
    and at the end of input the session is CLOSED by ``proxy_rejected``."""

    @deterministic(max_examples, shrink)
    @given(
        data=st.data(),
        header=st.one_of(proxy_headers(), _corrupted().map(lambda c: c[0]), st.just(b"")),
        max_line=_max_lines,
        end=_ends,
        framing_ok=st.booleans(),
    )
    def prop(data: st.DataObject, header: bytes, max_line: int, end: str | None, framing_ok: bool) -> None:
        stream = header + data.draw(line_streams(max_line), label="after")
        seen: list[str] = []
        limits = core.Limits(max_line=max_line, idle_timeout=0, proxy="any")
        session = core.Session(limits, T0, (lambda text, reply: seen.append(text)) if framing_ok else None)
        out = feed(session, data.draw(cuts(stream), label="reads"), end)
        expected = reference.proxy_header(stream, "any")
        if expected == reference.REJECTED:
            assert out == b"", "a reply before a valid PROXY header"
            assert seen == [], "a message read before a valid PROXY header"
            if end is not None or session.state != "PROXY_HEADER":
                assert (session.state, session.reason) == ("CLOSED", "proxy_rejected")
            return
        fields, rest = expected
        assert reference.proxy_fields(session.header) == fields
        replies = reference.line_replies(rest, max_line, end)
        assert out == replies.replies
        assert_outcome(session, replies)

    return prop
