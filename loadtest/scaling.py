"""W7 (BENCH.md): W2 and W3 against ``--processes 1, 2, ... cores``, beside C0 and P2.

Each process count is its own contender (``upperecho-p1``, ``upperecho-p2``, ...),
started once and measured in interleaved rounds with the others, like every
workload.  Server CPU is the sum over the supervisor and all its processes.

How evenly the sessions spread is read from the server itself, not guessed:
the supervisor keeps a count of the sessions each process has opened in
shared memory (it needs that table for the ``--max-connections`` total), and
:func:`server.sharing.read_counts` reads it from outside, as ``varnishstat``
reads Varnish's counters.  Read before and after each round, the difference
is how many of that round's sessions each process took: in W3 every session
of the round, in W2 the connections the round opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from loadtest import driver
from loadtest.servers import ANCHOR, SPECS, RunningServer, ServerSpec, with_processes
from server.sharing import read_counts

#: the two halves of W7, as rows of the report
PARTS: dict[str, str] = {"W7-W2": "W2", "W7-W3": "W3"}
#: what W7 is measured beside, when selected with --servers
ALONGSIDE = (ANCHOR, "P2")


def process_counts(cores: int | None = None) -> list[int]:
    """1, 2, ... up to the number of cores."""
    return list(range(1, max(1, cores or os.cpu_count() or 1) + 1))


def contenders(servers: Sequence[str]) -> list[ServerSpec]:
    return [with_processes(n) for n in process_counts()] + [SPECS[name] for name in ALONGSIDE if name in servers]


def _opened(server: RunningServer) -> list[int] | None:
    counts = read_counts(server.pid)
    return None if counts is None else [opened for _, opened in counts]


def spread(before: list[int] | None, after: list[int] | None) -> dict[str, Any]:
    """Sessions per process over one round, and the largest departure from an even share."""
    if before is None or after is None:
        return {}
    taken = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(taken)
    if not total:
        return {}
    even = total / len(taken)
    return {"sessions_by_process": taken, "spread_from_even": max(abs(n - even) for n in taken) / even}


def measure(server: RunningServer, run: Callable[[RunningServer], driver.Sample]) -> driver.Sample:
    """One round of ``run`` on ``server``, with the spread over its processes when it has several."""
    before = _opened(server)
    cpu_before = server.cpu_by_process()
    sample = run(server)
    sample.extra |= spread(before, _opened(server))
    cpu_after = server.cpu_by_process()
    children = [pid for pid in cpu_after if pid != server.pid]
    if children:  # context for the spread: each process's CPU seconds over the round (set-up included)
        sample.extra["cpu_by_process_s"] = [cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in sorted(children)]
        sample.extra["supervisor_cpu_s"] = cpu_after.get(server.pid, 0.0) - cpu_before.get(server.pid, 0.0)
    sample.extra["processes"] = len(children) or 1
    return sample
