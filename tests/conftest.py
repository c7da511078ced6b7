"""Fixtures shared by the whole suite."""

from __future__ import annotations

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
