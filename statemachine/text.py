"""Text rules of the protocol: the disconnect word (L4) and UTF-8 boundaries (L5, R4)."""

from __future__ import annotations

import re
import unicodedata

DISCONNECT_WORD = "DESCONEXION"
_FOLDED_WORD = DISCONNECT_WORD.casefold()

# Every code point whose fold (see ``fold``) contains "x".  A text that holds
# none of them cannot fold to "desconexion", so the hot path skips the exact
# check.  tests/statemachine/test_text.py derives this set from all of Unicode.
X_CHARS = frozenset("xX\u1e8a\u1e8b\u1e8c\u1e8d")
_MAY_DISCONNECT = re.compile("[" + "".join(sorted(X_CHARS)) + "]")
# For ASCII text the fold is just ``lower()``; the white space ``str.strip``
# removes is the ASCII ``isspace()`` set, minus LF, which ends a line.
_ASCII_SPACE = "[\t\x0b\x0c\r\x1c-\x1f ]"
_ASCII_DISCONNECT_LINE = re.compile(
    f"^{_ASCII_SPACE}*desconexion{_ASCII_SPACE}*$", re.IGNORECASE | re.MULTILINE | re.ASCII
)


def fold(text: str) -> str:
    """Fold case and drop accents: NFD, remove combining marks, casefold."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def is_disconnect(text: str) -> bool:
    """True when ``text`` is the disconnect command (L4).

    The text stripped of surrounding white space must fold to ``desconexion``:
    case and accents are ignored (``Desconexión``), nothing else is.
    """
    stripped = text.strip()
    if stripped.isascii():
        return stripped.lower() == _FOLDED_WORD
    if not _MAY_DISCONNECT.search(stripped):
        return False
    return fold(stripped) == _FOLDED_WORD


def may_hold_disconnect(text: str) -> bool:
    """Cheap test over many lines: False guarantees that none is the disconnect word."""
    if text.isascii():
        return _ASCII_DISCONNECT_LINE.search(text) is not None
    return _MAY_DISCONNECT.search(text) is not None


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
