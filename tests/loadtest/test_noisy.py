"""W6 (noisy neighbours): what the abusers send, and how the figures are summarised and checked.

The run itself is the bench's (``python -m loadtest.bench --workloads W6``);
these tests hold its pieces to what BENCH.md asks, with no timing in them.
"""

from __future__ import annotations

import pytest

from loadtest import noisy, readcost, report
from loadtest.servers import OURS
from server import worker
from statemachine.session import Limits, Session


def _w6_sample(server: str, p99: dict[int, float], **extra: object) -> dict:
    figures: dict[str, object] = {}
    for abusers in noisy.LEVELS:
        figures |= {
            f"p50_us_{abusers}": p99[abusers] / 2,
            f"p99_us_{abusers}": p99[abusers],
            f"round_trips_{abusers}": 1e6 / p99[abusers],
        }
        if abusers:
            figures |= {
                f"p50_ratio_{abusers}": p99[abusers] / p99[0],
                f"p99_ratio_{abusers}": p99[abusers] / p99[0],
            }
    return {
        "workload": "W6",
        "server": server,
        "round": 1,
        "value": 1e6 / p99[10] if p99[10] != float("inf") else float("nan"),  # as when no reply came
        "replies": 100,
        "elapsed_s": 1.0,
        "p50_us": p99[10] / 2,
        "p99_us": p99[10],
        "server_cpu_us_per_reply": 10.0,
        "driver_cpu_us_per_reply": 10.0,
        "machine_busy": 0.5,
        "extra": figures | extra,
    }


def test_the_abusers_send_every_costly_content_and_only_whole_lines_the_server_answers():
    for name, data in readcost.CONTENTS.items():
        if name not in noisy._SKIPPED:
            assert data in noisy.PAYLOAD, name
    assert noisy.PAYLOAD.endswith(b"\n")
    session = Session(Limits(), 0.0)
    replies = b"".join(session.receive(noisy.PAYLOAD[i : i + 65536], 0.0) for i in range(0, len(noisy.PAYLOAD), 65536))
    assert session.is_open  # the abuse is answered, never refused: it costs the server all it can
    assert replies.count(b"\n") == noisy.PAYLOAD.count(b"\n")


def test_w6_checks_compare_ten_abusers_with_none_and_with_p2():
    samples = [
        _w6_sample(
            OURS,
            {0: 100.0, 1: 200.0, 4: 1000.0, 10: 6000.0},
            costliest_read="\\xff\\n",
            costliest_read_ms=3.0,
            costliest_read_ratio=3.0,
            ascii_read_ms=1.0,
        ),
        _w6_sample("P2", {0: 80.0, 1: 90.0, 4: 5000.0, 10: 5000.0}),
    ]
    rows = report.summarize(samples)
    checks = {check.demand: check for check in report.check_demand(rows)}
    assert checks["W6 honest p99 beside 10 abusers <= 50x its p99 beside none"].measured == "60.0x"
    assert not checks["W6 honest p99 beside 10 abusers <= 50x its p99 beside none"].met
    assert not checks["W6 honest p99 beside 10 abusers no worse than P2's"].met
    assert checks["W6 costliest 64 KiB read <= 4x plain ASCII"].met
    table = report.format_table(rows)
    assert "| upperecho (ours) | 10 | 3,000 | 6,000 | 60.0x | 60.0x | 167 |" in table
    assert "| P2 uvloop Protocol | 0 | 40 | 80 | 1 | 1 | 12,500 |" in table
    assert "costliest 64 KiB read | \\xff\\n | 3.00 ms | plain ASCII 1.00 ms | 3.0x" in table
    assert "still busy" not in table
    samples[0]["extra"]["server_idle_before_read_cost"] = False
    assert "| 3.0x | timed while the server was still busy |" in report.format_table(report.summarize(samples))


def test_a_level_where_the_honest_client_got_nothing_says_so():
    sample = _w6_sample("P2", {0: 80.0, 1: 90.0, 4: 100.0, 10: float("inf")}, failed_10="no reply within 30 s")
    table = report.format_table(report.summarize([sample]))
    assert "| P2 uvloop Protocol | 10 | no reply: no reply within 30 s |" in table


def test_the_distinct_invalid_contents_are_what_they_say():
    """Each line invalid and (nearly) no two alike: a table of the lines seen cannot help the server."""
    for name, size, distinct in (("distinct invalid lines", 4, 8100), ("distinct invalid 3-byte lines", 3, 21845)):
        lines = readcost.CONTENTS[name].split(b"\n")[:-1]
        assert {len(line) + 1 for line in lines} == {size}, name
        assert len(set(lines)) == distinct, name
        assert not any(line.decode(errors="replace") == line.decode(errors="surrogateescape") for line in lines), name
    assert len(readcost.CONTENTS["distinct invalid 3-byte lines"]) > readcost.READ_SIZE - 3  # a whole read of them


def test_the_read_the_bench_times_is_the_read_the_server_makes():
    assert readcost.READ_SIZE == worker.READ_SIZE


class _Clock:
    """A server whose CPU seconds are read from a list, one figure per look."""

    def __init__(self, figures: list[float]) -> None:
        self.figures = iter(figures)

    def cpu_seconds(self) -> float:
        return next(self.figures)


def test_the_read_cost_waits_until_the_server_has_stopped_working():
    window = 0.001
    busy, quiet = window, noisy.IDLE_SHARE * window / 2  # a whole core, then under the idle share
    draining = _Clock([0.0, busy, 2 * busy, 2 * busy + quiet])
    assert noisy.wait_idle(draining, window=window, timeout=10)
    with pytest.raises(StopIteration):  # it looked exactly until the quiet window
        draining.cpu_seconds()
    never = _Clock([float(i) for i in range(100_000)])
    assert not noisy.wait_idle(never, window=window, timeout=0.05)
