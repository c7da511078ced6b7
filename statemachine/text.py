"""Text rules of the protocol: the disconnect word (L4) and UTF-8 boundaries (L5, R4)."""

from __future__ import annotations

import re
import sys
import unicodedata

DISCONNECT_WORD = "DESCONEXION"
_FOLDED_WORD = DISCONNECT_WORD.casefold()

# Every code point whose fold (see ``fold``) contains "x".  A text that holds
# none of them cannot fold to "desconexion", so the hot path skips the exact
# check.  tests/statemachine/test_text.py derives this set from all of Unicode.
X_CHARS = frozenset("xX\u1e8a\u1e8b\u1e8c\u1e8d")
_X_CHARS_IN_ORDER = sorted(X_CHARS)
# What a line that was not UTF-8 becomes before the search (statemachine.session.mark_invalid_lines):
# a surrogate, which no valid text holds; the second for a line that ended in CRLF.  A mark ends
# the line before it, so the pattern allows marks there.
INVALID_MARK = "\udcfe"
INVALID_CR_MARK = "\udcfd"
# For ASCII text the fold is just ``lower()``; the white space ``str.strip``
# removes is the ASCII ``isspace()`` set, minus LF, which ends a line.
_ASCII_SPACE = "[\t\x0b\x0c\r\x1c-\x1f ]"
# Every disconnect-line pattern starts at the LF before the line, and the text
# is searched with an LF put first: a literal first lets the engine skip from LF
# to LF instead of trying the pattern at every character.
_ASCII_DISCONNECT_LINE = re.compile(
    f"\n{_ASCII_SPACE}*desconexion{_ASCII_SPACE}*$", re.IGNORECASE | re.MULTILINE | re.ASCII
)


# -- finding the disconnect line in a whole block, in one pass (L4, L16) ------------
#
# ``fold`` works character by character (see tests/statemachine/test_text.py), so a
# stripped text folds to "desconexion" exactly when it is a sequence of characters
# that each fold to one letter of the word, in order, or to nothing (combining
# marks).  The classes below are those characters, derived from all of Unicode
# (the test derives them again and compares); with them one regular expression
# finds the disconnect line in a block of any content in one pass, where checking
# line by line cost microseconds per line.  Generated for the Unicode version of
# the Python the project is tested on; another version derives its own at import.
_TABLES_VERSION = "14.0.0"
_TABLES = {
    "d": "0044 0064 010E-010F 1E0A-1E13",
    "e": "0045 0065 00C8-00CB 00E8-00EB 0112-011B 0204-0207 0228-0229 1E14-1E1D 1EB8-1EC7",
    "s": "0053 0073 015A-0161 017F 0218-0219 1E60-1E69 1E9B",
    "c": "0043 0063 00C7 00E7 0106-010D 1E08-1E09",
    "o": (
        "004F 006F 00D2-00D6 00F2-00F6 014C-0151 01A0-01A1 01D1-01D2 01EA-01ED 020C-020F 022A-0231 1E4C-1E53 1ECC-1EE3"
    ),
    "n": "004E 006E 00D1 00F1 0143-0148 01F8-01F9 1E44-1E4B",
    "x": "0058 0078 1E8A-1E8D",
    "i": "0049 0069 00CC-00CF 00EC-00EF 0128-0130 01CF-01D0 0208-020B 1E2C-1E2F 1EC8-1ECB",
    "ws": "0009 000B-000D 001C-0020 0085 00A0 1680 2000-200A 2028-2029 202F 205F 3000",
    "empty": (
        "0300-034E 0350-036F 0483-0487 0591-05BD 05BF 05C1-05C2 05C4-05C5 05C7 0610-061A 064B-065F 0670 "
        "06D6-06DC 06DF-06E4 06E7-06E8 06EA-06ED 0711 0730-074A 07EB-07F3 07FD 0816-0819 081B-0823 0825-0827 "
        "0829-082D 0859-085B 0898-089F 08CA-08E1 08E3-08FF 093C 094D 0951-0954 09BC 09CD 09FE 0A3C 0A4D 0ABC "
        "0ACD 0B3C 0B4D 0BCD 0C3C 0C4D 0C55-0C56 0CBC 0CCD 0D3B-0D3C 0D4D 0DCA 0E38-0E3A 0E48-0E4B 0EB8-0EBA "
        "0EC8-0ECB 0F18-0F19 0F35 0F37 0F39 0F71-0F75 0F7A-0F7D 0F80-0F84 0F86-0F87 0FC6 1037 1039-103A 108D "
        "135D-135F 1714-1715 1734 17D2 17DD 18A9 1939-193B 1A17-1A18 1A60 1A75-1A7C 1A7F 1AB0-1ABD 1ABF-1ACE "
        "1B34 1B44 1B6B-1B73 1BAA-1BAB 1BE6 1BF2-1BF3 1C37 1CD0-1CD2 1CD4-1CE0 1CE2-1CE8 1CED 1CF4 1CF8-1CF9 "
        "1DC0-1DFF 20D0-20DC 20E1 20E5-20F0 2CEF-2CF1 2D7F 2DE0-2DFF 302A-302F 3099-309A A66F A674-A67D "
        "A69E-A69F A6F0-A6F1 A806 A82C A8C4 A8E0-A8F1 A92B-A92D A953 A9B3 A9C0 AAB0 AAB2-AAB4 AAB7-AAB8 "
        "AABE-AABF AAC1 AAF6 ABED FB1E FE20-FE2F 101FD 102E0 10376-1037A 10A0D 10A0F 10A38-10A3A 10A3F 10AE5-10AE6 "
        "10D24-10D27 10EAB-10EAC 10F46-10F50 10F82-10F85 11046 11070 1107F 110B9-110BA 11100-11102 "
        "11133-11134 11173 111C0 111CA 11235-11236 112E9-112EA 1133B-1133C 1134D 11366-1136C 11370-11374 "
        "11442 11446 1145E 114C2-114C3 115BF-115C0 1163F 116B6-116B7 1172B 11839-1183A 1193D-1193E 11943 "
        "119E0 11A34 11A47 11A99 11C3F 11D42 11D44-11D45 11D97 16AF0-16AF4 16B30-16B36 16FF0-16FF1 1BC9E "
        "1D165-1D169 1D16D-1D172 1D17B-1D182 1D185-1D18B 1D1AA-1D1AD 1D242-1D244 1E000-1E006 1E008-1E018 "
        "1E01B-1E021 1E023-1E024 1E026-1E02A 1E130-1E136 1E2AE 1E2EC-1E2EF 1E8D0-1E8D6 1E944-1E94A"
    ),
}


def fold_tables() -> dict[str, str]:
    """The character classes above, derived from this Python's Unicode data (about a second)."""
    classes: dict[str, list[int]] = {name: [] for name in _TABLES}
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        if char.isspace():
            if char != "\n":
                classes["ws"].append(code)
            continue
        folded = fold(char)
        name = folded or "empty"
        if name in classes:
            classes[name].append(code)
    return {name: _ranges(codes) for name, codes in classes.items()}


def _ranges(codes: list[int]) -> str:
    spans = []
    for code in codes:
        if spans and spans[-1][1] == code - 1:
            spans[-1][1] = code
        else:
            spans.append([code, code])
    return " ".join(f"{low:04X}" if low == high else f"{low:04X}-{high:04X}" for low, high in spans)


def _char_class(ranges: str, high: int = sys.maxunicode) -> str:
    """A regular-expression class of the ``ranges`` up to ``high`` ("" if none)."""
    parts = []
    for span in ranges.split():
        first, _, last = span.partition("-")
        first_code, last_code = int(first, 16), min(int(last or first, 16), high)
        if first_code <= last_code:
            parts.append(re.escape(chr(first_code)) + f"-{re.escape(chr(last_code))}")
    return "[" + "".join(parts) + "]" if parts else ""


def _disconnect_line_pattern(tables: dict[str, str]) -> re.Pattern[str]:
    """The exact pattern of a disconnect line, for text of any content.

    Every class is within the Basic Multilingual Plane, which the engine tests
    with one table look-up: a character beyond it is never part of the word
    (see ``is_disconnect``), so it simply ends the match.  The look-ahead after
    the LF turns away at once a line that cannot start the word or is too short
    to hold it: short lines are the most a read holds.
    """
    space = _char_class(tables["ws"])
    mark = _char_class(tables["empty"], high=0xFFFF)
    first_letter = _char_class(tables[_FOLDED_WORD[0]])
    can_start = "[" + space[1:-1] + mark[1:-1] + first_letter[1:-1] + "]"
    space_or_invalid = "[" + space[1:-1] + INVALID_CR_MARK + INVALID_MARK + "]"
    # The classes are disjoint, so no repeat ever needs to give a character back: possessive
    # repeats (``*+``) match the same lines and spare the engine its backtracking records.
    letters = f"{mark}*+".join(_char_class(tables[letter]) for letter in _FOLDED_WORD)
    # A line of the word holds at least its letters: a shorter one is turned away at once.
    long_enough = f"[^\\n]{{{len(_FOLDED_WORD) - 1}}}"
    return re.compile(
        f"\n(?={can_start}{long_enough}){space}*+{mark}*+{letters}{mark}*+{space_or_invalid}*+$", re.MULTILINE
    )


def may_disconnect(text: str) -> bool:
    """False when no line of ``text`` can be the disconnect word: it holds no character of ``X_CHARS``.

    Six searches for one character each, which CPython runs as ``memchr``: a
    fraction of what a character class costs the regular-expression engine,
    which calls a function per character.
    """
    return any(char in text for char in _X_CHARS_IN_ORDER)


def fold(text: str) -> str:
    """Fold case and drop accents: NFD, remove combining marks, casefold."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def is_disconnect(text: str) -> bool:
    """True when ``text`` is the disconnect command (L4).

    The text stripped of surrounding white space must fold to ``desconexion``:
    case and accents are ignored (``Desconexión``), nothing else is.  Accents are
    the combining marks of the Basic Multilingual Plane, which hold every accent a
    letter of the word can take; a character beyond the plane, combining or not,
    is never part of the word (docs/protocol.md says why).
    """
    stripped = text.strip()
    if stripped.isascii():
        return stripped.lower() == _FOLDED_WORD
    if "\n" in stripped or not may_disconnect(stripped) or INVALID_MARK in stripped or INVALID_CR_MARK in stripped:
        return False
    # The block search's pattern, for one line: C-level whatever the text holds, where ``fold`` takes a
    # Python step per character (a raw read is one message of up to 64 KiB, L16).  Both are held to
    # the rule as docs/protocol.md words it by tests/statemachine/test_prefilter.py.
    return _DISCONNECT_LINE.match("\n" + stripped) is not None


_FOLD_TABLES = _TABLES if unicodedata.unidata_version == _TABLES_VERSION else fold_tables()
_DISCONNECT_LINE = _disconnect_line_pattern(_FOLD_TABLES)


def find_disconnect(text: str) -> int:
    """Where the first line of ``text`` (lines end in LF) that is the disconnect word starts, or -1.

    One pass over the text, whatever it holds: a cost that grows with its size,
    never with its content (L16).
    """
    line = find_disconnect_line("\n" + text)  # the LF put first stands for the one before the first line
    return line - 1 if line >= 0 else -1


def find_disconnect_line(lines: str) -> int:
    """Like ``find_disconnect``, for lines that start with the LF before the first of them.

    Only a line after an LF is looked at.  The text before an LF may end in
    marks (``INVALID_MARK``, ``INVALID_CR_MARK``): each stands for an invalid line
    that came after it.
    """
    if lines.isascii():
        pattern = _ASCII_DISCONNECT_LINE
    elif not may_disconnect(lines):
        return -1
    else:
        pattern = _DISCONNECT_LINE
    match = pattern.search(lines)
    return -1 if match is None else match.start() + 1


def incomplete_tail(data: bytes) -> int:
    """Length of an unfinished UTF-8 sequence at the end of ``data`` (0 to 3).

    Only bytes that some character could still complete count: a lead byte
    C2-F4, its second byte (if already here) in the range that lead allows
    (E0: A0-BF, F0: 90-BF, F4: 80-8F, others 80-BF), and fewer continuation
    bytes than the lead announces.  Anything else is left to the strict
    decoder, which rejects it at once.  (Like CPython's decoder, ED A0-BF, the
    start of an encoded surrogate, is held and rejected when it completes.)
    """
    end = len(data)
    for back in range(1, min(3, end) + 1):
        byte = data[end - back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead
            continue
        if byte < 0xC2 or byte > 0xF4:
            return 0  # ASCII, or a byte no character starts with
        need = 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2
        if back >= need:
            return 0  # complete (or too many continuations): the decoder decides
        if back > 1:
            low, high = _SECOND_BYTE.get(byte, (0x80, 0xBF))
            if not low <= data[end - back + 1] <= high:
                return 0
        return back
    return 0


# Leads whose second byte has a narrower range than 80-BF (RFC 3629, section 4).
_SECOND_BYTE = {0xE0: (0xA0, 0xBF), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}
