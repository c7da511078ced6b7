"""Turn the bench's samples into the figures people read: one table, the target checks, JSON and a chart.

Every figure is a median over the interleaved rounds, and every comparison is
a ratio measured in the same run (docs/benchmarks.md): the machine is shared
and noisy, so absolute numbers are context only.

``python -m loadtest.report bench.json`` draws the table and the chart again
from a saved run, e.g. the one in ``loadtest/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest import noisy
from loadtest.servers import ALL_SPECS, ANCHOR, OURS, OURS_METRICS, PEERS, SPECS

# Workload id -> (what it does, the unit of its headline figure).
WORKLOADS: dict[str, tuple[str, str]] = {
    "W1": ("1 connection, 32-byte line, wait, repeat", "round trips/s"),
    "W2": ("100 connections doing W1 at once", "replies/s"),
    "W3": ("churn: connect, 1 line, DESCONEXION, close; 8 loops", "sessions/s"),
    "W4": ("10,000 connections held, W1 on one more", "round trips/s"),
    "W5": ("1 connection pipelines 200,000 lines", "lines/s"),
    "W6": ("noisy neighbours: W1 beside 10 abusers (0, 1, 4 in the W6 table)", "round trips/s"),
    "W8.1": ("W1 over TLS 1.3", "round trips/s"),
    "W8.2": ("W2 over TLS 1.3", "replies/s"),
    "W2m": ("W2 with --metrics on, beside W2 with it off", "replies/s"),
    "W7-W2": ("W2 with --processes 1..cores", "replies/s"),
    "W7-W3": ("W3 with --processes 1..cores", "sessions/s"),
}
SCALING = ("W7-W2", "W7-W3")


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
    cpu_vs_c0: float = float("nan")  # server CPU per reply / C0's in the same workload
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    """One performance target of docs/benchmarks.md, as measured."""

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
        anchor = _find(rows, workload, ANCHOR)
        if anchor is not None and anchor.server_cpu_us > 0:
            for row in rows:
                if row.workload == workload:
                    row.cpu_vs_c0 = row.server_cpu_us / anchor.server_cpu_us
    order = {name: i for i, name in enumerate(ALL_SPECS)}
    rows.sort(key=lambda row: (row.workload, order.get(row.server, len(order))))
    return rows


def best_peer(rows: Sequence[Row], workload: str) -> Row | None:
    peers = [r for r in rows if r.workload == workload and r.server in PEERS and not math.isnan(r.value)]
    return max(peers, key=lambda r: r.value) if peers else None


def _find(rows: Sequence[Row], workload: str, server: str) -> Row | None:
    return next((r for r in rows if r.workload == workload and r.server == server), None)


def check_demand(rows: Sequence[Row]) -> list[Check]:
    """The performance targets, line by line, for the rows this run has."""
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
    off, on = _find(rows, "W2m", OURS), _find(rows, "W2m", OURS_METRICS)
    if off and on:
        cost = on.server_cpu_us / off.server_cpu_us
        checks.append(
            Check(
                "W2m server CPU per reply with metrics on <= 1.05x off (O4)",
                f"{cost:.3f}x ({off.server_cpu_us:.2f} -> {on.server_cpu_us:.2f} us)",
                cost <= 1.05,
            )
        )
    ours, p2 = _find(rows, "W2", OURS), _find(rows, "W2", "P2")
    if ours and p2:
        checks.append(
            Check(
                "W2 server CPU per reply at most P2's",
                f"{ours.server_cpu_us:.1f} vs {p2.server_cpu_us:.1f} us",
                ours.server_cpu_us <= p2.server_cpu_us,
            )
        )
    checks += _scaling_checks(rows)
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


def _scaling_checks(rows: Sequence[Row]) -> list[Check]:
    """W7's demand (docs/benchmarks.md): the sharing costs nothing per message, sessions spread evenly."""
    checks = []
    one, two = _find(rows, "W7-W2", f"{OURS}-p1"), _find(rows, "W7-W2", f"{OURS}-p2")
    if one and two:
        ratio = two.server_cpu_us / one.server_cpu_us
        checks.append(
            Check(
                "W7 W2 server CPU per reply with --processes 2 at most 10% over --processes 1",
                f"{two.server_cpu_us:.1f} vs {one.server_cpu_us:.1f} us ({ratio:.2f}x)",
                ratio <= 1.10,  # the supervisor and the sharing cost nothing per message; less is no fault
            )
        )
    for row in rows:
        if row.workload == "W7-W3" and "spread_from_even" in row.extra:
            spread = row.extra["spread_from_even"]
            checks.append(
                Check(
                    f"W7 W3 sessions within 20% of even over {row.server.rsplit('-p', 1)[-1]} processes",
                    f"{spread * 100:.0f}% from even",
                    spread <= 0.20,
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
        "| server CPU us/reply | CPU / C0 | driver CPU us/reply | machine busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.workload in SCALING:
            continue  # their own table: format_scaling
        unit = WORKLOADS.get(row.workload, ("", ""))[1]
        lines.append(
            f"| {row.workload} | {ALL_SPECS[row.server].label if row.server in ALL_SPECS else row.server} "
            f"| {_number(row.value)} {unit} | {_short(row.value_min)}-{_short(row.value_max)} "
            f"| {_number(row.p50_us)} | {_number(row.p99_us)} "
            f"| {_number(row.ratio_to_best_peer, 2)} | {_number(row.server_cpu_us, 1)} "
            f"| {_number(row.cpu_vs_c0, 2)} | {_number(row.driver_cpu_us, 1)} | {_number(row.machine_busy * 100)}% |"
        )
    for workload, server, reason in not_applicable:
        if workload not in SCALING:
            lines.append(f"| {workload} | {ALL_SPECS[server].label} | n/a: {reason} | | | | | | | | |")
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


def format_scaling(rows: Sequence[Row]) -> str:
    """W7: each process count beside C0 and P2, for W2 and W3."""

    def order(row: Row) -> tuple[str, int, int]:
        prefix = f"{OURS}-p"
        if row.server.startswith(prefix):
            return (row.workload, 0, int(row.server[len(prefix) :]))
        return (row.workload, 1, list(SPECS).index(row.server) if row.server in SPECS else 0)

    scaling = sorted((row for row in rows if row.workload in SCALING), key=order)
    if not scaling:
        return ""
    lines = [
        "| W7 | server | figure (median) | range over rounds | server CPU us/reply | CPU / C0 "
        "| sessions per process (round 1) | from even | CPU s per process (round 1) | machine busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in scaling:
        extra = row.extra
        label = SPECS[row.server].label if row.server in SPECS else row.server.replace(f"{OURS}-p", "upperecho x")
        taken = extra.get("sessions_by_process")
        cpu = extra.get("cpu_by_process_s")
        lines.append(
            f"| {row.workload[3:]} | {label} | {_number(row.value)} {WORKLOADS[row.workload][1]} "
            f"| {_short(row.value_min)}-{_short(row.value_max)} | {_number(row.server_cpu_us, 1)} "
            f"| {_number(row.cpu_vs_c0, 2)} | {' / '.join(str(n) for n in taken) if taken else '-'} "
            f"| {_number(extra['spread_from_even'] * 100) + '%' if 'spread_from_even' in extra else '-'} "
            f"| {' / '.join(f'{c:.2f}' for c in cpu) if cpu else '-'} | {_number(row.machine_busy * 100)}% |"
        )
    return "\n".join(lines)


def format_checks(checks: Sequence[Check]) -> str:
    return "\n".join(f"- [{'x' if c.met else ' '}] {c.demand}: {c.measured}" for c in checks)


def write_json(path: Path, document: dict[str, Any], rows: Sequence[Row], checks: Sequence[Check]) -> None:
    document = {**document, "summary": [asdict(r) for r in rows], "demand": [asdict(c) for c in checks]}
    path.write_text(json.dumps(document, indent=2, allow_nan=True) + "\n", encoding="utf-8")


def format_text(heading: str, table: str, checks: Sequence[Check], errors: Sequence[str], scaling: str = "") -> str:
    """What the bench prints and writes to ``table.md``."""
    text = f"{heading}\n\n{table}\n"
    if scaling:
        text += f"\n{scaling}\n"
    if checks:
        text += f"\nTargets (see docs/benchmarks.md):\n{format_checks(checks)}\n"
    if errors:
        text += "\nErrors:\n" + "\n".join(f"- {error}" for error in errors) + "\n"
    return text


def heading(document: dict[str, Any]) -> str:
    """One line saying what was measured, when, on what."""
    when = datetime.datetime.fromisoformat(document["date"])
    code, about = document["code"], document["machine"]
    return (
        f"upperecho bench{' --quick' if document['quick'] else ''}, {when:%Y-%m-%d %H:%M} UTC, "
        f"commit {code['commit']}{' (modified)' if code['modified'] else ''}, "
        f"{about['cpus']} x {about['cpu_model']}, Python {about['python']}, {document['duration_s']:.0f} s"
    )


# On the CPU panel's log axis a figure of 0 (below the resolution of the CPU
# clock over the run) would vanish: such bars are drawn at this floor, marked.
CPU_FLOOR_US = 0.1


@dataclass(frozen=True)
class Slot:
    """One server's place in one workload's group of bars, and what is drawn there."""

    workload: str
    server: str
    x: float
    ratio: float | None  # None: the server does not run this workload
    cpu_us: float | None
    note: str = ""  # "n/a", or the floor mark of a CPU figure drawn at the floor

    @property
    def cpu_drawn(self) -> float | None:
        return None if self.cpu_us is None else max(self.cpu_us, CPU_FLOOR_US)


def chart_slots(
    rows: Sequence[Row], not_applicable: Sequence[tuple[str, str, str]] = ()
) -> tuple[list[str], list[str], list[Slot]]:
    """The workloads, the servers and every bar slot of the chart (the data it is drawn from)."""
    skipped = {(workload, server) for workload, server, _ in not_applicable}
    workloads = sorted({row.workload for row in rows} | {workload for workload, _ in skipped})
    servers = [name for name in SPECS if any(row.server == name for row in rows)]
    width = 0.8 / max(1, len(servers))
    slots = []
    for j, workload in enumerate(workloads):
        for i, server in enumerate(servers):
            x = j + (i - (len(servers) - 1) / 2) * width
            row = _find(rows, workload, server)
            if row is not None:
                low = row.server_cpu_us < CPU_FLOOR_US
                slots.append(
                    Slot(workload, server, x, row.ratio_to_best_peer, row.server_cpu_us, f"<{CPU_FLOOR_US:g}" * low)
                )
            elif (workload, server) in skipped:
                slots.append(Slot(workload, server, x, None, None, "n/a"))
    return workloads, servers, slots


def caption(
    workloads: Sequence[str], not_applicable: Sequence[tuple[str, str, str]] = (), floor_marked: bool = False
) -> str:
    """What each workload is, why a slot is empty, and (when a bar is marked so) what the floor mark means."""
    names = [f"{w}: {WORKLOADS[w][0]}" for w in workloads if w in WORKLOADS]
    lines = ["   ".join(names[i : i + 3]) for i in range(0, len(names), 3)]
    reasons = sorted({reason for _, _, reason in not_applicable})
    if reasons:
        lines.append(f"n/a: the server does not run that workload ({'; '.join(reasons)})")
    if floor_marked:
        floor = f"{CPU_FLOOR_US:g}"
        lines.append(f"CPU bars marked <{floor}: below the CPU clock's resolution, drawn at {floor} us")
    return "\n".join(lines)


def chart(path: Path, rows: Sequence[Row], title: str, not_applicable: Sequence[tuple[str, str, str]] = ()) -> None:
    """Two panels: each workload's figure as a ratio to its best peer, and server CPU per reply."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if row.workload not in SCALING]
    workloads, servers, slots = chart_slots(rows, not_applicable)
    width = 0.8 / max(1, len(servers))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 9), layout="constrained")
    colours = {server: f"C{i}" for i, server in enumerate(servers)}
    for server in servers:
        drawn = [slot for slot in slots if slot.server == server and slot.ratio is not None]
        xs = [slot.x for slot in drawn]
        label = ALL_SPECS[server].label
        top.bar(xs, [slot.ratio for slot in drawn], width, label=label, color=colours[server])
        bottom.bar(
            xs,
            [slot.cpu_drawn for slot in drawn],
            width,
            color=colours[server],
            hatch=[("//" if slot.note else None) for slot in drawn],
        )
    for slot in slots:
        if slot.note == "n/a":
            for axis, y in ((top, 0.02), (bottom, CPU_FLOOR_US)):
                axis.text(slot.x, y, "n/a", ha="center", va="bottom", rotation=90, fontsize="small", color="dimgray")
        elif slot.note:
            bottom.text(slot.x, slot.cpu_drawn, slot.note, ha="center", va="bottom", fontsize="small")
    top.axhline(1.0, color="black", linewidth=0.8)
    top.set_ylabel("figure / best peer's (higher is better)")
    bottom.set_ylabel("server CPU us per reply (lower is better)")
    bottom.set_yscale("log")
    bottom.set_ylim(bottom=CPU_FLOOR_US / 2)
    for axis in (top, bottom):
        axis.set_xticks(range(len(workloads)), [f"{w}\n{WORKLOADS.get(w, ('', ''))[1]}" for w in workloads])
        axis.grid(axis="y", alpha=0.3)
    top.set_title(title)
    figure.legend(loc="outside upper center", ncols=min(len(servers), 5), fontsize="small")
    marked = any(slot.note and slot.note != "n/a" for slot in slots)
    figure.supxlabel(caption(workloads, not_applicable, marked), fontsize="small")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.report", description="Draw a saved bench run's table and chart again."
    )
    parser.add_argument("json", type=Path, help="a bench.json written by python -m loadtest.bench")
    parser.add_argument("--out", type=Path, help="directory for table.md and bench.png (default: the JSON's)")
    args = parser.parse_args(argv)
    try:
        document = json.loads(args.json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.json}: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.json.parent
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(document["samples"])
    skipped = [(n["workload"], n["server"], n["reason"]) for n in document["not_applicable"]]
    title = heading(document)
    text = format_text(title, format_table(rows, skipped), check_demand(rows), document["errors"])
    (out / "table.md").write_text(text, encoding="utf-8")
    chart(out / "bench.png", rows, title, skipped)
    print(f"written: {out / 'table.md'}, {out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
