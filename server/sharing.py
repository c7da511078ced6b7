"""One ``--max-connections`` total across the processes of ``--processes N`` (L10, O1).

The supervisor creates a small shared-memory table before it forks: for each
process slot, the sessions it has open now and the sessions it has opened
since start.  A process admits a session only if the sum of every slot's open
count is under the total, and it checks and counts under an ``fcntl`` record
lock on the table, so two processes cannot both take the last place.  The
kernel drops such a lock when its holder dies, so a process killed in the
middle cannot wedge the others; the supervisor then zeroes the dead process's
open count (its sessions died with it) before starting its replacement.

Each slot is written only by its own process (under that process's own lock),
so ending a session needs no cross-process lock.  The cost is two system calls
per new session in a process under the supervisor, none per message, and none
at all with one process.

The table lives in a ``memfd`` named :data:`NAME`, so tools can read it the way
``varnishstat`` reads Varnish's counters: :func:`read_counts` opens it through
``/proc/<supervisor pid>/fd`` (the benchmark does, to see how sessions spread).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile

NAME = "upperecho-sessions"
_SLOT = struct.Struct("qq")  # open now, opened since start


class SharedLimit:
    """The shared session table; :meth:`for_slot` gives a process its own view."""

    def __init__(self, total: int, processes: int) -> None:
        self.total = total
        self.processes = processes
        self.slot = -1
        size = _SLOT.size * processes
        if hasattr(os, "memfd_create"):
            self._fd = os.memfd_create(NAME, os.MFD_CLOEXEC)
        else:  # no memfd: an unlinked temporary file does the same job
            with tempfile.TemporaryFile() as spare:
                self._fd = os.dup(spare.fileno())
        os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)
        self._cells = memoryview(self._map).cast("q")

    def for_slot(self, slot: int) -> SharedLimit:
        """This object, bound to ``slot`` (called in the process that serves that slot)."""
        self.slot = slot
        return self

    def take(self) -> bool:
        """Count one more session for this process if the total allows it (the caller holds its own lock)."""
        cells = self._cells
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            if sum(cells[0::2]) >= self.total:
                return False
            cells[2 * self.slot] += 1
            cells[2 * self.slot + 1] += 1
            return True
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def release(self) -> None:
        """A session of this process ended."""
        self._cells[2 * self.slot] -= 1

    def forget(self, slot: int) -> None:
        """The process of ``slot`` is gone, and its sessions with it (called by the supervisor)."""
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            self._cells[2 * slot] = 0
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def open_now(self) -> list[int]:
        return list(self._cells[0::2])

    def opened(self) -> list[int]:
        return list(self._cells[1::2])


def read_counts(pid: int) -> list[tuple[int, int]] | None:
    """(open now, opened since start) per process slot of the supervisor ``pid``; None if it has no table."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for name in names:
        path = f"/proc/{pid}/fd/{name}"
        try:
            if os.readlink(path) != f"/memfd:{NAME} (deleted)":
                continue
            with open(path, "rb") as table:
                data = table.read()
        except OSError:
            continue
        return [_SLOT.unpack_from(data, offset) for offset in range(0, len(data) - _SLOT.size + 1, _SLOT.size)]
    return None
