"""Finding the disconnect word in a whole block (L4), in one pass whatever the block holds (L16).

``find_disconnect`` replaces the check line by line on the hot path, so it must
say exactly what the rule says of each line: where the first line that is the
word starts, and -1 when no line is.  ``is_disconnect``, the check of one
message, is held to the same rule.
"""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from statemachine import session as session_module
from statemachine import text as text_module
from statemachine.session import Limits, Session
from statemachine.text import _TABLES, _TABLES_VERSION, find_disconnect, fold_tables, is_disconnect

ASCII_SPACE = [chr(c) for c in range(128) if chr(c).isspace() and chr(c) != "\n"]
ACCENTS = ["\u0301", "\u0300", "\u0308", "\u0303", "\u0327", "\u030c", "\u0f73", "\u0344"]


def the_rule(text: str) -> bool:
    """L4 as docs/protocol.md words it: stripped, no character beyond the plane, folds to the word."""
    stripped = text.strip()
    return all(char <= "\uffff" for char in stripped) and text_module.fold(stripped) == "desconexion"


def first_disconnect(block: str) -> int:
    """The plain definition: the start of the first line that is the word."""
    start = 0
    for line in block.split("\n")[:-1]:
        if the_rule(line):
            return start
        start += len(line) + 1
    return -1


def test_every_ascii_space_around_the_word():
    for left in ["", *ASCII_SPACE]:
        for right in ["", *ASCII_SPACE]:
            line = f"{left}DesconeXion{right}"
            assert is_disconnect(line), repr(line)
            assert find_disconnect(f"hola\n{line}\nadiós\n") == 5, repr(line)


def test_one_extra_ascii_character_is_not_the_word():
    for code in range(128):
        char = chr(code)
        line = f"desconexion{char}"
        assert is_disconnect(line) == (char.isspace()), repr(line)


@pytest.mark.timeout(120)
def test_the_character_classes_are_what_all_of_unicode_folds_to():
    """Each class holds exactly the characters that fold to that letter (or to nothing, or are white space)."""
    derived = fold_tables()
    if unicodedata.unidata_version == _TABLES_VERSION:
        assert derived == _TABLES
        assert text_module._FOLD_TABLES is _TABLES  # on their own version, the stored tables: no second at import
    else:
        assert derived == text_module._FOLD_TABLES  # on any other, this Python's own
    assert sorted(derived) == sorted(_TABLES)
    for name, ranges in derived.items():
        for span in ranges.split():
            low, _, high = span.partition("-")
            for code in range(int(low, 16), int(high or low, 16) + 1):
                char = chr(code)
                if name == "ws":
                    assert char.isspace() and char != "\n"
                else:
                    assert text_module.fold(char) == ("" if name == "empty" else name), hex(code)
    assert sys.maxunicode == 0x10FFFF


@st.composite
def disguised_word(draw) -> str:
    """The word with random case, accents (composed or not) and surrounding white space."""
    letters = []
    for letter in "desconexion":
        letter = letter.upper() if draw(st.booleans()) else letter
        marks = "".join(draw(st.lists(st.sampled_from(ACCENTS), max_size=2)))
        letters.append(letter + marks)
    word = "".join(letters)
    if draw(st.booleans()):
        word = unicodedata.normalize(draw(st.sampled_from(["NFC", "NFD"])), word)
    space = st.text(st.sampled_from([" ", "\t", "\r", "\x0b", "\x0c", "\u00a0", "\u3000", "\x1c"]), max_size=3)
    return draw(space) + word + draw(space)


_line = st.one_of(
    st.text(max_size=12),
    disguised_word(),
    st.text(st.sampled_from(list("desconexionDESCONEXIONẋ\u0301 \t\u034f\u0f73ñ")), max_size=14),
).map(lambda line: line.replace("\n", " "))


@settings(max_examples=1500, derandomize=True, deadline=None)
@given(lines=st.lists(_line, max_size=8))
@example(lines=["DESCONEXION"])
@example(lines=["ñx", "desconexio\u0301n"])
@example(lines=["\u0301 desconexion"])
@example(lines=["desconexion\u034f"])
@example(lines=["desconexion\u0f73"])
@example(lines=["😀", "desconexio\U0001d167n"])  # a mark beyond the Basic Multilingual Plane
@example(lines=["desconexio\U0001d167n\U0001d400"])  # a letter-like character beyond it is not a mark
def test_find_disconnect_is_the_rule_line_by_line(lines):
    block = "".join(line + "\n" for line in lines)
    assert find_disconnect(block) == first_disconnect(block)


@settings(max_examples=1500, derandomize=True, deadline=None)
@given(text=st.one_of(_line, st.lists(_line, min_size=2, max_size=3).map("\n".join), st.text(max_size=14)))
@example(text="desconexio\U0001d167n")
@example(text="desconexion\ndesconexion")  # a raw read of two lines is not the word
@example(text="Desconexio\u0301n \r")
@example(text="desconexion\udcfe")  # a surrogate is a character like any other here
def test_is_disconnect_is_the_rule(text):
    """The exact check (a raw read, the tail, the word's own line) says what the rule says, LFs and all."""
    assert is_disconnect(text) == the_rule(text)


@pytest.mark.parametrize("line", ["ñx", "éx desconexio", "Desconexión " * 10])
def test_a_long_non_ascii_message_is_checked_without_fold(monkeypatch, line):
    """A raw read is one message of up to 64 KiB: the exact check must not take a Python step per character (L16)."""
    folds = _count_calls(monkeypatch, text_module, "fold")
    text = (line * (65536 // len(line.encode())))[: 65536 // 3]
    assert not is_disconnect(text)
    assert folds[0] == 0


# -- the shape of the work: nothing per line on the hot path (L16) ----------------------


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    calls = [0]
    real = getattr(module, name)

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize(
    "line",
    ["ñx\n".encode(), b"\xff\n", b"\xff\r\n", "desconexió\n".encode(), b"\x00\x1b\n", "ña\n".encode() + b"\xff\n"],
    ids=["non-ASCII with x", "invalid", "invalid CRLF", "near miss", "control", "valid and invalid"],
)
def test_a_read_of_costly_lines_makes_no_python_call_per_line(monkeypatch, line):
    """The content that once took the slow path line by line now costs a fixed number of calls per read."""
    per_line = _count_calls(monkeypatch, Session, "_reply_line")
    folds = _count_calls(monkeypatch, text_module, "fold")
    checks = _count_calls(monkeypatch, session_module, "is_disconnect")
    sess = Session(Limits(), 0.0)
    data = line * (65536 // len(line))
    reply = sess.receive(data, 0.0)
    assert sess.is_open and reply.count(b"\n") == data.count(b"\n")
    assert (per_line[0], folds[0], checks[0]) == (0, 0, 0)
