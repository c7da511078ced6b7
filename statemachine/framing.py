"""Line framing (L1, L6): bytes in, blocks of complete lines out.

The server and the client both frame with :class:`LineFramer`.  It hands out
*blocks* (every complete line of one feed, terminators included) rather than
single lines so that the server can decode and upper-case a whole block in one
call; :func:`split_block` cuts a block into lines where one is needed.
"""

from __future__ import annotations

LF = b"\n"
CRLF = b"\r\n"


class LineTooLong(Exception):
    """A line exceeded the framer's ``max_line`` (L6)."""

    def __init__(self, block: bytes, max_line: int) -> None:
        super().__init__(f"line too long (max {max_line} bytes)")
        #: the complete lines that came before the long one
        self.block = block
        self.max_line = max_line


class LineFramer:
    """Split a byte stream into complete lines, holding at most ``max_line + 1`` bytes.

    ``feed`` returns the complete lines of the stream so far as one block
    (``b""`` when there is none) and keeps the unterminated rest.  A line whose
    text, terminator not counted, is longer than ``max_line`` raises
    :class:`LineTooLong`, carrying the complete lines before it.
    """

    __slots__ = ("_partial", "max_line")

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self._partial = bytearray()

    @property
    def holding(self) -> bool:
        """True while part of an unfinished message is held."""
        return bool(self._partial)

    @property
    def pending(self) -> bytes:
        """The unterminated bytes held so far."""
        return bytes(self._partial)

    def take_pending(self) -> bytes:
        """Return and forget the unterminated bytes."""
        rest = bytes(self._partial)
        self._partial.clear()
        return rest

    def finish(self) -> bytes:
        """End of stream: return and forget the unterminated last message (L7).

        A CR held at the limit in case an LF followed is data after all (L1),
        so a tail over ``max_line`` raises :class:`LineTooLong` (L6).
        """
        rest = self.take_pending()
        if len(rest) > self.max_line:
            raise LineTooLong(b"", self.max_line)
        return rest

    def feed(self, data: bytes) -> bytes:
        partial = self._partial
        limit = self.max_line
        if not partial and data[-1:] == LF and len(data) <= limit + 1:
            return data  # the common case: whole short lines, nothing held
        last = data.rfind(LF)
        if last < 0:
            partial += data
            self._check_held(b"")
            return b""
        if partial:
            block = bytes(partial) + data[: last + 1]
            first_end = len(partial) + data.find(LF)
            partial.clear()
        else:
            block = data[: last + 1] if last + 1 < len(data) else data
            first_end = data.find(LF)
        rest = data[last + 1 :]
        if len(block) > limit + 1 and (
            _too_long(block[: first_end + 1], limit) or _long_line_in(block, first_end, limit)
        ):
            raise LineTooLong(_before_long_line(block, limit), limit)
        partial += rest
        self._check_held(block)
        return block

    def _check_held(self, block: bytes) -> None:
        """The unterminated bytes may be ``max_line``, one more if it is the CR of a CRLF to come."""
        partial = self._partial
        over = len(partial) - self.max_line
        if over > 1 or (over == 1 and partial[-1] != 0x0D):
            partial.clear()  # the session closes: hold nothing more (L6)
            raise LineTooLong(block, self.max_line)


def _too_long(line: bytes, limit: int) -> bool:
    """``line`` ends with LF; is its text longer than ``limit``?"""
    size = len(line) - (2 if line.endswith(CRLF) else 1)
    return size > limit


def _long_line_in(block: bytes, first_end: int, limit: int) -> bool:
    if len(block) - first_end - 1 <= limit + 1:
        return False  # the lines after the first cannot be long
    return any(_too_long(line + LF, limit) for line in block[first_end + 1 :].split(LF)[:-1])


def _before_long_line(block: bytes, limit: int) -> bytes:
    kept = bytearray()
    for line in block.split(LF)[:-1]:
        line += LF
        if _too_long(line, limit):
            break
        kept += line
    return bytes(kept)


def split_block(block: bytes) -> list[tuple[bytes, bytes]]:
    """Cut a block from :meth:`LineFramer.feed` into ``(text, terminator)`` pairs."""
    lines = []
    for line in block.split(LF)[:-1]:
        if line.endswith(b"\r"):
            lines.append((line[:-1], CRLF))
        else:
            lines.append((line, LF))
    return lines
