"""The benchmark: a --quick smoke run end to end, the driver's reply checks, and the report's arithmetic."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from loadtest import driver, report
from loadtest.bench import parse_args
from loadtest.servers import OURS, PEERS, RunningServer, ServerSpec
from tests.serverproc import ROOT

CARELESS = ServerSpec("careless", "careless peer", "tests.loadtest.careless_peer")


@pytest.mark.timeout(240)
def test_quick_bench_writes_a_table_json_and_chart_with_numbers_in_every_row(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = (tmp_path / "table.md").read_text(encoding="utf-8")
    assert "| workload | server |" in table
    assert table in run.stdout
    document = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert document["errors"] == []
    rows = {(row["workload"], row["server"]): row for row in document["summary"]}
    single = {("W2", "P4"), ("W4", "P4"), ("W6", "P4")}  # workloads that need a concurrent server
    expected = {(w, s) for w in report.WORKLOADS for s in (OURS, *PEERS)} - single
    assert set(rows) == expected
    for (workload, _), row in rows.items():
        if workload == "W6":  # beside ten abusers a peer may answer nothing: its own table says so
            assert row["extra"]["round_trips_0"] > 0 and row["extra"]["p99_us_0"] > 0
            continue
        assert row["value"] > 0
        numbers = [row["ratio_to_best_peer"], row["server_cpu_us"], row["driver_cpu_us"], row["machine_busy"]]
        if workload != "W5":  # one pipelined burst has no per-reply latency
            numbers += [row["p50_us"], row["p99_us"]]
        assert all(math.isfinite(n) and n >= 0 for n in numbers), row
    assert {(n["workload"], n["server"]) for n in document["not_applicable"]} == single
    assert rows[("W4", OURS)]["extra"]["held"] > 0
    assert {check["demand"] for check in document["demand"]} >= {"W4 RSS per held connection <= 16 KiB"}
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "workload",
    [
        lambda server: driver.closed_loop(server, 1, 0.2, 1),
        lambda server: driver.closed_loop(server, 6, 0.2, 2),
        lambda server: driver.churn(server, 2, 0.2, 2),
        lambda server: driver.held_load(server, 4, 0.2, 2),
        lambda server: driver.pipelined(server, 1000),
    ],
    ids=["W1", "W2", "W3", "W4", "W5"],
)
def test_driver_checks_every_reply(workload):
    with RunningServer(CARELESS) as careless, pytest.raises(driver.DriverError, match="wrong reply|differ"):
        workload(careless)


def _sample(workload: str, server: str, value: float, cpu: float = 10.0, **extra) -> dict:
    return {
        "workload": workload,
        "server": server,
        "value": value,
        "p50_us": 50.0,
        "p99_us": 90.0,
        "server_cpu_us_per_reply": cpu,
        "driver_cpu_us_per_reply": 5.0,
        "machine_busy": 0.5,
        "extra": extra,
    }


def test_summary_takes_medians_over_rounds_and_ratios_to_the_best_peer():
    samples = [
        _sample("W2", OURS, 100.0),
        _sample("W2", OURS, 300.0),
        _sample("W2", OURS, 200.0),
        _sample("W2", "P1", 50.0),
        _sample("W2", "P2", 160.0),
    ]
    rows = {row.server: row for row in report.summarize(samples)}
    assert rows[OURS].value == 200.0
    assert (rows[OURS].value_min, rows[OURS].value_max) == (100.0, 300.0)
    assert rows[OURS].rounds == 3
    assert rows[OURS].ratio_to_best_peer == pytest.approx(1.25)
    assert rows["P2"].ratio_to_best_peer == 1.0
    assert rows["P1"].ratio_to_best_peer == pytest.approx(50 / 160)


def test_demand_checks_say_which_lines_fall_short():
    samples = [
        _sample("W2", OURS, 140.0, cpu=8.0),
        _sample("W2", "P1", 100.0, cpu=9.0),
        _sample("W2", "P2", 150.0),
        _sample("W3", OURS, 90.0),
        _sample("W3", "P4", 100.0),
        _sample(
            "W4",
            OURS,
            1000.0,
            held=10000,
            threads_before=2,
            threads_held=2,
            rss_per_held_kib=20.0,
            unloaded_p99_us=30.0,
            p99_vs_unloaded=3.0,
        ),
    ]
    checks = {check.demand: check for check in report.check_demand(report.summarize(samples))}
    assert not checks["W2 replies/s >= 1.5x P1"].met
    assert checks["W2 replies/s >= 1.5x P1"].measured == "1.40x"
    assert checks["W2 server CPU per reply below P1's"].met
    assert not checks["W2 replies/s (stretch) >= 1x P2"].met
    assert not checks["W3 sessions/s >= 1x the best peer (P4)"].met
    assert checks["W4 thread count unchanged with 10,000 held"].met
    assert not checks["W4 RSS per held connection <= 16 KiB"].met
    assert checks["W4 active p99 <= 3x unloaded p99"].met
    assert "W1 round trips/s >= 1x P3" not in checks  # no P3 row: nothing to compare


def test_table_has_a_row_per_server_and_says_why_one_is_missing():
    rows = report.summarize([_sample("W2", OURS, 1_500_000.0), _sample("W2", "P1", 900.0)])
    table = report.format_table(rows, [("W2", "P4", "serves one client at a time")])
    assert "| W2 | upperecho (ours) | 1,500,000 replies/s | 1.5M-1.5M |" in table
    assert "| W2 | P1 asyncio streams | 900 replies/s | 900-900 |" in table
    assert "| W2 | P4 blocking seed | n/a: serves one client at a time |" in table


def test_percentile_by_nearest_rank():
    values = list(range(1, 101))
    assert driver.percentile(values, 50) == 50
    assert driver.percentile(values, 99) == 99
    assert driver.percentile(values, 100) == 100
    assert driver.percentile([7.0], 99) == 7.0
    assert math.isnan(driver.percentile([], 50))


def test_clients_are_split_over_processes_without_empty_ones():
    assert driver.split(100, 2) == [50, 50]
    assert driver.split(10_000, 3) == [3334, 3333, 3333]
    assert driver.split(1, 4) == [1]


def test_unknown_server_or_workload_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--servers", "P9"])
    assert "unknown server 'P9'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--workloads", "W7"])
    assert parse_args(["--servers", "upperecho,P2", "--workloads", "w1", "W5"]).workloads == ["W1", "W5"]
