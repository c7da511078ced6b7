"""Console logging: the seed's transcript on stdout, warnings and errors on stderr (S3, S4).

Writing the console never blocks a worker (S6).  The logger's only handler
puts each record on a bounded backlog and returns; one writer thread takes
the records off and hands them to the real handlers, which format and write
them there, so a formatter set on those handlers applies as usual.  When the
console cannot keep up (a slow terminal, a pipe nobody reads), records beyond
the backlog are dropped and counted, and a later warning says how many.  At
exit, :func:`close` gives the writer a bounded time to write what is queued.

``--log-format json`` (O5) writes the same records as one JSON object per line.
The log calls pass their structured fields with ``extra=`` (``event``, ``peer``,
``session``, ``state``, ``reason``, and ``text`` for client text); the text
transcript ignores them, the JSON formatter writes them.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import sys
import threading
import time
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


# The backlog a stalled console may hold, in records and in characters of their
# messages (a record of a 64 KiB message is large), before records are dropped.
BACKLOG_RECORDS = 10_000
BACKLOG_CHARS = 1 << 20
_RECORD_COST = 200  # characters charged per record besides its message, for the record itself


class ConsoleWriter:
    """A bounded backlog of log records and the one thread that writes them (S6)."""

    def __init__(self, handlers: list[logging.Handler]) -> None:
        self.handlers = handlers
        self._records: collections.deque[logging.LogRecord] = collections.deque()
        self._chars = 0
        self._dropped = 0
        self._queued = 0  # records accepted so far
        self._written = 0  # of which the writer has written (or lost to a broken console)
        self._closing = False
        # Re-entrant: a signal handler may log while the main thread is inside put().
        self._lock = threading.RLock()
        self._ready = threading.Condition(self._lock)  # the writer waits here for records
        self._done = threading.Condition(self._lock)  # flush() waits here for the writer
        self._thread = threading.Thread(target=self._run, name="upperecho-console", daemon=True)
        self._thread.start()

    def put(self, record: logging.LogRecord) -> None:
        """Queue ``record``, or drop and count it when the backlog is full; never waits on the console."""
        message = record.msg
        text = getattr(record, "text", None)  # client text kept apart for the JSON lines (O5)
        cost = _RECORD_COST + (len(message) if isinstance(message, str) else 0) + (len(text) if text else 0)
        with self._lock:
            if len(self._records) >= BACKLOG_RECORDS or self._chars + cost > BACKLOG_CHARS:
                self._dropped += 1
                return
            self._records.append(record)
            self._chars += cost
            self._queued += 1
            if len(self._records) == 1:
                self._ready.notify()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for what is queued now to be written; False if it was not."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._queued
            while self._written < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._done.wait(remaining)
        return True

    def close(self, timeout: float) -> bool:
        """Write what is queued within ``timeout`` seconds and stop the writer; False if it could not."""
        with self._lock:
            self._closing = True
            self._ready.notify()
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._records and not self._dropped and not self._closing:
                    self._ready.wait()
                batch, self._records = self._records, collections.deque()
                self._chars = 0
                dropped, self._dropped = self._dropped, 0
                last = self._closing
            for record in batch:
                self._write(record)
            if dropped:
                self._write(_dropped_record(dropped))
            for handler in self.handlers:
                handler.flush()
            with self._lock:
                self._written += len(batch)
                self._done.notify_all()
                if last and not self._records and not self._dropped:
                    return

    def _write(self, record: logging.LogRecord) -> None:
        for handler in self.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def _dropped_record(count: int) -> logging.LogRecord:
    return logging.LogRecord(
        LOGGER_NAME,
        logging.WARNING,
        __file__,
        0,
        "%d log lines dropped: the console could not keep up",
        (count,),
        None,
    )


class _Enqueue(logging.Handler):
    """The logger's handler: hands each record to the console writer and returns at once."""

    def __init__(self, writer: ConsoleWriter) -> None:
        super().__init__()
        self.writer = writer

    def handle(self, record: logging.LogRecord) -> bool:
        self.writer.put(record)  # no lock of our own: the backlog has one
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.writer.put(record)


class _Console(logging.StreamHandler):
    """A console stream written by the writer thread: flushed once per batch, not per line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:  # a formatting bug or a closed console must not end the writer
            self.handleError(record)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError:
            pass  # the console is gone (a closed pipe): the lines are lost, service goes on

    def handleError(self, record: logging.LogRecord) -> None:
        """A line that cannot be written is lost quietly: a traceback would only add to a broken console."""


_writer: ConsoleWriter | None = None


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class _LevelPrefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def setup(level: str, fmt: str = "text", background: bool = True) -> logging.Logger:
    """Transcript lines (debug, info) go to stdout, the rest to stderr: as plain text (warnings
    prefixed), or as JSON lines with ``fmt="json"``.

    With ``background`` both are written by the console writer thread (S6), started
    here; without it, by the caller (a process with no threads of its own, like the
    supervisor, which forks).
    """
    global _writer
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(LEVELS[level])
    out = _Console(sys.stdout)
    out.addFilter(_BelowWarning())
    err = _Console(sys.stderr)
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
    if _writer is not None:
        _writer.close(0.0)
        _writer = None
    if background:
        _writer = ConsoleWriter([out, err])
        logger.addHandler(_Enqueue(_writer))
    else:
        logger.addHandler(out)
        logger.addHandler(err)
    return logger


def flush(timeout: float) -> bool:
    """Give the console writer up to ``timeout`` seconds to write what is queued; False if it could not."""
    return _writer is None or _writer.flush(timeout)


def close(timeout: float) -> bool:
    """Write what is queued within ``timeout`` seconds and stop the writer; False if the console is stuck."""
    return _writer is None or _writer.close(timeout)
