"""The collector on its own: it adds up the loops' counters and reads the states from the machine."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from server.metrics import DURATION_BUCKETS, LATENCY_BUCKETS, REFUSAL_REASONS, Collector, Counters, close_reasons
from statemachine.machine import STATES, TRANSITIONS

pytest.importorskip("prometheus_client", reason="prometheus_client is not installed (pip install '.[metrics]')")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def _worker(counters: Counters | None, *states: str | None) -> SimpleNamespace:
    conns = {
        fd: SimpleNamespace(session=None if state is None else SimpleNamespace(state=state))
        for fd, state in enumerate(states)
    }
    return SimpleNamespace(counters=counters, conns=conns)


def _scrape(collector: Collector) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_close_reasons_come_from_the_declaration():
    ending = {"CLOSING", "CLOSED"}
    declared = set()
    for transition in TRANSITIONS:
        sources = transition["source"] if isinstance(transition["source"], list) else [transition["source"]]
        if transition["dest"] in ending and any(source not in ending for source in sources):
            declared.add(transition["trigger"])
    assert set(close_reasons()) == declared


def test_counters_of_every_loop_are_added_up_and_new_reasons_appear():
    first, second = Counters(), Counters()
    first.opened, second.opened = 3, 4
    first.messages, second.messages = 10, 5
    first.bytes_in, second.bytes_out = 100, 70
    first.session_closed("disconnect", 0.5)
    second.session_closed("disconnect", 20.0)
    second.session_closed("line_timeout", 2.0)  # a reason another change may add: counted as it comes
    first.refuse("busy")
    second.refuse("per_address")
    first.answered(3, 0.0)  # since the epoch of the monotonic clock: lands in +Inf
    samples = _scrape(Collector([_worker(first, "CONNECTED", "ECHOING", None), _worker(second, "ECHOING", "CLOSED")]))
    assert samples[("upperecho_sessions_opened_total", ())] == 7
    assert samples[("upperecho_messages_total", ())] == 15
    assert samples[("upperecho_received_bytes_total", ())] == 100
    assert samples[("upperecho_sent_bytes_total", ())] == 70
    closed = {labels[0][1]: v for (name, labels), v in samples.items() if name == "upperecho_sessions_closed_total"}
    assert closed == {**dict.fromkeys(close_reasons(), 0.0), "disconnect": 2.0, "line_timeout": 1.0}
    refused = {
        labels[0][1]: v for (name, labels), v in samples.items() if name == "upperecho_connections_refused_total"
    }
    assert refused == {**dict.fromkeys(REFUSAL_REASONS, 0.0), "busy": 1.0, "per_address": 1.0}
    states = {labels[0][1]: v for (name, labels), v in samples.items() if name == "upperecho_sessions"}
    assert states == {**dict.fromkeys(STATES, 0.0), "CONNECTED": 1.0, "ECHOING": 2.0, "CLOSED": 1.0}
    duration = {
        labels[0][1]: v for (name, labels), v in samples.items() if name == "upperecho_session_duration_seconds_bucket"
    }
    assert len(duration) == len(DURATION_BUCKETS) + 1
    assert duration["1.0"] == 1 and duration["10.0"] == 2 and duration["60.0"] == 3 and duration["+Inf"] == 3
    assert samples[("upperecho_session_duration_seconds_sum", ())] == pytest.approx(22.5)
    assert samples[("upperecho_reply_latency_seconds_count", ())] == 3
    latency = {
        labels[0][1]: v for (name, labels), v in samples.items() if name == "upperecho_reply_latency_seconds_bucket"
    }
    assert len(latency) == len(LATENCY_BUCKETS) + 1


def test_a_state_the_machine_gains_is_reported(monkeypatch):
    import server.metrics as metrics

    monkeypatch.setattr(metrics, "STATES", [*STATES, "HANDSHAKE"])
    samples = _scrape(Collector([_worker(Counters(), "HANDSHAKE", "CONNECTED")]))
    assert samples[("upperecho_sessions", (("state", "HANDSHAKE"),))] == 1
    assert samples[("upperecho_sessions", (("state", "CONNECTED"),))] == 1


def test_loops_without_counters_report_zeros():
    samples = _scrape(Collector([_worker(None)]))
    assert samples[("upperecho_sessions_opened_total", ())] == 0
    assert samples[("upperecho_reply_latency_seconds_count", ())] == 0
