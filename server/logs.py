"""Console logging: the seed's transcript on stdout, warnings and errors on stderr (S3, S4).

``--log-format json`` (O5) writes the same records as one JSON object per line.
The log calls pass their structured fields with ``extra=`` (``event``, ``peer``,
``session``, ``state``, ``reason``, and ``text`` for client text); the text
transcript ignores them, the JSON formatter writes them.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

LOGGER_NAME = "upperecho"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FORMATS = ("text", "json")
# The structured fields a log call may pass with ``extra=``, in the order a JSON line shows them.
FIELDS = ("event", "peer", "session", "state", "reason")

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


def address(peer: object) -> object:
    """``host:port`` (``[v6]:port``) for a socket address tuple; anything else as it is."""
    if isinstance(peer, tuple) and len(peer) >= 2 and isinstance(peer[0], str):
        host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
        return f"{host}:{peer[1]}"
    return peer


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, event, peer, session, state, reason (O5).

    Client text (the ``text`` field, already escaped by :func:`escape`) is
    written only when ``with_text`` (``--log-level debug``); a record that
    carries client text has no ``message`` field, since its message quotes it.
    """

    def __init__(self, with_text: bool) -> None:
        super().__init__()
        self.with_text = with_text

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        for name in FIELDS:
            fields[name] = getattr(record, name, None)
        fields["event"] = fields["event"] or "log"
        fields["peer"] = address(fields["peer"])
        text = getattr(record, "text", None)
        if text is None:
            fields["message"] = record.getMessage()
        elif self.with_text:
            fields["text"] = text
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return json.dumps(fields, ensure_ascii=False, default=str)


class _TextOnlyAtDebug(logging.Filter):
    """JSON lines carry client text only at debug: below it, the per-message records are left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "text", None) is None


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class _LevelPrefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def setup(level: str, fmt: str = "text") -> logging.Logger:
    """Transcript lines (debug, info) go to stdout, the rest to stderr: as plain text (warnings
    prefixed), or as JSON lines with ``fmt="json"``."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(LEVELS[level])
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_BelowWarning())
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    if fmt == "json":
        with_text = LEVELS[level] <= logging.DEBUG
        for handler in (out, err):
            handler.setFormatter(JsonFormatter(with_text))
            if not with_text:
                handler.addFilter(_TextOnlyAtDebug())
    else:
        out.setFormatter(logging.Formatter("%(message)s"))
        err.setFormatter(_LevelPrefix("%(message)s"))
    logger.addHandler(out)
    logger.addHandler(err)
    return logger
