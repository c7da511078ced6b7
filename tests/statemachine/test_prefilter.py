"""The hot path's pre-filter for the disconnect word never hides one (L4).

``may_hold_disconnect`` lets a whole block of lines skip the exact per-line
check; it may say True too often, never False when a line is the word.
"""

from __future__ import annotations

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from statemachine.text import is_disconnect, may_hold_disconnect

ASCII_SPACE = [chr(c) for c in range(128) if chr(c).isspace() and chr(c) != "\n"]
ACCENTS = ["\u0301", "\u0300", "\u0308", "\u0303", "\u0327", "\u030c"]


def test_every_ascii_space_around_the_word():
    for left in ["", *ASCII_SPACE]:
        for right in ["", *ASCII_SPACE]:
            line = f"{left}DesconeXion{right}"
            assert is_disconnect(line), repr(line)
            assert may_hold_disconnect(f"hola\n{line}\nadiós\n"), repr(line)


def test_one_extra_ascii_character_is_not_the_word():
    for code in range(128):
        char = chr(code)
        line = f"desconexion{char}"
        assert is_disconnect(line) == (char.isspace()), repr(line)


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
        word = unicodedata.normalize("NFC", word)
    space = st.text(st.sampled_from([" ", "\t", "\r", "\x0b", "\x0c", "\u00a0", "\u3000", "\x1c"]), max_size=3)
    return draw(space) + word + draw(space)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(word=disguised_word(), before=st.lists(st.text(max_size=12)), after=st.lists(st.text(max_size=12)))
@example(word="DESCONEXION", before=[], after=[])
def test_prefilter_never_hides_the_word(word, before, after):
    assert is_disconnect(word)
    lines = [line.replace("\n", " ") for line in before] + [word] + [line.replace("\n", " ") for line in after]
    assert may_hold_disconnect("\n".join(lines) + "\n")


@settings(max_examples=1000, derandomize=True, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=8))
def test_prefilter_false_means_no_line_disconnects(lines):
    block = "".join(line.replace("\n", " ") + "\n" for line in lines)
    if not may_hold_disconnect(block):
        assert not any(is_disconnect(line) for line in block.split("\n"))
