"""``--metrics`` with ``--processes N``: one endpoint reports the whole server (O1, O4).

Theory of operation
-------------------
Each server process counts exactly as a single server does (:mod:`server.metrics`:
plain integers per loop, nothing shared in the per-message path).  A thread of its
own, :class:`Publisher`, copies the sum of its loops' counters and the sessions it
holds by state into the process's block of a shared-memory region every
:data:`PUBLISH_PERIOD` seconds, and once more when the process has drained.  The
supervisor maps the region before it forks, serves ``/metrics`` itself and, at
scrape time, adds up the blocks (:meth:`SharedMetrics.collect`).  So a scrape lags
the loops by at most one period, and counting costs the loops nothing more.

A block has a fixed layout built from the session machine when the supervisor
starts (:class:`Layout`): the counters, one slot per close reason the machine
declares and per refusal reason the server counts (each with an ``other`` slot
for a reason added without a slot here), the histograms' buckets and sums, and
one slot per declared state.  A writer bumps the block's sequence number to odd
before its copy and to even after it (a seqlock); a reader takes a copy only if
the number was even and unchanged across it, and otherwise keeps the last copy it
took.  (That relies on stores and loads staying in program order, as x86-64
keeps them; Python offers no memory fence to say so on weaker CPUs.)

When a process exits, the supervisor adds its last copy's counters to a running
total of its own before the slot is cleared for the replacement, so no counter
ever goes down (Prometheus would read a drop as a restart).  Sessions by state,
a gauge, are summed over the live processes only: a killed process's sessions
died with it.  What a process counted after its last copy and before a SIGKILL
is lost, as it would be with one process.
"""

from __future__ import annotations

import mmap
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from server.metrics import (
    DURATION_BUCKETS,
    LATENCY_BUCKETS,
    REFUSAL_REASONS,
    Collector,
    Endpoint,
    Totals,
    close_reasons,
    families,
)
from statemachine.machine import STATES

if TYPE_CHECKING:
    from server.app import Server

#: Seconds between two copies of a process's counters into its block: the most a scrape lags.
PUBLISH_PERIOD = 0.25
#: The slot of a reason with no slot of its own in the layout.
OTHER = "other"
#: The key ``Counters.session_closed`` uses for a session that closed with no trigger recorded.
NO_REASON = "unknown"
# Copies of a block a reader tries before it keeps its last good one (the writer is mid-copy).
_READ_TRIES = 100
_SEQ = struct.Struct("=q")


class Layout:
    """Where each figure sits in a block: integers first, then the two histogram sums."""

    def __init__(self) -> None:
        self.states = list(STATES)
        self.closed = [*close_reasons(), NO_REASON, OTHER]
        self.refused = [*REFUSAL_REASONS, OTHER]  # each reason has a slot
        self.always_closed = set(close_reasons())  # shown at 0 before they happen, as with one process
        self.always_refused = set(REFUSAL_REASONS)
        self.latency = len(LATENCY_BUCKETS) + 1
        self.duration = len(DURATION_BUCKETS) + 1
        self.integers = 4 + len(self.closed) + len(self.refused) + self.latency + self.duration + len(self.states)
        self.body = struct.Struct(f"={self.integers}q2d")
        # the gauges' place: a process that exits takes them with it
        self.gauges = slice(self.integers - len(self.states), self.integers)
        self.size = -(-(_SEQ.size + self.body.size) // 64) * 64  # a block per cache line boundary

    def zeros(self) -> list[float]:
        return [0] * self.integers + [0.0, 0.0]

    def encode(self, totals: Totals) -> list[float]:
        """A process's totals as the flat list of numbers its block holds."""
        values: list[float] = [totals.opened, totals.messages, totals.bytes_in, totals.bytes_out]
        values += _slots(totals.closed, self.closed)
        values += _slots(totals.refused, self.refused)
        values += totals.latency.counts
        values += totals.duration.counts
        values += [totals.states.get(state, 0) for state in self.states]
        values += [totals.latency.total, totals.duration.total]
        return values

    def decode(self, values: Sequence[float]) -> Totals:
        """The totals a flat list holds, labelled as one process would label them."""
        integers = iter(values[: self.integers])

        def take(count: int) -> list[int]:
            return [int(next(integers)) for _ in range(count)]

        totals = Totals()
        totals.opened, totals.messages, totals.bytes_in, totals.bytes_out = take(4)
        totals.closed = _named(take(len(self.closed)), self.closed, self.always_closed)
        totals.refused = _named(take(len(self.refused)), self.refused, self.always_refused)
        totals.latency.counts = take(self.latency)
        totals.duration.counts = take(self.duration)
        totals.states = dict(zip(self.states, take(len(self.states)), strict=True))
        totals.latency.total, totals.duration.total = values[-2], values[-1]
        return totals


def _slots(counts: dict[str, int], names: list[str]) -> list[int]:
    slots = [0] * len(names)
    index = {name: i for i, name in enumerate(names)}
    for name, count in counts.items():
        slots[index.get(name, len(names) - 1)] += count  # the last slot is OTHER
    return slots


def _named(values: list[int], names: list[str], always: set[str]) -> dict[str, int]:
    return {name: v for name, v in zip(names, values, strict=True) if v or name in always}


class SharedMetrics:
    """The region of per-process blocks, and the supervisor's sum over them (a ``prometheus_client`` collector).

    Created by the supervisor before it forks; a process writes only its own block,
    through :meth:`in_child`.  The supervisor's endpoint thread reads the blocks and
    its main thread retires a dead process's, both under :attr:`_lock`."""

    def __init__(self, processes: int) -> None:
        self.layout = Layout()
        self.processes = processes
        self._map = mmap.mmap(-1, self.layout.size * processes)  # anonymous and shared: inherited by the fork
        self._lock = threading.Lock()
        self._retired = self.layout.zeros()
        self._last = [self.layout.zeros() for _ in range(processes)]
        self.endpoint: Endpoint | None = None

    def serve(self, host: str, port: int) -> Endpoint:
        """Bind ``/metrics`` in the supervisor (a forked process lets go of its copy, :meth:`in_child`)."""
        self.endpoint = Endpoint(host, port, self)
        return self.endpoint

    # -- in a server process ---------------------------------------------------

    def in_child(self, slot: int, server: Server) -> Publisher:
        """In the process that serves ``slot``: close the endpoint's socket, and publish this server's counts."""
        if self.endpoint is not None:
            self.endpoint.close_in_child()
        return Publisher(self, slot, server)

    def write(self, slot: int, values: Sequence[float]) -> None:
        """Copy ``values`` into the block of ``slot`` (only that slot's process writes it)."""
        offset = slot * self.layout.size
        seq = _SEQ.unpack_from(self._map, offset)[0]
        _SEQ.pack_into(self._map, offset, seq + 1)  # odd: a copy is under way
        self.layout.body.pack_into(self._map, offset + _SEQ.size, *values)
        _SEQ.pack_into(self._map, offset, seq + 2)

    # -- in the supervisor -----------------------------------------------------

    def read(self, slot: int) -> list[float] | None:
        """A consistent copy of the block of ``slot``, or None if its writer was always mid-copy."""
        offset = slot * self.layout.size
        for _ in range(_READ_TRIES):
            before = _SEQ.unpack_from(self._map, offset)[0]
            if before & 1:
                continue
            values = list(self.layout.body.unpack_from(self._map, offset + _SEQ.size))
            if _SEQ.unpack_from(self._map, offset)[0] == before:
                return values
        return None

    def _current(self, slot: int) -> list[float]:
        values = self.read(slot)
        if values is not None:
            self._last[slot] = values
        return self._last[slot]

    def retire(self, slot: int) -> None:
        """The process of ``slot`` has exited: keep its counters in the running total, clear the block."""
        with self._lock:
            last = self._current(slot)
            gauges = self.layout.gauges
            for i, value in enumerate(last):
                if not gauges.start <= i < gauges.stop:
                    self._retired[i] += value
            self._map[slot * self.layout.size : (slot + 1) * self.layout.size] = bytes(self.layout.size)
            self._last[slot] = self.layout.zeros()

    def totals(self) -> Totals:
        """The whole server's figures: the retired processes' counters plus every live block."""
        with self._lock:
            summed = list(self._retired)
            for slot in range(self.processes):
                for i, value in enumerate(self._current(slot)):
                    summed[i] += value
        return self.layout.decode(summed)

    def collect(self) -> Iterator[Any]:
        return families(self.totals())


class Publisher(threading.Thread):
    """In a server process: copy its counts into its block every :data:`PUBLISH_PERIOD` seconds.

    A thread, not a timer in the loops: the loops keep no clock for it, and one copy
    covers every loop of the process.  It reads the loops' counters as the single
    server's endpoint thread does."""

    def __init__(self, shared: SharedMetrics, slot: int, server: Server) -> None:
        super().__init__(name="upperecho-metrics", daemon=True)
        self.shared = shared
        self.slot = slot
        self.server = server
        self.collector = Collector(server.workers)
        self._done = threading.Event()

    def run(self) -> None:
        try:
            while not self._done.wait(PUBLISH_PERIOD):
                self.publish()
        except Exception as exc:  # a thread must not end on a traceback (S7): the process stops, and is restarted
            self.server.worker_failed(self, exc)

    def publish(self) -> None:
        self.shared.write(self.slot, self.shared.layout.encode(self.collector.totals()))

    def finish(self) -> None:
        """The server has drained: stop the timer and publish the final counts."""
        self._done.set()
        if self.is_alive():
            self.join()
        self.publish()
