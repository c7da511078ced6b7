"""Fixtures of the core's tests: every line-mode stream is checked through each path."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from statemachine import Limits, Session
from tests.statemachine.feeding import T0, drip, feed

#: one read, or one byte per read; with or without an ``on_message`` hook, which
#: sends every block down the per-line path instead of the whole-block fast path.
WAYS = ["one-read", "one-byte-reads", "hooked-one-read", "hooked-one-byte-reads"]

Run = Callable[..., tuple[bytes, Session]]


@pytest.fixture(params=WAYS)
def run(request: pytest.FixtureRequest) -> Run:
    """``run(data, **limits)`` feeds ``data`` to a new session and returns (replies, session)."""

    def run(data: bytes, **limits: object) -> tuple[bytes, Session]:
        hook = (lambda text, reply: None) if request.param.startswith("hooked") else None
        sess = Session(Limits(**limits), T0, on_message=hook)
        chunks = drip(data) if request.param.endswith("one-byte-reads") else [data]
        return feed(sess, chunks), sess

    return run
