"""Run ``python -m client`` as a user would, with no UPPERECHO_* variables leaking in from outside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from tests.serverproc import ROOT


def client_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("UPPERECHO_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def default_sigint() -> None:
    """For a child: take Ctrl-C as a user's terminal would deliver it.

    A shell starts background jobs with SIGINT ignored, and a Python started
    that way never raises KeyboardInterrupt; the tests must not depend on how
    the suite itself was started.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_client(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess:
    """The finished client: bytes on stdout, text on stderr, its exit status."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    result = subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=ROOT,
        env=env or client_env(),
        capture_output=True,
        timeout=90,
        **kwargs,
    )
    result.stderr = result.stderr.decode("utf-8", errors="replace")
    return result


def one_error_line(stderr: str) -> str:
    """The client's only stderr line, which must be a clear ``error:`` and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
