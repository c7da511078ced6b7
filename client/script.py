"""The scripted client (C2): each input line is a message, each reply a line on standard output.

Standard output carries the replies and nothing else, so the client can sit in
a shell pipeline; warnings, errors and the progress bar go to standard error.
The input is read lazily, so piped input streams (one by one) as it arrives.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Iterator
from typing import Any

from client import exitcodes
from client.cli import Config
from client.connection import ClientError, ConnectError, Connection, ServerError
from statemachine.text import is_disconnect

STDIN = "-"
# Inputs with fewer lines than this get no progress bar; piped input, whose
# length is unknown, gets one only once the run has lasted a second.
LONG_INPUT = 1000
_UNKNOWN_LENGTH_DELAY = 1.0


class InputError(Exception):
    """The input cannot be read, or a line of it cannot be sent (exit status 2)."""


class Source:
    """A file or standard input as UTF-8 lines: LF or CRLF ends a line, a last line may lack it."""

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
        try:
            for raw in self._stream:
                self.line_number += 1
                yield self._decode(raw)
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
        try:
            return sum(1 for _ in self._stream)
        except OSError:
            return 0


def run(config: Config) -> int:
    """Send the input, print the replies; the process exit status."""
    try:
        source = Source(config.file)
    except InputError as exc:
        return _fail(str(exc), exitcodes.USAGE)
    with source:
        try:
            conn = Connection(config.host, config.port, config.timeout, config.ssl_context).connect()
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
            except ServerError as exc:  # the answer to an input line: say which
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
        if self.config.pipeline:
            replies = conn.pipeline(self.messages(), self.config.window)
        else:
            replies = map(conn.request, self.messages())
        write = out.write
        for reply in replies:
            write(reply + "\n")
            self.replies += 1
            if bar is not None:
                bar.update()

    def _finish(self) -> int:
        if self.input_error is not None:
            try:
                self.conn.disconnect()
            except ClientError:
                pass  # the input error is what the user must hear about
            return _fail(f"{self.input_error} (the lines before it were answered)", exitcodes.USAGE)
        if self.disconnect_line:
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


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status
