"""Prometheus metrics (O4): plain integers counted by the workers, read by a collector at scrape time.

The workers keep their counts in a :class:`Counters` each, with nothing but
integer additions on their own thread: no locks, no ``prometheus_client``
objects in the per-message path.  A scrape runs the :class:`Collector` on the
HTTP server's thread; it adds the workers' counters up, and counts the
sessions by state from a snapshot of each worker's connections, so a state
costs nothing when a session enters it.  The states are read from the machine
(``statemachine.machine.STATES``) and the close reasons from its triggers, so a
state or trigger added to the declaration shows up here untouched.

``prometheus_client`` is imported only when ``--metrics`` is given: the
server runs without it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from statemachine.machine import CLOSED, CLOSING, MACHINE, STATES

if TYPE_CHECKING:
    from server.worker import Worker

PREFIX = "upperecho"
PACKAGE = "prometheus_client"

# Upper bounds, in seconds, of the histograms' buckets (+Inf is added).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
DURATION_BUCKETS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0)

#: Every reason a connection is refused for (``Counters.refuse``): busy (L10), per_address (L15), a bad
#: or missing PROXY header (O2), a failed TLS handshake (O6).  Each is shown at 0 before its first refusal,
#: as Prometheus advises for a label's known values, so a rate over it exists from the first scrape.
REFUSAL_REASONS: tuple[str, ...] = ("busy", "per_address", "proxy", "tls")


class MetricsError(Exception):
    """``--metrics`` cannot be served (the package is missing, the address is taken, ...)."""


def close_reasons() -> list[str]:
    """The triggers that end a session: those leading into CLOSING or CLOSED from a state before them."""
    ending = (CLOSING, CLOSED)
    return sorted(
        name
        for name, event in MACHINE.events.items()
        for source, declared in event.transitions.items()
        if source not in ending and any(transition.dest in ending for transition in declared)
    )


class Histogram:
    """Fixed buckets counted into a list of integers: one ``bisect`` and two additions per observation."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times


class Counters:
    """One worker's counts; only that worker writes them, the collector reads them."""

    __slots__ = ("bytes_in", "bytes_out", "closed", "duration", "latency", "messages", "opened", "refused")

    def __init__(self) -> None:
        self.opened = 0
        self.messages = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.duration = Histogram(DURATION_BUCKETS)

    def refuse(self, reason: str) -> None:
        """A connection refused before it became a session."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def answered(self, messages: int, since: float) -> None:
        """A turn of the loop that woke at ``since`` handed the replies to ``messages`` messages to the kernel.

        Called once per turn, not per message: a clock read costs as much as the rest of the counting."""
        self.latency.observe(time.monotonic() - since, messages)

    def session_closed(self, reason: str | None, duration: float) -> None:
        """A session reached CLOSED; ``reason`` is the trigger that ended it."""
        key = reason or "unknown"
        self.closed[key] = self.closed.get(key, 0) + 1
        self.duration.observe(duration)


def _sum_dicts(dicts: Iterable[dict[str, int]], keys: Iterable[str]) -> dict[str, int]:
    total = dict.fromkeys(keys, 0)
    for counts in dicts:
        for key, value in dict(counts).items():  # a copy: the worker may add a key meanwhile
            total[key] = total.get(key, 0) + value
    return total


def _add_histogram(into: Histogram, source: Histogram) -> None:
    for i, count in enumerate(list(source.counts)):  # a copy: the worker may count meanwhile
        into.counts[i] += count
    into.total += source.total


def _cumulative(histogram: Histogram) -> list[tuple[str, int]]:
    """Cumulative ``(le, count)`` buckets, as Prometheus histograms expose them."""
    buckets = []
    running = 0
    for bound, count in zip([*map(repr, histogram.bounds), "+Inf"], histogram.counts, strict=True):
        running += count
        buckets.append((bound, running))
    return buckets


class Totals:
    """What one scrape shows, summed over loops (or processes): the figures :func:`families` exposes."""

    __slots__ = ("bytes_in", "bytes_out", "closed", "duration", "latency", "messages", "opened", "refused", "states")

    def __init__(self) -> None:
        self.states: dict[str, int] = dict.fromkeys(STATES, 0)
        self.opened = 0
        self.closed: dict[str, int] = {}
        self.messages = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.refused: dict[str, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.duration = Histogram(DURATION_BUCKETS)


class Collector:
    """A ``prometheus_client`` custom collector over the workers' :class:`Counters` and connections."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)
        self.reasons = close_reasons()

    def states(self) -> dict[str, int]:
        """Sessions held by the workers, by state, from a snapshot of each worker's connections."""
        counts = dict.fromkeys(STATES, 0)
        for worker in self.workers:
            for conn in list(worker.conns.values()):  # list() copies under the GIL / the dict's lock
                session = conn.session
                if session is not None:
                    counts[session.state] = counts.get(session.state, 0) + 1
        return counts

    def totals(self) -> Totals:
        """The workers' counters added up, and the sessions they hold by state, now."""
        counters = [worker.counters for worker in self.workers if worker.counters is not None]
        totals = Totals()
        totals.states = self.states()
        totals.opened = sum(c.opened for c in counters)
        totals.closed = _sum_dicts((c.closed for c in counters), self.reasons)
        totals.messages = sum(c.messages for c in counters)
        totals.bytes_in = sum(c.bytes_in for c in counters)
        totals.bytes_out = sum(c.bytes_out for c in counters)
        totals.refused = _sum_dicts((c.refused for c in counters), REFUSAL_REASONS)
        for c in counters:
            _add_histogram(totals.latency, c.latency)
            _add_histogram(totals.duration, c.duration)
        return totals

    def collect(self) -> Iterator[Any]:
        return families(self.totals())


def families(totals: Totals) -> Iterator[Any]:
    """The metric families of a scrape: one place for every name, help text and label (O4)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    sessions = GaugeMetricFamily(
        f"{PREFIX}_sessions",
        "Sessions the server holds, by state of the session machine (CLOSED: lingering before the socket closes).",
        labels=["state"],
    )
    for state, count in totals.states.items():
        sessions.add_metric([state], count)
    yield sessions
    yield CounterMetricFamily(f"{PREFIX}_sessions_opened", "Sessions started.", value=totals.opened)
    closed = CounterMetricFamily(
        f"{PREFIX}_sessions_closed", "Sessions ended, by the trigger that ended them.", labels=["reason"]
    )
    for reason, count in sorted(totals.closed.items()):
        closed.add_metric([reason], count)
    yield closed
    yield CounterMetricFamily(
        f"{PREFIX}_messages",
        "Messages answered (an invalid-UTF-8 message counts; a server notice does not).",
        value=totals.messages,
    )
    yield CounterMetricFamily(f"{PREFIX}_received_bytes", "Bytes read from clients.", value=totals.bytes_in)
    yield CounterMetricFamily(f"{PREFIX}_sent_bytes", "Bytes handed to the kernel for clients.", value=totals.bytes_out)
    refused = CounterMetricFamily(
        f"{PREFIX}_connections_refused", "Connections refused before a session began, by reason.", labels=["reason"]
    )
    for reason, count in sorted(totals.refused.items()):
        refused.add_metric([reason], count)
    yield refused
    yield HistogramMetricFamily(
        f"{PREFIX}_reply_latency_seconds",
        "From the loop's wake-up that read a message to the end of that turn, its reply handed to the kernel.",
        buckets=_cumulative(totals.latency),
        sum_value=totals.latency.total,
    )
    yield HistogramMetricFamily(
        f"{PREFIX}_session_duration_seconds",
        "From accepting a connection to its session reaching CLOSED.",
        buckets=_cumulative(totals.duration),
        sum_value=totals.duration.total,
    )


class Endpoint:
    """The HTTP server that answers ``GET /metrics``, on a thread of its own.

    ``collector`` is a :class:`Collector` over one process's loops, or the
    supervisor's sum over its processes (:mod:`server.metricshare`)."""

    def __init__(self, host: str, port: int, collector: Any) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
            from prometheus_client.process_collector import ProcessCollector
        except ImportError:
            raise MetricsError(f"--metrics needs the {PACKAGE} package: pip install 'upperecho[metrics]'") from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        ProcessCollector(registry=registry)
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise MetricsError(
                f"cannot serve metrics on {format_host(host)}:{port}: {(exc.strerror or str(exc)).lower()}"
            ) from None
        bound = self._httpd.server_address
        self.host, self.port = bound[0], bound[1]

    @property
    def url(self) -> str:
        return f"http://{format_host(self.host)}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def close_in_child(self) -> None:
        """Let go of the copy of the listening socket a forked process inherits (its server thread is not there)."""
        self._httpd.socket.close()


def format_host(host: str) -> str:
    """An IPv6 address in brackets, as it is written before a port."""
    return f"[{host}]" if ":" in host else host
