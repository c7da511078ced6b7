"""The servers the benchmark compares, and how to start, watch and stop one.

Each is ``python -m <module> --port 0``; its first stdout line ends with the
address it listens on.  Output goes to files rather than pipes, so a server
that logs can never block on a full pipe while it is being measured.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

ROOT = Path(__file__).resolve().parent.parent
_ADDRESS = re.compile(r"(\S+):(\d+)\s*$")
OURS = "upperecho"
ANCHOR = "C0"  # the C limit: no peer, the yardstick for server CPU per reply
C0_SOURCE = ROOT / "loadtest" / "peers" / "c0.c"
C0_BINARY = ROOT / "build" / "c0" / "c0"


@dataclass(frozen=True)
class ServerSpec:
    """One contender: ``concurrent`` is False for a server that serves one client at a time."""

    id: str
    label: str
    module: str
    args: tuple[str, ...] = ()
    concurrent: bool = True
    tls_only: bool = False  # speaks only TLS: measured in the TLS workloads (W8) alone
    #: the command instead of ``python -m module`` (C0: built first)
    command: Callable[[], list[str]] | None = None


class LaunchError(RuntimeError):
    """A server did not start or did not say where it listens."""


def c0_unavailable() -> str | None:
    """Why C0 cannot run here (no C compiler), or None."""
    if shutil.which("cc") is None and not C0_BINARY.exists():
        return "no C compiler (cc) to build C0; install one (Debian: gcc)"
    return None


def c0_command() -> list[str]:
    """Build C0 with the system C compiler when its source is newer than the binary."""
    binary = C0_BINARY
    if not binary.exists() or binary.stat().st_mtime < C0_SOURCE.stat().st_mtime:
        compiler = shutil.which("cc")
        if compiler is None:
            raise LaunchError(c0_unavailable() or "no C compiler (cc)")
        binary.parent.mkdir(parents=True, exist_ok=True)
        building = binary.with_name(f"c0.{os.getpid()}")
        done = subprocess.run(
            [compiler, "-O2", "-o", str(building), str(C0_SOURCE)], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise LaunchError(f"building C0 failed: {done.stderr.strip()[-500:]}")
        os.replace(building, binary)  # atomic: a concurrent build cannot leave half a binary
    return [str(binary)]


def with_processes(count: int) -> ServerSpec:
    """Our server with ``--processes count`` (W7)."""
    return ServerSpec(f"{OURS}-p{count}", f"upperecho --processes {count}", "server", ("-q", "--processes", str(count)))


SPECS: dict[str, ServerSpec] = {
    spec.id: spec
    for spec in (
        ServerSpec(OURS, "upperecho (ours)", "server", ("-q",)),
        ServerSpec("P1", "P1 asyncio streams", "loadtest.peers.asyncio_streams"),
        ServerSpec("P2", "P2 uvloop Protocol", "loadtest.peers.uvloop_protocol"),
        ServerSpec("P3", "P3 ThreadingTCPServer", "loadtest.peers.threading_server"),
        ServerSpec("P4", "P4 blocking seed", "loadtest.peers.blocking_seed", concurrent=False),
        ServerSpec("P1tls", "P1 asyncio streams over TLS", "loadtest.peers.asyncio_tls", tls_only=True),
        ServerSpec(ANCHOR, "C0 C epoll (limit)", "", command=c0_command),
    )
}
PEERS = tuple(name for name in SPECS if name not in (OURS, ANCHOR))
OURS_METRICS = "upperecho+metrics"
#: Our server run another way, for rows that compare it with itself (W2m); not a contender of its own.
VARIANTS: dict[str, ServerSpec] = {
    OURS_METRICS: ServerSpec(OURS_METRICS, "upperecho, metrics on", "server", ("-q", "--metrics", "127.0.0.1:0")),
}
ALL_SPECS: dict[str, ServerSpec] = {**SPECS, **VARIANTS}


def _written(file: IO[bytes]) -> str:
    """What the server has written to ``file`` so far.

    The server writes through the same open file, so it shares the file's
    offset: a seek here would move where its next line lands (over what it wrote
    before). Positional reads leave the offset alone.
    """
    chunks = []
    fd, start = file.fileno(), 0
    while chunk := os.pread(fd, 65536, start):
        chunks.append(chunk)
        start += len(chunk)
    return b"".join(chunks).decode(errors="replace")


class RunningServer:
    """A started server process; ``stop()`` (or use as a context manager) ends it."""

    def __init__(self, spec: ServerSpec, extra_args: tuple[str, ...] = (), start_timeout: float = 30.0) -> None:
        self.spec = spec
        # The files live as long as the server: stop() closes them.
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        command = spec.command() if spec.command is not None else [sys.executable, "-m", spec.module]
        self.proc = subprocess.Popen(
            [*command, "--port", "0", *spec.args, *extra_args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
        )
        self._deadline = time.monotonic() + start_timeout
        self._address: tuple[str, int] | None = None
        self._process: psutil.Process | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.wait_started()

    def wait_started(self) -> tuple[str, int]:
        """The listening address, waiting for the first stdout line if it has not come yet."""
        while self._address is None:
            first = self._first_line()
            if first is not None:
                match = _ADDRESS.search(first)
                if not match:
                    self.kill()
                    raise LaunchError(f"{self.spec.label}: first line gives no address: {first!r}")
                host = match.group(1).removeprefix("[").removesuffix("]")  # "[::1]:PORT" (O7)
                self._address = (host, int(match.group(2)))
            elif self.proc.poll() is not None:
                raise LaunchError(f"{self.spec.label} exited ({self.proc.returncode}): {self.stderr()[-500:]}")
            elif time.monotonic() > self._deadline:
                self.kill()
                raise LaunchError(f"{self.spec.label} did not print its address in time")
            else:
                time.sleep(0.02)
        return self._address

    def _first_line(self) -> str | None:
        line = _written(self._out).partition("\n")
        return line[0] if line[1] else None

    def stderr(self) -> str:
        return _written(self._err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def process(self) -> psutil.Process:
        if self._process is None:
            self._process = psutil.Process(self.proc.pid)
        return self._process

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server so far, all threads, with its child processes (W7)."""
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[int, float]:
        """{pid: user + system CPU seconds} for the server process and each process it started."""
        found = {}
        for process in (self.process, *self._children()):
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            found[process.pid] = times.user + times.system
        return found

    def _children(self) -> list[psutil.Process]:
        try:
            return self.process.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def threads(self) -> int:
        return self.process.num_threads()

    def rss(self) -> int:
        return self.process.memory_info().rss

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; kill if it lingers.  Returns the exit status."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.kill()
        finally:
            self._out.close()
            self._err.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
