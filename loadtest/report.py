"""Turn the bench's samples into the figures people read: one table, the demand checks, JSON and a chart.

Every figure is a median over the interleaved rounds, and every comparison is
a ratio measured in the same run (BENCH.md): the machine is shared and noisy,
so absolute numbers are context only.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest import noisy
from loadtest.servers import OURS, SPECS

# Workload id -> (what it does, the unit of its headline figure).
WORKLOADS: dict[str, tuple[str, str]] = {
    "W1": ("1 connection, 32-byte line, wait, repeat", "round trips/s"),
    "W2": ("100 connections doing W1 at once", "replies/s"),
    "W3": ("churn: connect, 1 line, DESCONEXION, close; 8 loops", "sessions/s"),
    "W4": ("10,000 connections held, W1 on one more", "round trips/s"),
    "W5": ("1 connection pipelines 200,000 lines", "lines/s"),
    "W6": ("noisy neighbours: W1 beside 10 abusers (0, 1, 4 in the W6 table)", "round trips/s"),
}


@dataclass
class Row:
    """The summary of one workload on one server (medians over rounds)."""

    workload: str
    server: str
    rounds: int
    value: float
    value_min: float
    value_max: float
    p50_us: float
    p99_us: float
    server_cpu_us: float
    driver_cpu_us: float
    machine_busy: float
    ratio_to_best_peer: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    """One line of the issue's performance demand, as measured."""

    demand: str
    measured: str
    met: bool


def _median(values: Iterable[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def summarize(samples: Sequence[dict[str, Any]]) -> list[Row]:
    """Medians per (workload, server) and each row's ratio to the best peer of its workload."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for sample in samples:
        grouped.setdefault((sample["workload"], sample["server"]), []).append(sample)
    rows = []
    for (workload, server), group in grouped.items():
        extra: dict[str, Any] = {}
        for key in group[0]["extra"]:
            numbers = [s["extra"][key] for s in group if isinstance(s["extra"].get(key), int | float)]
            extra[key] = _median(numbers) if len(numbers) == len(group) else group[0]["extra"][key]
        rows.append(
            Row(
                workload=workload,
                server=server,
                rounds=len(group),
                value=_median(s["value"] for s in group),
                value_min=min(s["value"] for s in group),
                value_max=max(s["value"] for s in group),
                p50_us=_median(s["p50_us"] for s in group),
                p99_us=_median(s["p99_us"] for s in group),
                server_cpu_us=_median(s["server_cpu_us_per_reply"] for s in group),
                driver_cpu_us=_median(s["driver_cpu_us_per_reply"] for s in group),
                machine_busy=_median(s["machine_busy"] for s in group),
                extra=extra,
            )
        )
    for workload in {row.workload for row in rows}:
        best = best_peer(rows, workload)
        if best is not None:
            for row in rows:
                if row.workload == workload:
                    row.ratio_to_best_peer = row.value / best.value
    order = {name: i for i, name in enumerate(SPECS)}
    rows.sort(key=lambda row: (row.workload, order.get(row.server, len(order))))
    return rows


def best_peer(rows: Sequence[Row], workload: str) -> Row | None:
    peers = [r for r in rows if r.workload == workload and r.server != OURS and not math.isnan(r.value)]
    return max(peers, key=lambda r: r.value) if peers else None


def _find(rows: Sequence[Row], workload: str, server: str) -> Row | None:
    return next((r for r in rows if r.workload == workload and r.server == server), None)


def check_demand(rows: Sequence[Row]) -> list[Check]:
    """The issue's demand, line by line, for the rows this run has."""
    checks = []

    def ratio(workload: str, peer: str, target: float, label: str) -> None:
        ours, other = _find(rows, workload, OURS), _find(rows, workload, peer)
        if ours and other:
            value = ours.value / other.value
            checks.append(Check(f"{workload} {label} >= {target:g}x {peer}", f"{value:.2f}x", value >= target))

    ratio("W2", "P1", 1.5, "replies/s")
    ours, p1 = _find(rows, "W2", OURS), _find(rows, "W2", "P1")
    if ours and p1:
        checks.append(
            Check(
                "W2 server CPU per reply below P1's",
                f"{ours.server_cpu_us:.1f} vs {p1.server_cpu_us:.1f} us",
                ours.server_cpu_us < p1.server_cpu_us,
            )
        )
    ratio("W2", "P2", 1.0, "replies/s (stretch)")
    ratio("W1", "P3", 1.0, "round trips/s")
    ours, best = _find(rows, "W3", OURS), best_peer(rows, "W3")
    if ours and best:
        checks.append(
            Check(
                f"W3 sessions/s >= 1x the best peer ({best.server})",
                f"{ours.ratio_to_best_peer:.2f}x",
                ours.ratio_to_best_peer >= 1.0,
            )
        )
    ratio("W5", "P1", 1.5, "lines/s")
    ours = _find(rows, "W4", OURS)
    if ours:
        extra = ours.extra
        held = int(extra["held"])
        checks.append(
            Check(
                f"W4 thread count unchanged with {held:,} held",
                f"{int(extra['threads_before'])} -> {int(extra['threads_held'])}",
                extra["threads_held"] == extra["threads_before"],
            )
        )
        checks.append(
            Check(
                "W4 RSS per held connection <= 16 KiB",
                f"{extra['rss_per_held_kib']:.2f} KiB",
                extra["rss_per_held_kib"] <= 16,
            )
        )
        checks.append(
            Check(
                "W4 active p99 <= 3x unloaded p99",
                f"{extra['p99_vs_unloaded']:.2f}x ({extra['unloaded_p99_us']:.0f} -> {ours.p99_us:.0f} us)",
                extra["p99_vs_unloaded"] <= 3,
            )
        )
    checks += _w6_checks(rows)
    return checks


def _w6_checks(rows: Sequence[Row]) -> list[Check]:
    """L16's demand: the honest client beside 10 abusers, against none and against P2."""
    ours, p2 = _find(rows, "W6", OURS), _find(rows, "W6", "P2")
    if ours is None:
        return []
    most = noisy.LEVELS[-1]
    ratio = ours.extra[f"p99_ratio_{most}"]
    checks = [Check(f"W6 honest p99 beside {most} abusers <= 50x its p99 beside none", f"{ratio:.1f}x", ratio <= 50)]
    if p2 is not None:
        mine, theirs = ours.extra[f"p99_us_{most}"], p2.extra[f"p99_us_{most}"]
        checks.append(
            Check(
                f"W6 honest p99 beside {most} abusers no worse than P2's",
                f"{mine:,.0f} vs {theirs:,.0f} us",
                mine <= theirs,
            )
        )
    if "costliest_read_ratio" in ours.extra:
        cost = ours.extra["costliest_read_ratio"]
        checks.append(
            Check(
                "W6 costliest 64 KiB read <= 4x plain ASCII",
                f"{cost:.1f}x ({ours.extra['costliest_read']})",
                cost <= 4,
            )
        )
    return checks


def _number(value: float, digits: int = 0) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _short(value: float) -> str:
    """3,970,765 -> 3.97M: compact, for the range column."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def format_table(rows: Sequence[Row], not_applicable: Sequence[tuple[str, str, str]] = ()) -> str:
    """The main table (Markdown, readable as plain text too), then W4's memory and threads."""
    lines = [
        "| workload | server | figure (median) | range over rounds | p50 us | p99 us | x best peer "
        "| server CPU us/reply | driver CPU us/reply | machine busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        unit = WORKLOADS.get(row.workload, ("", ""))[1]
        lines.append(
            f"| {row.workload} | {SPECS[row.server].label if row.server in SPECS else row.server} "
            f"| {_number(row.value)} {unit} | {_short(row.value_min)}-{_short(row.value_max)} "
            f"| {_number(row.p50_us)} | {_number(row.p99_us)} "
            f"| {_number(row.ratio_to_best_peer, 2)} | {_number(row.server_cpu_us, 1)} "
            f"| {_number(row.driver_cpu_us, 1)} | {_number(row.machine_busy * 100)}% |"
        )
    for workload, server, reason in not_applicable:
        lines.append(f"| {workload} | {SPECS[server].label} | n/a: {reason} | | | | | | | |")
    held = [row for row in rows if row.workload == "W4"]
    if held:
        lines += [
            "",
            "| W4 server | held | threads before -> held | RSS per held connection | "
            "p99 unloaded -> loaded (us) | loaded / unloaded |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in held:
            extra = row.extra
            lines.append(
                f"| {SPECS[row.server].label} | {int(extra['held']):,} "
                f"| {int(extra['threads_before'])} -> {int(extra['threads_held'])} "
                f"| {extra['rss_per_held_kib']:.2f} KiB "
                f"| {_number(extra['unloaded_p99_us'])} -> {_number(row.p99_us)} "
                f"| {extra['p99_vs_unloaded']:.2f}x |"
            )
    noisy_rows = [row for row in rows if row.workload == "W6"]
    if noisy_rows:
        lines += noisy.table(noisy_rows, {name: spec.label for name, spec in SPECS.items()})
    return "\n".join(lines)


def format_checks(checks: Sequence[Check]) -> str:
    return "\n".join(f"- [{'x' if c.met else ' '}] {c.demand}: {c.measured}" for c in checks)


def write_json(path: Path, document: dict[str, Any], rows: Sequence[Row], checks: Sequence[Check]) -> None:
    document = {**document, "summary": [asdict(r) for r in rows], "demand": [asdict(c) for c in checks]}
    path.write_text(json.dumps(document, indent=2, allow_nan=True) + "\n", encoding="utf-8")


def chart(path: Path, rows: Sequence[Row], title: str) -> None:
    """Two panels: each workload's figure as a ratio to its best peer, and server CPU per reply."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = sorted({row.workload for row in rows})
    servers = [name for name in SPECS if any(row.server == name for row in rows)]
    width = 0.8 / max(1, len(servers))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), constrained_layout=True)
    for i, server in enumerate(servers):
        xs, ratios, cpus = [], [], []
        for j, workload in enumerate(workloads):
            row = _find(rows, workload, server)
            if row is not None:
                xs.append(j + (i - (len(servers) - 1) / 2) * width)
                ratios.append(row.ratio_to_best_peer)
                cpus.append(row.server_cpu_us)
        label = SPECS[server].label
        top.bar(xs, ratios, width, label=label)
        bottom.bar(xs, cpus, width, label=label)
    top.axhline(1.0, color="black", linewidth=0.8)
    top.set_ylabel("figure / best peer's (higher is better)")
    top.set_title(title)
    bottom.set_ylabel("server CPU us per reply (lower is better)")
    bottom.set_yscale("log")
    for axis in (top, bottom):
        axis.set_xticks(range(len(workloads)), [f"{w}\n{WORKLOADS.get(w, ('', ''))[1]}" for w in workloads])
        axis.grid(axis="y", alpha=0.3)
    top.legend(fontsize="small", ncols=min(len(servers), 5))
    figure.savefig(path, dpi=100)
    plt.close(figure)
