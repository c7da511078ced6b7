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

    Only a lead byte followed by fewer continuation bytes than it announces
    counts; anything else is left to the strict decoder to accept or reject.
    """
    end = len(data)
    for back in range(1, min(3, end) + 1):
        byte = data[end - back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead
            continue
        if byte >= 0xF0:
            need = 4
        elif byte >= 0xE0:
            need = 3
        elif byte >= 0xC0:
            need = 2
        else:
            return 0
        return back if back < need and byte <= 0xF4 else 0
    return 0
