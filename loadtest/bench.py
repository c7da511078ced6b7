"""``python -m loadtest.bench``: our server beside the peers P1-P4 on workloads W1-W5 (BENCH.md).

For each workload every server is started fresh, then the rounds run with
the servers interleaved (each round starts with a different one), so a
burst of noise on the shared machine lands on all of them rather than on
one.  The table, the demand checks, ``bench.json`` and ``bench.png`` come
out at the end; ``--quick`` is a smoke run of a few seconds per workload.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtest import driver, noisy, report
from loadtest.servers import OURS, ROOT, SPECS, LaunchError, RunningServer


@dataclass(frozen=True)
class Settings:
    """How big and how long each workload is; ``FULL`` and ``QUICK`` below."""

    rounds: int
    w1_seconds: float
    w2_connections: int
    w2_seconds: float
    w3_loops: int
    w3_seconds: float
    w4_held: int
    w4_seconds: float
    w5_lines: int
    w5_rounds: int
    driver_processes: int = 2
    holding_processes: int = 4
    w6_seconds: float = 2.0


# Many short rounds rather than a few long ones: on a shared machine the noise
# comes in bursts, and a median over interleaved rounds sheds them.
FULL = Settings(
    rounds=5,
    w1_seconds=1.5,
    w2_connections=100,
    w2_seconds=2.0,
    w3_loops=8,
    w3_seconds=1.5,
    w4_held=10_000,
    w4_seconds=1.0,
    w5_lines=200_000,
    w5_rounds=5,
)
QUICK = Settings(
    rounds=1,
    w1_seconds=0.3,
    w2_connections=20,
    w2_seconds=0.3,
    w3_loops=4,
    w3_seconds=0.3,
    w4_held=100,
    w4_seconds=0.3,
    w5_lines=20_000,
    w5_rounds=1,
    w6_seconds=0.3,
)


@dataclass(frozen=True)
class Workload:
    id: str
    run: Callable[[RunningServer, Settings], driver.Sample]
    rounds: Callable[[Settings], int]
    concurrent: bool = False  # needs a server that serves several clients at once
    ours_args: tuple[str, ...] = ()
    fresh: bool = False  # a new server process for every round


WORKLOADS: dict[str, Workload] = {
    w.id: w
    for w in (
        Workload("W1", lambda s, c: driver.closed_loop(s, 1, c.w1_seconds, 1), lambda c: c.rounds),
        Workload(
            "W2",
            lambda s, c: driver.closed_loop(s, c.w2_connections, c.w2_seconds, c.driver_processes),
            lambda c: c.rounds,
            concurrent=True,
        ),
        Workload("W3", lambda s, c: driver.churn(s, c.w3_loops, c.w3_seconds, c.driver_processes), lambda c: c.rounds),
        Workload(
            "W4",
            # Each round's server is thrown away, so it is killed before the held connections
            # close: 10,000 closes at once would keep a thread-per-client server busy for minutes.
            lambda s, c: driver.held_load(s, c.w4_held, c.w4_seconds, c.holding_processes, discard=s.kill),
            lambda c: min(c.rounds, 3),  # 10,000 connections per round: three are enough for a median
            concurrent=True,
            ours_args=("--max-connections", "10100"),
            fresh=True,  # memory per held connection needs a clean start
        ),
        Workload("W5", lambda s, c: driver.pipelined(s, c.w5_lines), lambda c: c.w5_rounds),
        Workload(
            "W6",
            lambda s, c: noisy.noisy_neighbours(s, c.w6_seconds),
            lambda c: min(c.rounds, 3),  # four runs of W1 per round, each beside its abusers
            concurrent=True,
        ),
    )
}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average_at_start": os.getloadavg(),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the measured packages differ from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--", "server", "statemachine", "client", "loadtest")
    return {"commit": commit or "unknown", "modified": bool(changed)}


def _sample_record(workload: str, server: str, round_: int, sample: driver.Sample) -> dict[str, Any]:
    return {
        "workload": workload,
        "server": server,
        "round": round_,
        "value": sample.value,
        "replies": sample.replies,
        "elapsed_s": sample.elapsed,
        "p50_us": sample.percentile(50),
        "p99_us": sample.percentile(99),
        "server_cpu_s": sample.server_cpu,
        "driver_cpu_s": sample.driver_cpu,
        "server_cpu_us_per_reply": sample.server_cpu_us_per_reply,
        "driver_cpu_us_per_reply": sample.driver_cpu_us_per_reply,
        "machine_busy": sample.machine_busy,
        "extra": sample.extra,
    }


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _start(workload: Workload, names: Sequence[str], errors: list[str]) -> dict[str, RunningServer]:
    """Start the servers together (their start-up overlaps) and wait until each listens."""
    started = {name: RunningServer(SPECS[name], workload.ours_args if name == OURS else ()) for name in names}
    running = {}
    for name, server in started.items():
        try:
            server.wait_started()
        except LaunchError as exc:
            errors.append(f"{workload.id} {name}: {exc}")
            server.stop()
        else:
            running[name] = server
    return running


def _stop(running: dict[str, RunningServer]) -> None:
    try:
        for server in running.values():
            server.stop()
    finally:  # interrupted or failed: leave no server behind
        for server in running.values():
            server.kill()
        running.clear()


def run_workload(
    workload: Workload, servers: Sequence[str], settings: Settings
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]], list[str]]:
    """Run the interleaved rounds of one workload: samples, not-applicable rows, errors.

    The servers are started for the workload, or for each round when the
    workload measures memory and needs a clean start (``fresh``).
    """
    samples: list[dict[str, Any]] = []
    errors: list[str] = []
    skipped = [
        (workload.id, name, "serves one client at a time")
        for name in servers
        if workload.concurrent and not SPECS[name].concurrent
    ]
    names = [name for name in servers if not (workload.concurrent and not SPECS[name].concurrent)]
    rounds = workload.rounds(settings)
    running: dict[str, RunningServer] = {}
    try:
        for round_ in range(rounds):
            if round_ == 0 or workload.fresh:
                _stop(running)
                running.update(_start(workload, names, errors))
            order = [name for name in names if name in running]
            shift = round_ % len(order) if order else 0
            for name in order[shift:] + order[:shift]:
                try:
                    sample = workload.run(running[name], settings)
                except driver.DriverError as exc:
                    errors.append(f"{workload.id} {name} round {round_ + 1}: {exc}")
                    _progress(f"{workload.id} round {round_ + 1}/{rounds} {name}: FAILED {exc}")
                    continue
                samples.append(_sample_record(workload.id, name, round_ + 1, sample))
                _progress(
                    f"{workload.id} round {round_ + 1}/{rounds} {name:>9}: {sample.value:>12,.0f} "
                    f"{report.WORKLOADS[workload.id][1]}, server CPU {sample.server_cpu_us_per_reply:.1f} us/reply"
                )
    finally:
        _stop(running)
    return samples, skipped, errors


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: one short round of each workload")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for JSON, chart and table")
    parser.add_argument(
        "--servers", nargs="+", default=list(SPECS), metavar="NAME", help=f"among {', '.join(SPECS)} (default: all)"
    )
    parser.add_argument(
        "--workloads", nargs="+", default=list(WORKLOADS), metavar="W", help="among W1..W6 (default: all)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per workload (default 5; quick 1)")
    args = parser.parse_args(argv)
    args.servers = [n for item in args.servers for n in item.split(",") if n]
    args.workloads = [w.upper() for item in args.workloads for w in item.split(",") if w]
    for name in args.servers:
        if name not in SPECS:
            parser.error(f"unknown server {name!r}; choose among {', '.join(SPECS)}")
    for workload in args.workloads:
        if workload not in WORKLOADS:
            parser.error(f"unknown workload {workload!r}; choose among {', '.join(WORKLOADS)}")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds is not None:
        settings = Settings(**{**asdict(settings), "rounds": args.rounds, "w5_rounds": args.rounds})
    descriptors = driver.raise_fd_limit()
    needed = settings.w4_held + 256  # the server holds them all in one process; the driver spreads them
    if "W4" in args.workloads and descriptors < needed:
        _progress(f"warning: open-file limit {descriptors} is below the {needed} W4 needs")
    started = time.monotonic()
    when = datetime.datetime.now(datetime.UTC)
    about = machine()
    version = code_version()
    samples: list[dict[str, Any]] = []
    skipped: list[tuple[str, str, str]] = []
    errors: list[str] = []
    for workload_id in args.workloads:
        more, skip, failed = run_workload(WORKLOADS[workload_id], args.servers, settings)
        samples += more
        skipped += skip
        errors += failed
    about["load_average_at_end"] = os.getloadavg()
    rows = report.summarize(samples)
    checks = report.check_demand(rows)
    table = report.format_table(rows, skipped)
    elapsed = time.monotonic() - started
    heading = (
        f"upperecho bench{' --quick' if args.quick else ''}, {when:%Y-%m-%d %H:%M} UTC, "
        f"commit {version['commit']}{' (modified)' if version['modified'] else ''}, "
        f"{about['cpus']} x {about['cpu_model']}, Python {about['python']}, {elapsed:.0f} s"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "date": when.isoformat(timespec="seconds"),
        "quick": args.quick,
        "duration_s": elapsed,
        "machine": about,
        "code": version,
        "settings": asdict(settings),
        "servers": {name: SPECS[name].label for name in args.servers},
        "workloads": {w: report.WORKLOADS[w][0] for w in args.workloads},
        "samples": samples,
        "not_applicable": [{"workload": w, "server": n, "reason": r} for w, n, r in skipped],
        "errors": errors,
    }
    report.write_json(args.out / "bench.json", document, rows, checks)
    text = f"{heading}\n\n{table}\n"
    if checks:
        text += f"\nDemand (issue 4):\n{report.format_checks(checks)}\n"
    if errors:
        text += "\nErrors:\n" + "\n".join(f"- {error}" for error in errors) + "\n"
    (args.out / "table.md").write_text(text, encoding="utf-8")
    if rows:
        report.chart(args.out / "bench.png", rows, heading)
    print(text)
    print(f"written: {args.out / 'bench.json'}, {args.out / 'table.md'}, {args.out / 'bench.png'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
