"""The scripted client (C2): each input line is a message, each reply a line on standard output.

Standard output carries the replies and nothing else, so the client can sit in
a shell pipeline; warnings, errors and the progress bar go to standard error.
The input is read as it arrives (C6): a line already read is sent at once, in
both modes, and the replies so far are written out whenever the input pauses.
"""

from __future__ import annotations

import io
import os
import select
import stat
import sys
from collections.abc import Iterator
from typing import Any

from client import exitcodes
from client.cli import Config
from client.connection import ClientError, ConnectError, Connection, ServerError
from statemachine.session import RAW
from statemachine.text import is_disconnect

STDIN = "-"
# Inputs with fewer lines than this get no progress bar; piped input, whose
# length is unknown, gets one only once the run has lasted a second.
LONG_INPUT = 1000
_UNKNOWN_LENGTH_DELAY = 1.0
_READ_SIZE = 65536


class InputError(Exception):
    """The input cannot be read, or a line of it cannot be sent (exit status 2)."""


class Source:
    """A file or standard input as UTF-8 lines: LF or CRLF ends a line, a last line may lack it.

    It reads the descriptor itself, so it can tell whether another line is
    already in (:meth:`ready`) without waiting for one.
    """

    def __init__(self, path: str | None) -> None:
        if path is None or path == STDIN:
            self.name = "standard input"
            self._stream: Any = sys.stdin.buffer
            self._owned = False
        else:
            self.name = path
            try:
                self._stream = open(path, "rb")  # noqa: SIM115 (closed by __exit__)
            except OSError as exc:
                raise InputError(f"cannot read {path}: {(exc.strerror or str(exc)).lower()}") from exc
            self._owned = True
        self.line_number = 0
        self._buffer = bytearray()
        self._start = 0  # where the unread part of ``_buffer`` begins
        self._ended = False
        try:
            self._fd: int | None = self._stream.fileno()
            self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        except (OSError, ValueError, io.UnsupportedOperation):
            self._fd, self._regular = None, True

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._owned:
            self._stream.close()

    @property
    def interactive(self) -> bool:
        """Someone is typing the input (``--file -`` on a terminal)."""
        return self._stream.isatty()

    def lines(self) -> Iterator[str]:
        """The messages, one per line, terminators removed."""
        while (raw := self._next_line()) is not None:
            self.line_number += 1
            yield self._decode(raw)

    def ready(self) -> bool:
        """True when the next line (or the end) can be had without waiting for the input."""
        if self._regular or self._ended or self._buffer.find(b"\n", self._start) >= 0:
            return True
        return bool(select.select([self._fd], [], [], 0)[0])

    def _next_line(self) -> bytes | None:
        while True:
            end = self._buffer.find(b"\n", self._start)
            if end >= 0:
                line = bytes(self._buffer[self._start : end + 1])
                self._start = end + 1
                return line
            del self._buffer[: self._start]
            self._start = 0
            if self._ended:
                line, self._buffer = bytes(self._buffer), bytearray()
                return line or None
            chunk = self._read()
            if chunk:
                self._buffer += chunk
            else:
                self._ended = True

    def _read(self) -> bytes:
        try:
            if self._fd is None:
                return self._stream.read1(_READ_SIZE)
            return os.read(self._fd, _READ_SIZE)
        except OSError as exc:
            raise InputError(f"cannot read {self.name}: {(exc.strerror or str(exc)).lower()}") from exc

    def _decode(self, raw: bytes) -> str:
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        if raw.endswith(b"\r"):
            raise InputError(f"{self.name} line {self.line_number} ends with a CR, which line framing cannot carry")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{self.name} line {self.line_number} is not valid UTF-8") from None

    def count_lines(self) -> int | None:
        """How many lines are left, when the input is a regular file (else ``None``); reads nothing away."""
        try:
            if not stat.S_ISREG(os.fstat(self._stream.fileno()).st_mode):
                return None
            start = self._stream.tell()
            count = 0
            last = b"\n"
            while chunk := self._stream.read(1 << 20):
                count += chunk.count(b"\n")
                last = chunk[-1:]
            self._stream.seek(start)
        except (OSError, ValueError):  # no descriptor, not seekable
            return None
        return count + (last != b"\n")

    def count_rest(self) -> int:
        """Read and count the lines that are left (they are not sent)."""
        count = 0
        try:
            while self._next_line() is not None:
                count += 1
        except InputError:
            pass
        return count


def run(config: Config) -> int:
    """Send the input, print the replies; the process exit status."""
    try:
        source = Source(config.file)
    except InputError as exc:
        return _fail(str(exc), exitcodes.USAGE)
    with source:
        try:
            conn = Connection(
                config.host, config.port, config.timeout, config.framing, _warn, ssl_context=config.ssl_context
            ).connect()
        except ConnectError as exc:
            return _fail(str(exc), exitcodes.CANNOT_CONNECT)
        with conn:
            return _Script(conn, source, config).run()


class _Script:
    """One scripted run: the messages up to a disconnect word, their replies, then the goodbye."""

    def __init__(self, conn: Connection, source: Source, config: Config) -> None:
        self.conn = conn
        self.source = source
        self.config = config
        self.replies = 0
        self.disconnect_line = 0  # the input line that held the disconnect word, if any
        self.input_error: InputError | None = None

    def messages(self) -> Iterator[str]:
        """The input's lines up to and including a disconnect word; an input error ends them early."""
        try:
            for text in self.source.lines():
                if is_disconnect(text):
                    self.disconnect_line = self.source.line_number
                    yield text
                    return
                if not text and self.config.framing == RAW:
                    raise InputError(
                        f"{self.source.name} line {self.source.line_number} is empty, which raw framing cannot send"
                    )
                yield text
        except InputError as exc:
            self.input_error = exc

    def run(self) -> int:
        out = sys.stdout
        if isinstance(out, io.TextIOWrapper):
            out.reconfigure(encoding="utf-8")  # the replies are UTF-8 whatever the locale
        bar = _progress_bar(self.source)
        try:
            try:
                self._exchange(out, bar)
            except ServerError as exc:
                if not exc.about_message:  # idle timeout, busy, shutting down: no line to blame
                    raise
                return _fail(f"{self.source.name} line {self.replies + 1}: {exc}", exitcodes.FAILED)
            out.flush()
            return self._finish()
        except ClientError as exc:
            return _fail(f"{exc} ({_count(self.replies, 'message')} answered)", exitcodes.FAILED)
        finally:
            if bar is not None:
                bar.close()
            out.flush()

    def _exchange(self, out: io.TextIOBase, bar: Any) -> None:
        conn = self.conn
        ready = self.source.ready
        if self.config.pipeline:
            replies = conn.pipeline(self.messages(), self.config.window, ready=ready)
        else:
            replies = map(self._request, self.messages())
        write = out.write
        for reply in replies:
            if reply is None:
                continue
            write(reply + "\n")
            self.replies += 1
            if bar is not None:
                bar.update()
            if not ready():  # the input pauses: let whoever reads us see the replies so far
                out.flush()

    def _request(self, text: str) -> str | None:
        """One message and its reply; None for none.

        In raw framing the disconnect word is sent bare and the session ends
        with it: the classroom's server closes without an answer.
        """
        if self.config.framing == RAW and is_disconnect(text):
            return self.conn.disconnect(text) or None
        return self.conn.request(text)

    def _finish(self) -> int:
        if self.input_error is not None:
            try:
                self.conn.disconnect()
            except ClientError:
                pass  # the input error is what the user must hear about
            return _fail(f"{self.input_error} (the lines before it were answered)", exitcodes.USAGE)
        if self.disconnect_line:
            if self.conn.connected:
                self.conn.wait_closed()
            if not self.source.interactive and (rest := self.source.count_rest()):
                print(
                    f"warning: {_count(rest, 'line')} after DESCONEXION "
                    f"({self.source.name} line {self.disconnect_line}) not sent",
                    file=sys.stderr,
                )
            return exitcodes.OK
        self.conn.disconnect()
        return exitcodes.OK


def _progress_bar(source: Source) -> Any:
    """A tqdm bar on standard error for a long input, when a person watches that terminal.

    Not when the replies themselves scroll on the same terminal, nor when the
    input is being typed.
    """
    if not sys.stderr.isatty() or sys.stdout.isatty() or source.interactive:
        return None
    total = source.count_lines()
    if total is not None and total < LONG_INPUT:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the optional 'client' extra is not installed
        return None
    return tqdm(
        total=total,
        file=sys.stderr,
        unit=" msg",
        unit_scale=True,
        leave=False,
        dynamic_ncols=True,
        delay=_UNKNOWN_LENGTH_DELAY if total is None else 0,
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status
