"""Run Locust as a child process (``python -m locust``) and read its CSV results.

Locust monkey-patches the process it runs in for gevent, so it never runs
inside the test process itself.
"""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.serverproc import ROOT

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def locust_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--loglevel", "WARNING", *args]


def start_locust(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        locust_command(*args),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
    )


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    """Wait for a Locust process; kill it if it overruns.  Returns (exit status, output)."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate(timeout=10)
        raise AssertionError(f"locust did not finish within {timeout} s:\n{output[-3000:]}") from None
    return proc.returncode, output


def stop(procs: Sequence[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            pass


def stats(prefix: Path) -> dict[str, dict[str, str]]:
    """``{name: row}`` from ``<prefix>_stats.csv``; the total is under ``"Aggregated"``."""
    with open(f"{prefix}_stats.csv", newline="", encoding="utf-8") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def failures(prefix: Path) -> list[dict[str, str]]:
    with open(f"{prefix}_failures.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def free_port() -> int:
    """A port that was free a moment ago (Locust cannot bind port 0 for its master)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
