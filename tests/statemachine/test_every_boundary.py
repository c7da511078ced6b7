"""Two rules checked at every boundary they have, against the reference model.

* L1-L3 through the logging path: a block of several lines goes through
  ``split_block`` when the console logs messages; each line is one message,
  logged once with its reply, whatever mix of LF, CRLF, lone CR, empty and
  invalid lines the block holds.
* R4 in raw framing: a character cut between reads at any byte waits for the
  rest (its held bytes are answered with the next read, never as an error);
  for every character length (1 to 4 bytes, at the edges of each range) and
  every cut of a text into two and three reads.
"""

from __future__ import annotations

import itertools

import pytest

from statemachine import Limits, Session
from statemachine.session import RAW
from tests.formal import reference
from tests.statemachine.feeding import T0, recorded

TEXTS = [b"", b"a", b"\r", b"a\rb", b"\xff", "ñ".encode(), b"desconexion"]
TERMINATORS = [b"\n", b"\r\n"]
LINES = [text + end for text in TEXTS for end in TERMINATORS]


def _logged(text: bytes) -> tuple[str, str]:
    """What the logging hook sees for one message: its text (an invalid byte as a surrogate, which the log
    writes as ``\\xNN``, S3) and its reply."""
    try:
        decoded = text.decode()
    except UnicodeDecodeError:
        return text.decode(errors="surrogateescape"), "error: invalid utf-8"
    return decoded, decoded.upper()


@pytest.mark.parametrize("count", [2, 3])
def test_each_line_of_a_block_is_one_logged_message(count):
    for lines in itertools.product(LINES, repeat=count):
        block = b"".join(lines)
        expected = reference.line_replies(block, 64)
        calls, hook = recorded()
        session = Session(Limits(max_line=64), T0, on_message=hook)
        assert session.receive(block, T0) == expected.replies, block
        assert session.reason == expected.reason, block
        texts = [line[:-2] if line.endswith(b"\r\n") else line[:-1] for line in lines][: expected.messages]
        assert calls == [_logged(text) for text in texts], block


# Characters of every UTF-8 length, at the edges of each length's range.
CHARACTERS = ["a", "\x7f", "\x80", "ñ", "\u07ff", "\u0800", "€", "\uffff", "\U00010000", "😀", "\U0010ffff"]


def _raw(reads: list[bytes]) -> tuple[bytes, Session]:
    session = Session(Limits(framing=RAW), T0)
    out = b"".join(session.receive(read, T0) for read in reads)
    return out + session.end_of_stream(), session


@pytest.mark.parametrize("char", CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_character_cut_at_any_byte_waits_for_the_rest(char):
    data = f"x{char}y{char}".encode()
    for cuts in [*itertools.combinations(range(1, len(data)), 1), *itertools.combinations(range(1, len(data)), 2)]:
        bounds = [0, *cuts, len(data)]
        reads = [data[a:b] for a, b in itertools.pairwise(bounds)]
        out, session = _raw(reads)
        assert out == reference.raw_replies(reads, reference.EOF).replies, reads
        assert out == data.decode().upper().encode(), reads
        assert session.reason == "end_of_stream"


@pytest.mark.parametrize("char", [c for c in CHARACTERS if len(c.encode()) > 1], ids=lambda c: f"U+{ord(c):04X}")
def test_a_character_never_finished_is_invalid_at_end_of_stream(char):
    """The held bytes of a character that never completes are a last message, and not valid UTF-8 (L5, L7)."""
    encoded = char.encode()
    for size in range(1, len(encoded)):
        reads = [b"ok", encoded[:size]]
        out, session = _raw(reads)
        assert out == reference.raw_replies(reads, reference.EOF).replies
        assert out == b"OKerror: invalid utf-8\n"
