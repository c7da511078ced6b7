"""statemachine.text: the disconnect word (L4), its pre-filter, and UTF-8 boundaries (L5, R4)."""

from __future__ import annotations

import codecs
import itertools
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine.text import X_CHARS, fold, incomplete_tail, is_disconnect

# -- fold and the "x" pre-filter -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("DESCONEXION", "desconexion"),
        ("Desconexión", "desconexion"),
        ("Desconexio\u0301n", "desconexion"),
        ("ẊẋẌẍ", "xxxx"),
        ("Straße", "strasse"),
        ("ÑANDÚ", "nandu"),
    ],
)
def test_fold_drops_case_and_accents(text, folded):
    assert fold(text) == folded


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=12))
def test_fold_is_character_by_character(text):
    """fold(text) is the concatenation of each character's fold.

    NFD decomposes each character on its own and only reorders combining marks,
    which fold drops; casefold has no context.  So a text folds to something
    holding "x" only if one of its characters does, and the exhaustive test below
    makes ``X_CHARS`` a sound pre-filter for whole texts.
    """
    assert fold(text) == "".join(fold(char) for char in text)


def test_x_chars_is_exactly_what_folds_to_hold_an_x():
    folds_to_x = {
        chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF and "x" in fold(chr(code))
    }
    assert folds_to_x == X_CHARS


# -- is_disconnect -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "DESCONEXION",
        "desconexion",
        "Desconexión",
        "DESCONEXIÓN",
        "Desconexio\u0301n",
        " \tDESCONEXION \r",
        "\u00a0\u2003desconexion\u3000",
        "DÉSCÖNÈẊÍÕÑ",
        "desconeẍion",
    ],
)
def test_the_word_and_its_variants(text):
    assert is_disconnect(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "DESCONEXIONES",
        "DES CONEXION",
        "xDESCONEXION",
        "DESCONEXION.",
        "DESCONEXIO",
        "DESCONEXI0N",
        "DESCONECSION",
        "DESCONEXION\x00",
        "DESCONEXION\u200b",  # zero-width space is not white space
        "desconexion desconexion",
        # combining marks beyond the Basic Multilingual Plane are not accents (docs/protocol.md)
        "desconexio\U0001d167n",
        "D\U000101fdESCONEXION",
        "DESCONEXION\U0001e944",
        "\U0001d165desconexion",
    ],
)
def test_near_misses(text):
    assert not is_disconnect(text)


# -- incomplete_tail against the strict decoder ---------------------------------------

# One byte of every kind that matters to UTF-8: ASCII, continuation bytes at the edges
# of the ranges that follow E0/ED/F0/F4, every kind of lead, and bytes that never occur.
BOUNDARY_BYTES = [
    0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC,
    0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF7, 0xF8, 0xFB, 0xFC, 0xFE, 0xFF,
]  # fmt: skip


def short_endings() -> list[bytes]:
    """Nothing at all, every ending of one or two bytes, and three-byte endings over the boundary bytes."""
    endings = [b""] + [bytes([a]) for a in range(256)]
    endings += [bytes(pair) for pair in itertools.product(range(256), repeat=2)]
    endings += [bytes(triple) for triple in itertools.product(BOUNDARY_BYTES, repeat=3)]
    return endings


def decoder_holds(data: bytes) -> int:
    """How many bytes at the end of ``data`` the strict incremental decoder keeps waiting for more."""
    for size in (3, 2, 1):
        if size > len(data):
            continue
        tail = data[-size:]
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        try:
            text = decoder.decode(tail, final=False)
        except UnicodeDecodeError:
            continue
        if text == "" and decoder.getstate()[0] == tail:
            return size
    return 0


ENDINGS = short_endings()
HELD = {ending: decoder_holds(ending) for ending in ENDINGS}


@pytest.mark.parametrize("prefix", [b"", b"ok", "ñ".encode()])
def test_holds_what_the_decoder_waits_for(prefix):
    wrong = [e for e, held in HELD.items() if held and incomplete_tail(prefix + e) != held]
    assert wrong == []


def test_holds_nothing_of_text_the_decoder_accepts():
    def accepted(data: bytes) -> bool:
        try:
            data.decode()
        except UnicodeDecodeError:
            return False
        return True

    wrong = [e for e in ENDINGS if accepted(e) and incomplete_tail(e) != 0]
    assert wrong == []


def test_never_holds_a_sequence_that_starts_with_a_continuation_byte():
    for ending in ENDINGS:
        held = incomplete_tail(ending)
        assert 0 <= held <= 3
        if held:
            assert ending[-held] & 0xC0 == 0xC0, ending


def test_holds_nothing_the_decoder_rejects():
    wrong = [e for e, held in HELD.items() if not held and incomplete_tail(e)]
    assert wrong == []


def test_every_split_of_every_sequence_length():
    for char in ["a", "ñ", "€", "😀", "\U0010ffff", "\u0800", "\U00010000"]:
        encoded = char.encode()
        for cut in range(1, len(encoded)):
            assert incomplete_tail(b"pre" + encoded[:cut]) == cut
        assert incomplete_tail(b"pre" + encoded) == 0


def test_fold_still_drops_marks_beyond_the_plane_but_the_word_never_holds_one():
    """The fold is the text's (every combining mark dropped); the word is narrower: no character beyond the plane."""
    assert fold("desconexio\U0001d167n") == "desconexion"
    assert not is_disconnect("desconexio\U0001d167n")
    beyond = [chr(code) for code in range(0x10000, 0x20000) if unicodedata.combining(chr(code))]
    assert beyond, "no combining mark beyond the plane sampled"
    for mark in beyond:
        assert not is_disconnect(f"desconexio{mark}n"), hex(ord(mark))
