"""Console logging: the seed's transcript on stdout, warnings and errors on stderr (S3, S4)."""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "upperecho"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# Control characters (C0, DEL, C1), line/paragraph separators and bidi
# overrides would let a client forge or disguise console lines: show them as
# escapes.  A backslash is escaped too, so an escape can't be faked either.
_UNSAFE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _UNSAFE}
_ESCAPES[ord("\\")] = "\\\\"
# A byte that is not UTF-8 reaches the log decoded with "surrogateescape"
# (U+DC80-U+DCFF): write it as the byte it was, in line and raw framing alike (S3).
_ESCAPES.update({0xDC00 + byte: f"\\x{byte:02x}" for byte in range(0x80, 0x100)})


def escape(text: str) -> str:
    """Client text made safe for one console line."""
    return text.translate(_ESCAPES)


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class _LevelPrefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def setup(level: str) -> logging.Logger:
    """Transcript lines (debug, info) go to stdout as plain text; the rest to stderr, prefixed."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(LEVELS[level])
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_BelowWarning())
    out.setFormatter(logging.Formatter("%(message)s"))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    err.setFormatter(_LevelPrefix("%(message)s"))
    logger.addHandler(out)
    logger.addHandler(err)
    return logger
