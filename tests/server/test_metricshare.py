"""The shared blocks of ``--metrics`` with ``--processes`` on their own: layout, seqlock, running total.

A process's counts go through its block and come out of the supervisor's
collector as the very text a single server's collector writes; a dead process's
counters stay in the total and its sessions leave the gauge.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from server.metrics import REFUSAL_REASONS, Collector, Counters, close_reasons
from server.metricshare import OTHER, Layout, SharedMetrics
from statemachine.machine import STATES

pytest.importorskip("prometheus_client", reason="prometheus_client is not installed (pip install '.[metrics]')")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

SERVER = Path(__file__).resolve().parents[2] / "server"


def _worker(counters: Counters, *states: str) -> SimpleNamespace:
    conns = {fd: SimpleNamespace(session=SimpleNamespace(state=state)) for fd, state in enumerate(states)}
    return SimpleNamespace(counters=counters, conns=conns)


def _text(collector: object) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def _busy_loop() -> Counters:
    counters = Counters()
    counters.opened, counters.messages, counters.bytes_in, counters.bytes_out = 5, 9, 120, 140
    counters.session_closed("disconnect", 0.004)
    counters.session_closed("idle_timeout", 30.0)
    counters.session_closed(None, 0.5)  # no trigger recorded: a key of its own, as with one process
    counters.refuse("busy")
    counters.refuse("tls")
    counters.answered(9, 0.0)
    return counters


def _publish(shared: SharedMetrics, slot: int, *workers: SimpleNamespace) -> None:
    shared.write(slot, shared.layout.encode(Collector(workers).totals()))


def test_a_process_block_scrapes_as_the_same_loops_would_alone():
    first = _worker(_busy_loop(), "ECHOING", "CLOSED")
    second = _worker(_busy_loop(), "CONNECTED")
    shared = SharedMetrics(processes=3)
    _publish(shared, 0, first)
    _publish(shared, 2, second)
    assert _text(shared) == _text(Collector([first, second]))


def test_a_dead_process_keeps_its_counters_and_takes_its_sessions():
    shared = SharedMetrics(processes=2)
    _publish(shared, 0, _worker(_busy_loop(), "ECHOING", "ECHOING"))
    _publish(shared, 1, _worker(_busy_loop(), "CONNECTED"))
    before = shared.totals()
    shared.retire(0)
    after = shared.totals()
    assert after.opened == before.opened == 10 and after.messages == 18 and after.closed == before.closed
    assert after.latency.counts == before.latency.counts and after.duration.total == before.duration.total
    assert before.states["ECHOING"] == 2 and after.states == {**dict.fromkeys(STATES, 0), "CONNECTED": 1}
    assert shared.read(0) == shared.layout.zeros(), "the slot is clear for the replacement"
    _publish(shared, 0, _worker(_busy_loop()))  # the replacement's own counts add on
    assert shared.totals().opened == 15
    assert shared.totals().refused == {**dict.fromkeys(REFUSAL_REASONS, 0), "busy": 3, "tls": 3}


def test_a_block_caught_mid_copy_is_read_as_its_last_whole_copy():
    shared = SharedMetrics(processes=1)
    _publish(shared, 0, _worker(_busy_loop(), "ECHOING"))
    assert shared.totals().opened == 5  # the reader keeps this copy
    size = shared.layout.size
    shared._map[0:8] = struct.pack("=q", 7)  # odd: a writer began a copy (and died in it)
    shared._map[8 : size - 8] = b"\xff" * (size - 16)  # half-written garbage
    assert shared.read(0) is None
    assert shared.totals().opened == 5
    shared.retire(0)
    assert shared.totals().opened == 5 and shared.totals().messages == 9


def test_every_refusal_the_server_counts_has_a_slot():
    counted = set()
    for source in SERVER.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "refuse":
                counted |= {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert counted and counted <= set(REFUSAL_REASONS)


def test_a_reason_without_a_slot_is_counted_as_other():
    counters = Counters()
    counters.session_closed("made_up_trigger", 1.0)
    counters.refuse("made_up_reason")
    shared = SharedMetrics(processes=1)
    _publish(shared, 0, _worker(counters))
    totals = shared.totals()
    assert totals.closed == {**dict.fromkeys(close_reasons(), 0), OTHER: 1}
    assert totals.refused == {**dict.fromkeys(REFUSAL_REASONS, 0), OTHER: 1}


def test_the_layout_follows_the_machine(monkeypatch):
    import server.metrics as metrics
    import server.metricshare as metricshare

    monkeypatch.setattr(metricshare, "STATES", [*STATES, "NEW_STATE"])
    monkeypatch.setattr(metrics, "STATES", [*STATES, "NEW_STATE"])
    layout = Layout()
    assert layout.states[-1] == "NEW_STATE" and set(close_reasons()) < set(layout.closed)
    totals = Collector([_worker(Counters(), "NEW_STATE")]).totals()
    assert layout.decode(layout.encode(totals)).states["NEW_STATE"] == 1
