"""Start the real server (``python -m server --port 0``) for a test and clean it up.

The address is read back from the server's first stdout line.  Its stdout and
stderr are collected by reader threads so that a test can wait for a console
line with a deadline instead of sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_ADDRESS = re.compile(r"(\S+):(\d+)\s*$")


class ServerProcess:
    """A server child process with its console output captured line by line."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        start_timeout: float = 30.0,
        preexec_fn=None,
        module: str = "server",
        command: Sequence[str] | None = None,
        launcher: Sequence[str] | None = None,
    ) -> None:
        """``command`` replaces ``python -m server``; ``launcher`` what follows the interpreter instead of
        ``-m server`` (e.g. a ``-c`` wrapper); the flags follow either."""
        self.args = ["--port", "0", *args] if "--port" not in args else list(args)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [*(command or (sys.executable, *(launcher or ("-m", module)))), *self.args],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            preexec_fn=preexec_fn,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            first = self.wait_for_line(lambda line: True, timeout=start_timeout)
        except TimeoutError:
            self.kill()
            raise
        match = _ADDRESS.search(first)
        if not match:
            self.kill()
            raise RuntimeError(f"server's first line does not give an address: {first!r}")
        self.host = match.group(1).removeprefix("[").removesuffix("]")  # "[::1]:PORT" (O7)
        self.port = int(match.group(2))

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, predicate, timeout: float = 30.0, stream: str = "stdout", start: int = 0) -> str:
        """Wait until a line of ``stream`` (from index ``start``) satisfies ``predicate``."""
        lines = self.stdout if stream == "stdout" else self.stderr
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = start
            while True:
                for line in lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching {stream} line within {timeout} s; got {lines[-20:]!r}")
                if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise RuntimeError(f"server exited ({self.proc.returncode}); {stream}: {lines[-20:]!r}")
                self._changed.wait(min(remaining, 0.2))

    def wait_for_text(self, text: str, timeout: float = 30.0, stream: str = "stdout", start: int = 0) -> str:
        return self.wait_for_line(lambda line: text in line, timeout=timeout, stream=stream, start=start)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the exit, and return the exit status."""
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def threads(self) -> int:
        """The server process's thread count (Linux /proc)."""
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def rss(self) -> int:
        """Resident memory of the server process in bytes (Linux /proc)."""
        with open(f"/proc/{self.proc.pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def running_server(*args: str, **kwargs) -> Iterator[ServerProcess]:
    """A server for the duration of a ``with`` block; killed if still running at the end."""
    server = ServerProcess(*args, **kwargs)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            try:
                server.stop(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        server.kill()


def quiet(*args: str) -> Sequence[str]:
    """Arguments for a server that logs only warnings (load tests)."""
    return ("-q", *args)
