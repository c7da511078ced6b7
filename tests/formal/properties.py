"""Properties of the sans-I/O core, as factories over the module that provides ``Session``.

Each factory takes the core (normally :mod:`statemachine.session`) and returns
a Hypothesis test for it.  test_properties.py runs them on the real core;
test_mutations.py runs the same properties on deliberately broken copies and
expects them to fail, which is how we know they bite.
"""

from __future__ import annotations

import re
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

    return prop


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
        word=disconnect_variants(), before=st.lists(_line_text, max_size=2), crlf=st.booleans(), hooked=st.booleans()
    )
    def prop(word: str, before: list[str], crlf: bool, hooked: bool) -> None:
        assume(not any(reference.disconnects(text) for text in before))
        line = word.encode() + (b"\r\n" if crlf else b"\n")
        text, terminator = (line[:-2], b"\r\n") if line.endswith(b"\r\n") else (line[:-1], b"\n")
        head = b"".join(text.encode() + b"\n" for text in before)
        session = new_session(core, core.LINE, hooked=hooked)
        out = feed(session, [head + line + b"after\n"], None)
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
