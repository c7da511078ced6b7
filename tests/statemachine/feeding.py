"""Small helpers that drive a Session the way a server would, without a socket."""

from __future__ import annotations

from collections.abc import Iterable

from statemachine import Limits, Session
from statemachine.session import MessageHook

T0 = 1000.0  # an arbitrary start time: the core never reads a clock, so any number does


def session(**limits: object) -> Session:
    """A fresh session at time ``T0``; keyword arguments go to :class:`Limits`."""
    return Session(Limits(**limits), T0)


def feed(sess: Session, chunks: Iterable[bytes], now: float = T0) -> bytes:
    """Feed each chunk as one read and return everything the session asked to send."""
    return b"".join(sess.receive(chunk, now) for chunk in chunks)


def drip(data: bytes) -> list[bytes]:
    """``data`` as one-byte reads, the slowest a client can send."""
    return [data[i : i + 1] for i in range(len(data))]


def recorded() -> tuple[list[tuple[str, str]], MessageHook]:
    """A list and an ``on_message`` hook that appends every (text, reply) to it."""
    calls: list[tuple[str, str]] = []

    def hook(text: str, reply: str) -> None:
        calls.append((text, reply))

    return calls, hook
