"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.serverproc import ServerProcess, running_server


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    """A server with default settings on a free port (console in Spanish, as the seed)."""
    with running_server() as proc:
        yield proc


@pytest.fixture
def start_server() -> Iterator:
    """Start servers with custom arguments; all are stopped at the end of the test."""
    started: list = []

    def start(*args: str, **kwargs) -> ServerProcess:
        context = running_server(*args, **kwargs)
        proc = context.__enter__()
        started.append(context)
        return proc

    yield start
    for context in reversed(started):
        context.__exit__(None, None, None)


@pytest.fixture
def supervised() -> Iterator:
    """Start servers (a supervisor and its processes, say) each in a process group of its own;
    every group is killed at the end of the test."""
    started: list[ServerProcess] = []

    def start(*args: str, command: list[str] | None = None) -> ServerProcess:
        server = ServerProcess(*args, preexec_fn=os.setpgrp, command=command)
        started.append(server)
        return server

    yield start
    for server in started:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.kill()
