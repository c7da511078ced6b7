"""The benchmark: a --quick smoke run end to end, the driver's reply checks, and the report's arithmetic."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

from loadtest import driver, report, scaling
from loadtest.bench import parse_args
from loadtest.servers import ANCHOR, OURS, OURS_METRICS, PEERS, SPECS, RunningServer, ServerSpec, c0_unavailable
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
    anchor = () if c0_unavailable() else (ANCHOR,)
    classic = [w for w in report.WORKLOADS if w not in report.SCALING]
    contenders = (OURS, *PEERS, *anchor)
    tls = {name for name in contenders if name == OURS or SPECS[name].tls_only}
    assert "P1tls" in tls and len(tls) == 2
    applies = {(w, s) for w in classic for s in contenders if (s in tls) == w.startswith("W8") or s == OURS}
    single = {("W2", "P4"), ("W4", "P4"), ("W6", "P4")}  # workloads that need a concurrent server
    expected = applies - single
    expected = expected - {("W2m", s) for s in contenders} | {("W2m", OURS), ("W2m", OURS_METRICS)}  # ours beside ours
    expected |= {(w, spec.id) for w in report.SCALING for spec in scaling.contenders([*PEERS, *anchor])}
    assert set(rows) == expected
    for (workload, _), row in rows.items():
        if workload == "W6":  # beside ten abusers a peer may answer nothing: its own table says so
            assert row["extra"]["round_trips_0"] > 0 and row["extra"]["p99_us_0"] > 0
            continue
        assert row["value"] > 0
        numbers = [row["server_cpu_us"], row["driver_cpu_us"], row["machine_busy"]]
        if workload != "W2m":  # no peer there
            numbers.append(row["ratio_to_best_peer"])
        if workload != "W5":  # one pipelined burst has no per-reply latency
            numbers += [row["p50_us"], row["p99_us"]]
        assert all(math.isfinite(n) and n >= 0 for n in numbers), row
    not_applicable = ({(w, s) for w in classic if w != "W2m" for s in contenders} - applies) | single
    not_applicable |= {(w, ANCHOR) for w in report.WORKLOADS if not anchor}
    assert {(n["workload"], n["server"]) for n in document["not_applicable"]} == not_applicable
    if anchor:  # (not W5: one quick burst can cost C0 less than the 10 ms clock tick)
        assert all(math.isfinite(row["cpu_vs_c0"]) for (w, _), row in rows.items() if w in ("W2", "W7-W2"))
    for processes in scaling.process_counts()[1:]:
        spread = rows[("W7-W3", f"{OURS}-p{processes}")]["extra"]
        assert len(spread["sessions_by_process"]) == processes and sum(spread["sessions_by_process"]) > 0
    assert rows[("W4", OURS)]["extra"]["held"] > 0
    assert {check["demand"] for check in document["demand"]} >= {
        "W4 RSS per held connection <= 16 KiB",
        "W2m server CPU per reply with metrics on <= 1.05x off (O4)",
    }
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


def test_w2m_compares_metrics_on_with_off_and_is_no_peer():
    samples = [
        _sample("W2m", OURS, 1000.0, cpu=10.0),
        _sample("W2m", OURS_METRICS, 990.0, cpu=10.4),
        _sample("W2", OURS, 1000.0),
        _sample("W2", "P1", 500.0),
    ]
    rows = report.summarize(samples)
    check = next(c for c in report.check_demand(rows) if c.demand.startswith("W2m"))
    assert check.met and check.measured.startswith("1.040x")
    too_dear = report.check_demand(report.summarize([*samples, _sample("W2m", OURS_METRICS, 990.0, cpu=12.0)]))
    assert not next(c for c in too_dear if c.demand.startswith("W2m")).met  # median 11.2 us: 1.12x
    assert report.best_peer(rows, "W2m") is None
    assert "| W2m | upperecho, metrics on | 990 replies/s |" in report.format_table(rows)


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
        parse_args(["--workloads", "W9"])
    assert parse_args(["--servers", "upperecho,P2", "--workloads", "w1", "W5"]).workloads == ["W1", "W5"]
    assert parse_args(["--workloads", "W8"]).workloads == ["W8.1", "W8.2"]
    assert parse_args(["--workloads", "w8.2"]).workloads == ["W8.2"]
    assert parse_args(["--workloads", "W7", "W2"]).workloads == ["W7-W2", "W7-W3", "W2"]


def test_w7_spread_and_its_demand_lines():
    assert scaling.spread([10, 0], [70, 40]) == {"sessions_by_process": [60, 40], "spread_from_even": 0.2}
    assert scaling.spread(None, [1, 2]) == {}
    samples = [
        _sample("W7-W2", f"{OURS}-p1", 100.0, cpu=10.0),
        _sample("W7-W2", f"{OURS}-p2", 150.0, cpu=11.5),
        _sample("W7-W3", f"{OURS}-p2", 50.0, spread_from_even=0.3, sessions_by_process=[65, 35]),
    ]
    rows = report.summarize(samples)
    checks = {check.demand: check for check in report.check_demand(rows)}
    assert not checks["W7 W2 server CPU per reply with --processes 2 at most 10% over --processes 1"].met
    assert not checks["W7 W3 sessions within 20% of even over 2 processes"].met
    assert "65 / 35 | 30%" in report.format_scaling(rows)


RESULTS = ROOT / "loadtest" / "results"


def _committed_run() -> tuple[dict, list[report.Row], list[tuple[str, str, str]]]:
    document = json.loads((RESULTS / "bench.json").read_text(encoding="utf-8"))
    skipped = [(n["workload"], n["server"], n["reason"]) for n in document["not_applicable"]]
    return document, report.summarize(document["samples"]), skipped


def test_chart_of_the_committed_run_has_a_visible_bar_or_an_n_a_mark_in_every_slot():
    document, rows, skipped = _committed_run()
    workloads, servers, slots = report.chart_slots(rows, skipped)
    assert workloads == sorted(document["workloads"]) and servers == list(document["servers"])
    assert {(s.workload, s.server) for s in slots} == {(w, n) for w in workloads for n in servers}
    for slot in slots:
        if (slot.workload, slot.server) in {(w, n) for w, n, _ in skipped}:
            assert (slot.ratio, slot.cpu_drawn, slot.note) == (None, None, "n/a")
        else:
            assert slot.ratio > 0 and slot.cpu_drawn >= report.CPU_FLOOR_US, slot
    text = report.caption(workloads, skipped)
    for workload in workloads:
        assert f"{workload}: {report.WORKLOADS[workload][0]}" in text  # the chart says what each workload is
    assert "n/a: the server does not run that workload (serves one client at a time)" in text


def test_a_cpu_figure_of_zero_is_drawn_at_the_floor_and_marked():
    rows = report.summarize([_sample("W5", OURS, 9e5, cpu=0.0), _sample("W5", "P1", 1e5, cpu=8.0)])
    _, _, slots = report.chart_slots(rows)
    ours = next(slot for slot in slots if slot.server == OURS)
    assert (ours.cpu_us, ours.cpu_drawn, ours.note) == (0.0, report.CPU_FLOOR_US, f"<{report.CPU_FLOOR_US:g}")
    assert next(slot for slot in slots if slot.server == "P1").note == ""


def test_the_caption_explains_the_floor_mark_only_when_a_bar_carries_it():
    floor_line = f"CPU bars marked <{report.CPU_FLOOR_US:g}"
    assert floor_line in report.caption(["W5"], floor_marked=True)
    assert floor_line not in report.caption(["W5"])


def test_committed_table_and_chart_are_drawn_from_the_committed_json(tmp_path):
    """``python -m loadtest.report loadtest/results/bench.json`` gives back the committed table."""
    document, rows, skipped = _committed_run()
    assert report.main([str(RESULTS / "bench.json"), "--out", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text(encoding="utf-8")
    assert table == (RESULTS / "table.md").read_text(encoding="utf-8")
    assert table.startswith(report.heading(document))
    assert "issue" not in table.lower() and "Targets (see docs/benchmarks.md):" in table
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")


def test_help_cites_only_files_the_repository_has_and_names_each_workload():
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    cited = set(re.findall(r"[\w/.-]+\.md\b", result.stdout))
    assert cited and all((ROOT / path).is_file() for path in cited), cited
    for workload in report.WORKLOADS:
        assert re.search(rf"^\s+{workload}\s+\S", result.stdout, re.MULTILINE), workload


def test_make_bench_passes_its_options():
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "bench", "ARGS=--quick --workloads W1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].endswith("-m loadtest.bench --quick --workloads W1")
