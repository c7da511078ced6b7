"""``--max-connections`` and ``--max-per-address``: one total each across ``--processes N`` (L10, L15, O1).

The supervisor creates a small shared-memory table before it forks: for each
process slot, the sessions it has open now and the sessions it has opened
since start.  A process admits a session only if the sum of every slot's open
count is under the total, and it checks and counts under an ``fcntl`` record
lock on the table, so two processes cannot both take the last place.  The
kernel drops such a lock when its holder dies, so a process killed in the
middle cannot wedge the others; the supervisor then zeroes the dead process's
open count (its sessions died with it) before starting its replacement.

With ``--max-per-address`` a second table, :class:`AddressTable`, holds every
session counted by address, checked and counted under the same lock:

* one *record* per such session (the owning slot and the address itself, not
  a hash of it, so two addresses never share a count), at most
  ``--max-connections`` of them;
* an index from address to its count over all slots: open addressing with
  linear probing, twice as many cells as records (so it is never more than
  half full), deletion by shifting the rest of the run back (no tombstones, so
  probes stay short however long the server runs), and a hash keyed with a
  secret drawn at start (clients cannot choose addresses that collide);
* the free records, as a stack.

The records are the truth: each changes with a single 8-byte store (the
owner written last), so a process killed at any instruction leaves every
record whole.  The index and the stack are derived from them.  Every change
to those marks the table *dirty* first and clean after; whoever takes the lock
and finds it dirty (the last holder died mid-change) rebuilds both from the
records.  When a process dies the supervisor frees its records, so its
sessions stop counting against their addresses.

Ending a session without ``--max-per-address`` needs no cross-process lock:
each slot's open count is written only by its own process (under that
process's own lock).  The cost is two system calls per new session in a
process under the supervisor, two more per session end with
``--max-per-address``, none per message, and none at all with one process.

The tables live in memfds named :data:`NAME` and :data:`ADDRESSES`, so
tools can read them the way ``varnishstat`` reads Varnish's counters:
:func:`read_counts` and :func:`read_addresses` open them through
``/proc/<supervisor pid>/fd`` (the benchmark does, to see how sessions spread).
"""

from __future__ import annotations

import array
import copy
import fcntl
import hashlib
import ipaddress
import mmap
import os
import socket
import struct
import tempfile

NAME = "upperecho-sessions"
ADDRESSES = "upperecho-addresses"
_SLOT = struct.Struct("qq")  # open now, opened since start

#: Why :meth:`SharedLimit.take` refused (the names the metrics use).
BUSY = "busy"
PER_ADDRESS = "per_address"

# The address table, in 8-byte words: a header, then the records, the index, the free stack.
_PROCESSES, _RECORDS, _CELLS, _DIRTY, _FREE_TOP = range(5)
_HEADER = 8
_RECORD = 4  # owner slot + 1 (0: free), then the address: version, high 64 bits, low 64 bits
_CELL = 5  # count (0: empty), home cell, then the address as in a record
_LOW = (1 << 64) - 1
_KEY = struct.Struct("<QQQ")

Address = tuple[int, int, int]


class SharingError(Exception):
    """The shared table broke a rule it keeps by construction (a bug, not a client's doing)."""


def pack_address(host: object) -> Address:
    """An address as three words: its IP version and its 128 bits, so equal words mean the same address.

    An IPv6 zone (``%eth0``) is left out.  Anything that is not an IP address
    (no TCP peer is) is kept by a 128-bit BLAKE2 digest of its text, version 0."""
    text = str(host)
    try:
        if ":" in text:  # IPv6, without a zone ("fe80::1%eth0")
            version, value = 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text.partition("%")[0]))
        else:
            version, value = 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        version = 0
        value = int.from_bytes(hashlib.blake2b(text.encode(errors="surrogateescape"), digest_size=16).digest())
    return version, value >> 64, value & _LOW


def unpack_address(key: Address) -> str:
    """The text of a packed address (a digest for version 0)."""
    version, high, low = key
    value = high << 64 | low
    if version == 4:
        return str(ipaddress.IPv4Address(value))
    if version == 6:
        return str(ipaddress.IPv6Address(value))
    return f"#{value:032x}"


def _shared_memory(name: str, size: int) -> tuple[int, mmap.mmap]:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
    else:  # no memfd: an unlinked temporary file does the same job
        with tempfile.TemporaryFile() as spare:
            fd = os.dup(spare.fileno())
    os.ftruncate(fd, size)
    return fd, mmap.mmap(fd, size)


class AddressTable:
    """Sessions counted by client address, over every process; see the module docstring.

    It takes no lock itself: every method is called under the lock of the
    :class:`SharedLimit` that owns it."""

    def __init__(self, records: int, processes: int) -> None:
        self.records = records
        self.cells = 1 << max(1, (2 * records - 1).bit_length())  # a power of two, at least twice the records
        self._mask = self.cells - 1
        # keyed with a secret inherited by the forked processes, so all hash alike
        self._hasher = hashlib.blake2b(key=os.urandom(16), digest_size=8)
        self._at_cells = _HEADER + _RECORD * records
        self._at_free = self._at_cells + _CELL * self.cells
        size = 8 * (self._at_free + records)
        self.fd, self._map = _shared_memory(ADDRESSES, size)
        self._words = memoryview(self._map).cast("Q")
        self._words[_PROCESSES] = processes
        self._words[_RECORDS] = records
        self._words[_CELLS] = self.cells
        # a new memfd reads as zeros: no record is used and the index is empty; every record is free
        self._words[self._at_free : self._at_free + records] = memoryview(array.array("Q", range(records)))
        self._words[_FREE_TOP] = records

    def _home(self, key: Address) -> int:
        hasher = self._hasher.copy()
        hasher.update(_KEY.pack(*key))
        return int.from_bytes(hasher.digest(), "little") & self._mask

    def _find(self, key: Address, home: int) -> int:
        """The word offset of ``key``'s cell, or of the empty cell that ends its probe."""
        words, mask, base = self._words, self._mask, self._at_cells
        cell = home
        for _ in range(self.cells):
            at = base + _CELL * cell
            if words[at] == 0 or (words[at + 2] == key[0] and words[at + 3] == key[1] and words[at + 4] == key[2]):
                return at
            cell = (cell + 1) & mask
        raise SharingError("the address index is full")  # it holds at most half its cells

    def recover(self) -> None:
        """Rebuild what the last lock holder left half-changed, if it died doing so."""
        if self._words[_DIRTY]:
            self.rebuild()

    def count(self, key: Address) -> int:
        """Open sessions from ``key`` in all processes."""
        return self._words[self._find(key, self._home(key))]

    def add(self, slot: int, key: Address, limit: int) -> int | None:
        """Count a session of ``slot`` from ``key`` if ``key`` has fewer than ``limit``: its record
        (for :meth:`remove`), or None."""
        words = self._words
        home = self._home(key)
        cell = self._find(key, home)
        if words[cell] >= limit:
            return None
        top = words[_FREE_TOP]
        if not top:  # at most --max-connections sessions are counted, and there are that many records
            raise SharingError("no free address record")
        words[_DIRTY] = 1
        record = words[self._at_free + top - 1]
        words[_FREE_TOP] = top - 1
        at = _HEADER + _RECORD * record
        words[at + 1], words[at + 2], words[at + 3] = key
        words[at] = slot + 1  # the session counts from here
        self._count(key, 1, home, cell)
        words[_DIRTY] = 0
        return record

    def remove(self, record: int) -> None:
        """The session of ``record`` ended."""
        words = self._words
        at = _HEADER + _RECORD * record
        key = (words[at + 1], words[at + 2], words[at + 3])
        words[_DIRTY] = 1
        words[at] = 0  # the session no longer counts
        words[self._at_free + words[_FREE_TOP]] = record
        words[_FREE_TOP] += 1
        self._count(key, -1)
        words[_DIRTY] = 0

    def forget(self, slot: int) -> None:
        """The process of ``slot`` is gone: its sessions no longer count."""
        owners = self._words[_HEADER : self._at_cells : _RECORD].tolist()
        dead = [record for record, owner in enumerate(owners) if owner == slot + 1]
        if self._words[_DIRTY]:
            for record in dead:
                self._words[_HEADER + _RECORD * record] = 0
            self.rebuild()
        else:
            for record in dead:
                self.remove(record)

    def rebuild(self) -> None:
        """The index and the free stack, afresh from the records."""
        words = self._words
        words[_DIRTY] = 1
        words[self._at_cells : self._at_free] = memoryview(bytes(8 * _CELL * self.cells)).cast("Q")
        free = array.array("Q")
        for record, owner in enumerate(words[_HEADER : self._at_cells : _RECORD].tolist()):
            if owner:
                at = _HEADER + _RECORD * record
                self._count((words[at + 1], words[at + 2], words[at + 3]), 1)
            else:
                free.append(record)
        words[self._at_free : self._at_free + len(free)] = memoryview(free)
        words[_FREE_TOP] = len(free)
        words[_DIRTY] = 0

    def _count(self, key: Address, change: int, home: int = -1, at: int = -1) -> None:
        """Change ``key``'s count (``home`` and its cell ``at``, if the caller has them)."""
        words = self._words
        if at < 0:
            home = self._home(key)
            at = self._find(key, home)
        left = words[at] + change
        if left > 0:
            if not words[at]:
                words[at + 1], words[at + 2], words[at + 3], words[at + 4] = home, *key
            words[at] = left
        elif words[at]:  # the last session from key: shift the rest of the run back over its cell
            self._delete((at - self._at_cells) // _CELL)

    def _delete(self, hole: int) -> None:
        words, mask, base = self._words, self._mask, self._at_cells
        cell = hole
        while True:
            cell = (cell + 1) & mask
            at = base + _CELL * cell
            if words[at] == 0:
                break
            # The entry here may fill the hole if its probe passes the hole: its home is
            # at or before the hole, going round the run.
            if (cell - words[at + 1]) & mask >= (cell - hole) & mask:
                to = base + _CELL * hole
                words[to : to + _CELL] = words[at : at + _CELL]
                hole = cell
        words[base + _CELL * hole] = 0

    def by_address(self) -> dict[str, list[int]]:
        """{address: open sessions per slot}, from the records."""
        return _by_address(self._words)


def _by_address(words: memoryview) -> dict[str, list[int]]:
    processes, records = words[_PROCESSES], words[_RECORDS]
    found: dict[str, list[int]] = {}
    for record in range(records):
        at = _HEADER + _RECORD * record
        owner = words[at]
        if owner:
            counts = found.setdefault(unpack_address((words[at + 1], words[at + 2], words[at + 3])), [0] * processes)
            counts[owner - 1] += 1
    return found


class SharedLimit:
    """The shared session table; :meth:`for_slot` gives a process its own view.

    Called by one thread of a process at a time (the caller holds its own
    lock): ``fcntl`` locks keep processes apart, not threads."""

    def __init__(self, total: int, processes: int, per_address: int = 0) -> None:
        self.total = total
        self.processes = processes
        self.per_address = per_address
        self.slot = -1
        self._fd, self._map = _shared_memory(NAME, _SLOT.size * processes)
        self._cells = memoryview(self._map).cast("q")
        self._addresses = AddressTable(total, processes) if per_address else None
        self._records: dict[object, list[int]] = {}  # this process's sessions by address: their records

    def for_slot(self, slot: int) -> SharedLimit:
        """A view of the same table for the process that serves ``slot``, with no sessions of its own yet."""
        view = copy.copy(self)
        view.slot = slot
        view._records = {}
        return view

    def take(self, address: object = None) -> str | None:
        """Count one more session for this process if the totals allow it: None, or why not (:data:`BUSY`,
        :data:`PER_ADDRESS`).  ``address`` (with ``per_address`` on) counts it under that address too."""
        cells = self._cells
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            if sum(cells[0::2]) >= self.total:
                return BUSY
            if address is not None and self._addresses is not None and not self._claim(address):
                return PER_ADDRESS
            cells[2 * self.slot] += 1
            cells[2 * self.slot + 1] += 1
            return None
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def claim(self, address: object) -> bool:
        """Count a session already taken under ``address`` (known later: a PROXY header's), if under its limit."""
        if self._addresses is None:
            return True
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            return self._claim(address)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _claim(self, address: object) -> bool:
        self._addresses.recover()
        record = self._addresses.add(self.slot, pack_address(address), self.per_address)
        if record is None:
            return False
        self._records.setdefault(address, []).append(record)
        return True

    def release(self, address: object = None) -> None:
        """A session of this process ended (``address``: the one it was counted under, if any)."""
        if address is None or self._addresses is None:
            self._cells[2 * self.slot] -= 1
            return
        records = self._records[address]
        record = records.pop()
        if not records:
            del self._records[address]
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            self._addresses.recover()
            self._addresses.remove(record)
            self._cells[2 * self.slot] -= 1
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def forget(self, slot: int) -> None:
        """The process of ``slot`` is gone, and its sessions with it (called by the supervisor)."""
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            self._cells[2 * slot] = 0
            if self._addresses is not None:
                self._addresses.forget(slot)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def open_now(self) -> list[int]:
        return list(self._cells[0::2])

    def opened(self) -> list[int]:
        return list(self._cells[1::2])

    def by_address(self) -> dict[str, list[int]]:
        """{address: open sessions per slot} (empty without ``per_address``)."""
        return {} if self._addresses is None else self._addresses.by_address()


def _read_shared(pid: int, name: str) -> bytes | None:
    """The contents of the memfd ``name`` the process ``pid`` holds, or None."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if os.readlink(path) != f"/memfd:{name} (deleted)":
                continue
            with open(path, "rb") as table:
                return table.read()
        except OSError:
            continue
    return None


def read_counts(pid: int) -> list[tuple[int, int]] | None:
    """(open now, opened since start) per process slot of the supervisor ``pid``; None if it has no table."""
    data = _read_shared(pid, NAME)
    if data is None:
        return None
    return [_SLOT.unpack_from(data, offset) for offset in range(0, len(data) - _SLOT.size + 1, _SLOT.size)]


def read_addresses(pid: int) -> dict[str, list[int]] | None:
    """{client address: open sessions per process slot} of the supervisor ``pid``; None if it has no such table."""
    data = _read_shared(pid, ADDRESSES)
    if data is None:
        return None
    return _by_address(memoryview(data).cast("Q"))
