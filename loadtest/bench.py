"""``python -m loadtest.bench``: our server beside the peers P1-P4 on W1-W5 and over TLS (W8); see docs/benchmarks.md.

For each workload every server is started fresh, then the rounds run with
the servers interleaved (each round starts with a different one), so a
burst of noise on the shared machine lands on all of them rather than on
one.  The table, the target checks, ``bench.json`` and ``bench.png`` come
out at the end; ``--quick`` is a smoke run of a few seconds per workload.
W8 (``W8.1`` and ``W8.2``: W1 and W2 over TLS) runs our server with a throwaway
certificate made for the run, beside P1 over TLS, the peers that speak it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtest import driver, noisy, report, scaling
from loadtest.certs import CertError, throwaway_cert
from loadtest.servers import (
    ALL_SPECS,
    ANCHOR,
    OURS,
    OURS_METRICS,
    ROOT,
    SPECS,
    LaunchError,
    RunningServer,
    ServerSpec,
    c0_unavailable,
)


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
    w6_patience: float = noisy.PATIENCE  # seconds the honest client waits for a reply before giving up


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
    w6_patience=1.0,  # a smoke run need not wait 5 s to see that a peer answers nothing
)


@dataclass(frozen=True)
class Workload:
    id: str
    run: Callable[[RunningServer, Settings], driver.Sample]
    rounds: Callable[[Settings], int]
    concurrent: bool = False  # needs a server that serves several clients at once
    ours_args: tuple[str, ...] = ()
    fresh: bool = False  # a new server process for every round
    tls: bool = False  # over TLS: the servers get --tls-cert/--tls-key, the driver checks the certificate
    against: tuple[str, ...] = ()  # our server beside these variants of it, instead of the peers
    #: the servers it runs, from those selected (default: the selected ones themselves)
    contenders: Callable[[Sequence[str]], list[ServerSpec]] | None = None


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
            lambda s, c: noisy.noisy_neighbours(s, c.w6_seconds, c.w6_patience),
            lambda c: min(c.rounds, 3),  # four runs of W1 per round, each beside its abusers
            concurrent=True,
        ),
        Workload(
            "W8.1", lambda s, c: driver.closed_loop(s, 1, c.w1_seconds, 1, _cert()[0]), lambda c: c.rounds, tls=True
        ),
        Workload(
            "W8.2",
            lambda s, c: driver.closed_loop(s, c.w2_connections, c.w2_seconds, c.driver_processes, _cert()[0]),
            lambda c: c.rounds,
            concurrent=True,
            tls=True,
        ),
        Workload(
            "W2m",  # W2 with --metrics on beside W2 with it off, interleaved: what counting costs
            lambda s, c: driver.closed_loop(s, c.w2_connections, c.w2_seconds, c.driver_processes),
            lambda c: c.rounds,
            concurrent=True,
            against=(OURS_METRICS,),
        ),
        Workload(
            "W7-W2",
            lambda s, c: scaling.measure(
                s, lambda srv: driver.closed_loop(srv, c.w2_connections, c.w2_seconds, c.driver_processes)
            ),
            lambda c: c.rounds,
            concurrent=True,
            contenders=scaling.contenders,
        ),
        Workload(
            "W7-W3",
            lambda s, c: scaling.measure(
                s, lambda srv: driver.churn(srv, c.w3_loops, c.w3_seconds, c.driver_processes)
            ),
            lambda c: c.rounds,
            contenders=scaling.contenders,
        ),
    )
}
#: names that stand for several workloads
ALIASES: dict[str, list[str]] = {"W7": list(scaling.PARTS)}

_CERT: list[tuple[tempfile.TemporaryDirectory, str, str]] = []


def _cert() -> tuple[str, str]:
    """The run's throwaway certificate and key, made on first use, removed when the process exits."""
    if not _CERT:
        directory = tempfile.TemporaryDirectory(prefix="upperecho-bench-tls-")
        cert, key = throwaway_cert(Path(directory.name))
        _CERT.append((directory, str(cert), str(key)))
    _, cert, key = _CERT[0]
    return cert, key


def _tls_args() -> tuple[str, ...]:
    cert, key = _cert()
    return ("--tls-cert", cert, "--tls-key", key)


def _applies(workload: Workload, spec: ServerSpec) -> str | None:
    """Why ``spec`` is left out of ``workload``, or None when it takes part."""
    if workload.concurrent and not spec.concurrent:
        return "serves one client at a time"
    if workload.tls and spec.id != OURS and not spec.tls_only:
        return "speaks no TLS"
    if not workload.tls and spec.tls_only:
        return "speaks only TLS"
    return None


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


def _start(workload: Workload, specs: dict[str, ServerSpec], errors: list[str], host: str) -> dict[str, RunningServer]:
    """Start the servers together (their start-up overlaps) on ``host`` and wait until each listens."""
    try:
        tls = _tls_args() if workload.tls else ()
    except CertError as exc:
        errors.append(f"{workload.id}: {exc}")
        return {}
    where = ("--host", host)
    started = {}
    for name, spec in specs.items():
        try:
            started[name] = RunningServer(spec, where + (workload.ours_args if name == OURS else ()) + tls)
        except LaunchError as exc:
            errors.append(f"{workload.id} {name}: {exc}")
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
    workload: Workload, servers: Sequence[str], settings: Settings, host: str = "127.0.0.1"
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]], list[str]]:
    """Run the interleaved rounds of one workload: samples, not-applicable rows, errors.

    The servers are started for the workload, or for each round when the
    workload measures memory and needs a clean start (``fresh``).
    """
    samples: list[dict[str, Any]] = []
    errors: list[str] = []
    if workload.contenders is not None:
        specs = {spec.id: spec for spec in workload.contenders(servers)}
    elif workload.against:  # ours beside variants of ours, not the peers
        specs = {name: ALL_SPECS[name] for name in (OURS, *workload.against)} if OURS in servers else {}
    else:
        specs = {name: SPECS[name] for name in servers}
    skipped = [(workload.id, name, why) for name, spec in specs.items() if (why := _applies(workload, spec))]
    names = [name for name, spec in specs.items() if _applies(workload, spec) is None]
    rounds = workload.rounds(settings)
    running: dict[str, RunningServer] = {}
    try:
        for round_ in range(rounds):
            if round_ == 0 or workload.fresh:
                _stop(running)
                running.update(_start(workload, {name: specs[name] for name in names}, errors, host))
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
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="Run our server beside the peers P1-P4 on workloads W1-W5 and write a table, "
        "bench.json and a chart.  How it measures, and the latest results: docs/benchmarks.md.",
        epilog="workloads:\n"
        + "\n".join(f"  {w}  {what} ({unit})" for w, (what, unit) in report.WORKLOADS.items())
        + "\nservers:\n"
        + "\n".join(f"  {name:<9}  {spec.label}" for name, spec in SPECS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: one short round of each workload")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="directory for JSON, chart and table (default bench-results/)",
    )
    parser.add_argument(
        "--servers", nargs="+", default=list(SPECS), metavar="NAME", help=f"among {', '.join(SPECS)} (default: all)"
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=list(WORKLOADS),
        metavar="W",
        help=f"among {', '.join([*WORKLOADS, *ALIASES])} (W7 = W7-W2 and W7-W3, W8 = W8.1 and W8.2; default: all)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per workload (default 5; quick 1)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address every server listens on, e.g. ::1 (default %(default)s)"
    )
    args = parser.parse_args(argv)
    args.servers = [n for item in args.servers for n in item.split(",") if n]
    by_upper = {w.upper(): w for w in [*WORKLOADS, *ALIASES]}
    args.workloads = [by_upper.get(w.upper(), w.upper()) for item in args.workloads for w in item.split(",") if w]
    # A family name stands for its members: W7 for W7-W2 and W7-W3, W8 for W8.1 and W8.2.
    args.workloads = [part for w in args.workloads for part in ALIASES.get(w, [w])]
    args.workloads = [member for w in args.workloads for member in ([w] if w in WORKLOADS else _family(w)) or [w]]
    for name in args.servers:
        if name not in SPECS:
            parser.error(f"unknown server {name!r}; choose among {', '.join(SPECS)}")
    for workload in args.workloads:
        if workload not in WORKLOADS:
            parser.error(f"unknown workload {workload!r}; choose among {', '.join(WORKLOADS)}")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def _family(name: str) -> list[str]:
    return [w for w in WORKLOADS if w.startswith(f"{name}.")]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds is not None:
        settings = Settings(**{**asdict(settings), "rounds": args.rounds, "w5_rounds": args.rounds})
    skipped: list[tuple[str, str, str]] = []
    missing = c0_unavailable()
    if ANCHOR in args.servers and missing:
        args.servers.remove(ANCHOR)
        skipped += [(w, ANCHOR, missing) for w in args.workloads]
        _progress(f"C0 skipped: {missing}")
    descriptors = driver.raise_fd_limit()
    needed = settings.w4_held + 256  # the server holds them all in one process; the driver spreads them
    if "W4" in args.workloads and descriptors < needed:
        _progress(f"warning: open-file limit {descriptors} is below the {needed} W4 needs")
    started = time.monotonic()
    when = datetime.datetime.now(datetime.UTC)
    about = machine()
    version = code_version()
    samples: list[dict[str, Any]] = []
    errors: list[str] = []
    for workload_id in args.workloads:
        more, skip, failed = run_workload(WORKLOADS[workload_id], args.servers, settings, args.host)
        samples += more
        skipped += skip
        errors += failed
    about["load_average_at_end"] = os.getloadavg()
    rows = report.summarize(samples)
    checks = report.check_demand(rows)
    table = report.format_table(rows, skipped)
    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "date": when.isoformat(timespec="seconds"),
        "quick": args.quick,
        "host": args.host,
        "duration_s": time.monotonic() - started,
        "machine": about,
        "code": version,
        "settings": asdict(settings),
        "servers": {name: ALL_SPECS[name].label for name in args.servers},
        "workloads": {w: report.WORKLOADS[w][0] for w in args.workloads},
        "samples": samples,
        "not_applicable": [{"workload": w, "server": n, "reason": r} for w, n, r in skipped],
        "errors": errors,
    }
    report.write_json(args.out / "bench.json", document, rows, checks)
    heading = report.heading(document)
    text = report.format_text(heading, table, checks, errors, report.format_scaling(rows))
    (args.out / "table.md").write_text(text, encoding="utf-8")
    if rows:
        report.chart(args.out / "bench.png", rows, heading, skipped)
    print(text)
    print(f"written: {args.out / 'bench.json'}, {args.out / 'table.md'}, {args.out / 'bench.png'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
