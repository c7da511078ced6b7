"""Time in the core: a model-based test of ``Session`` driven by a simulated clock (L9, L14, O2, O6, L13).

The core never reads a clock: every call takes ``now``.  Here Hypothesis drives
one session, started in any entry state (CONNECTED; HANDSHAKE when TLS comes
first, O6; PROXY_HEADER behind a load balancer, O2), through the phases'
outcomes, reads, a half-close, a shutdown, the client reading its replies (or
not), and the clock, which moves only when a rule advances it, by any amount or
to just before, exactly at, or just after the next deadline.  The server's timer
check is a rule of its own and calls what the worker's timer calls in each state
(``check_handshake``, ``check_header``, ``check_deadlines``, the drain rule): it
is the only place a deadline may fire.  The model keeps its own record of when
each deadline's clock started, and after every step checks:

* **no deadline fires early**: a session ended by a deadline was checked at or
  after that deadline (by the model's clock record, not the core's);
* **no session outlives a deadline by more than one check**: after a check at
  or past a deadline, the session is no longer in a state that deadline watches;
* the deadlines the core reports (what the worker sets its timer by, among them
  ``next_deadline``) are the model's exactly, while they run, and None when not;
* a message deadline drops the unfinished message and sends exactly what the
  reference model says (L14).

The deadlines are the rows of ``DEADLINES``: the TLS handshake's
(``--tls-handshake-timeout``, from the accept), the PROXY header's
(``--proxy-timeout``, from the accept: a header trickled in does not move it),
the idle timeout (L9: any byte received restarts it), the message deadline
(L14: from the read that brought the unfinished message's first byte; later
bytes of the same message do not move it) and the drain time of a closing
session (L13, the worker's: a CLOSING session with replies still unsent at
``closing since + drain`` is aborted, which must leave the reason it was closing
for and send nothing more).  A new deadline is one more row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from statemachine.machine import CLOSED, CLOSING, CONNECTED, ECHOING, HANDSHAKE, PROXY_HEADER
from statemachine.session import ERROR_IDLE, LINE, Limits, Session
from tests.formal import reference
from tests.formal.strategies import deterministic

MAX_LINE = 16  # the disconnect word (11 bytes) fits
IDLE = 10.0
LINE_TIMEOUT = 6.0
HANDSHAKE_TIMEOUT = 3.0
PROXY_TIMEOUT = 5.0
DRAIN = 4.0
T0 = 1000.0
EPSILON = 1e-3
OPEN = frozenset({CONNECTED, ECHOING})
HEADER = b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 5000\r\n"


@dataclass(frozen=True)
class Deadline:
    """One clock the server keeps for a session, and how the model and the core see it."""

    trigger: str  # the trigger (and, but for the drain's abort, the reason) it fires
    watches: frozenset[str]  # the states in which it runs
    limit: Callable[[Limits], float]  # its length, from the server's settings; 0 turns it off
    started: Callable[[TimedSession], float | None]  # the model's record of when it started
    reported: Callable[[Session], float | None] | None  # the core's own deadline, when the core keeps one
    fire: Callable[[TimedSession, float], None]  # what the server's timer does when it is due


def _check_handshake(model: TimedSession, now: float) -> None:
    model.session.check_handshake(now)


def _check_header(model: TimedSession, now: float) -> None:
    model.session.check_header(now)


def _check_deadlines(model: TimedSession, now: float) -> None:
    """The worker's check of an open session: the idle and message deadlines are one timer (next_deadline)."""
    model.sent(model.session.check_deadlines(now))


def _drain_over(model: TimedSession, now: float) -> None:
    """The worker's rule (server/worker.py ``_on_timer``): replies still unsent at closing + drain: abort."""
    if model.unsent and now >= model.closing_since + DRAIN:
        model.session.abort()


DEADLINES = [
    Deadline(
        "handshake_failed",
        frozenset({HANDSHAKE}),
        attrgetter("handshake_timeout"),
        lambda m: m.accepted,
        Session.handshake_deadline,
        _check_handshake,
    ),
    Deadline(
        "proxy_rejected",
        frozenset({PROXY_HEADER}),
        attrgetter("proxy_timeout"),
        lambda m: m.accepted,
        Session.header_deadline,
        _check_header,
    ),
    Deadline(
        "idle_timeout", OPEN, attrgetter("idle_timeout"), lambda m: m.last_byte, Session.idle_deadline, _check_deadlines
    ),
    Deadline(
        "line_timeout",
        OPEN,
        attrgetter("line_timeout"),
        lambda m: reference.message_started(m.reads),
        Session.line_deadline,
        _check_deadlines,
    ),
    Deadline("abort", frozenset({CLOSING}), lambda _: DRAIN, lambda m: m.closing_since, None, _drain_over),
]
_OPEN_ROWS = [row for row in DEADLINES if row.watches == OPEN]  # one timer: next_deadline is the earlier

#: What this check covers, in the session machine's words (tests/formal/test_every_check.py walks them);
#: ``test_the_rules_take_every_claimed_transition`` shows the rules below really take each one.
COVERS_TRIGGERS = frozenset(
    {"message", "disconnect", "end_of_stream", "line_too_long", "shutdown", "flushed", "abort"}
    | {"handshake_done", "handshake_failed", "proxy_header", "proxy_rejected"}
    | {deadline.trigger for deadline in DEADLINES}
)
COVERS_STATES = frozenset({CONNECTED, ECHOING, CLOSING, CLOSED, HANDSHAKE, PROXY_HEADER})  # the entry is a rule

_reads = st.sampled_from(
    [b"hola\n", b"a", b"b\r\n", b"\n", b"\xff\n", b"y" * MAX_LINE, b"y" * (MAX_LINE + 1) + b"\n", b"DESCONEXION\n"]
)
TAKEN: set[tuple[str, str]] = set()  # (state, trigger) pairs taken since it was last cleared


class TimedSession(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.accepted = T0
        self.begin(CONNECTED, IDLE, LINE_TIMEOUT)

    @initialize(
        start=st.sampled_from([CONNECTED, HANDSHAKE, PROXY_HEADER]),
        idle=st.sampled_from([IDLE, 0.0]),
        line=st.sampled_from([LINE_TIMEOUT, 0.0, IDLE]),
    )
    def begin(self, start: str, idle: float, line: float) -> None:
        """A connection accepted at T0; its settings (a 0 turns a clock off, and both clocks may agree)."""
        limits = Limits(
            framing=LINE,
            max_line=MAX_LINE,
            idle_timeout=idle,
            line_timeout=line,
            handshake_timeout=HANDSHAKE_TIMEOUT,
            proxy="v1" if start == PROXY_HEADER else "off",
            proxy_timeout=PROXY_TIMEOUT,
        )
        self.session = Session(limits, T0, start=start)
        self.last_byte = T0  # the model's own record: the protocol's start or its last byte received while open
        self.reads: list[tuple[float, bytes]] = []  # (time, bytes) of every read while open, for L14
        self.header = b""  # what the load balancer has sent, in PROXY_HEADER
        self.closing_since: float | None = None
        self.unsent = b""  # replies the client has not read yet
        self.replies = b""  # every reply the session has given
        self.fired: dict[str, float] = {}  # deadline trigger -> the check time it fired at
        self.eof = False

    # -- the model's deadlines ----------------------------------------------------

    def deadline(self, row: Deadline) -> float | None:
        limit = row.limit(self.session.limits)
        started = row.started(self) if self.session.state in row.watches else None
        if not limit or started is None:
            return None
        return started + limit

    def sent(self, out: bytes) -> None:
        self.unsent += out
        self.replies += out

    def _observe(self, state: str, trigger: str | None) -> None:
        """After an input: the state change it caused, the drain clock, and the worker's flush."""
        session = self.session
        if trigger is not None and session.state != state:
            TAKEN.add((state, trigger))
        if session.state == CLOSING and self.closing_since is None:
            self.closing_since = self.now
        if session.state == CLOSING and not self.unsent:  # every reply handed over: CLOSED (L13)
            TAKEN.add((CLOSING, "flushed"))
            session.flushed()

    def _input(self, action: Callable[[], bytes]) -> None:
        state = self.session.state
        self.sent(action())
        reason = self.session.reason if self.session.state != state else None
        self._observe(state, "message" if self.session.state == ECHOING and state != ECHOING else reason)

    def _receive(self, data: bytes) -> None:
        if self.session.is_open:
            self.last_byte = self.now  # L9: any byte received restarts the idle clock
            self.reads.append((self.now, data))
        self._input(lambda: self.session.receive(data, self.now))

    # -- rules: the phases before the protocol (O6, O2) --------------------------------

    @precondition(lambda self: self.session.state == HANDSHAKE)
    @rule(completes=st.booleans(), took=st.sampled_from([0.0, 2.0]))
    def tls_handshake_ends(self, completes: bool, took: float = 0.0) -> None:
        """The TLS layer's outcome after ``took`` seconds more, the only thing the session learns of it (O6)."""
        self.now += took
        if completes:
            self.session.handshake_done(self.now)
            TAKEN.add((HANDSHAKE, "handshake_done"))
            self.last_byte = self.now  # the protocol, and its idle clock, start now
        else:
            self.session.handshake_failed()
            TAKEN.add((HANDSHAKE, "handshake_failed"))

    @precondition(lambda self: self.session.state == PROXY_HEADER and not self.eof)
    @rule(size=st.sampled_from([1, 6, len(HEADER)]), after=st.sampled_from([b"", b"hola\n", b"ho"]))
    def load_balancer_sends(self, size: int, after: bytes) -> None:
        """The header's next ``size`` bytes; with its last, the client's first bytes in the same read, or not."""
        piece = HEADER[len(self.header) : len(self.header) + size]
        self.header += piece
        rest = after if self.header == HEADER else b""
        self.sent(self.session.receive(piece + rest, self.now))
        if self.session.state != PROXY_HEADER:
            TAKEN.add((PROXY_HEADER, "proxy_header"))
            self.last_byte = self.now  # the protocol, and its idle clock, start with the header
            if rest:
                self.reads.append((self.now, rest))
            if self.session.state == ECHOING:
                TAKEN.add((CONNECTED, "message"))
        self._observe(self.session.state, None)

    @precondition(lambda self: self.session.state == PROXY_HEADER and not self.eof and not self.header)
    @rule(pause=st.sampled_from([1.0, PROXY_TIMEOUT - EPSILON]), after=st.sampled_from([b"", b"ho"]))
    def load_balancer_trickles_the_header(self, pause: float, after: bytes) -> None:
        """Part of the header, a pause, the rest: the header's clock runs from the accept, the idle clock after it."""
        self.load_balancer_sends(10, b"")
        self.now += pause
        if self.session.state == PROXY_HEADER:
            self.load_balancer_sends(len(HEADER), after)

    @precondition(lambda self: self.session.state == PROXY_HEADER and not self.eof)
    @rule(data=st.sampled_from([b"GET / HTTP/1.0\r\n", b"PROXY TCP5 x\r\n"]))
    def load_balancer_sends_garbage(self, data: bytes) -> None:
        self._input(lambda: self.session.receive(data, self.now))
        TAKEN.add((PROXY_HEADER, "proxy_rejected"))

    # -- rules: the client ----------------------------------------------------------

    @precondition(lambda self: not self.eof and self.session.state in OPEN | {CLOSING})
    @rule(data=_reads)
    def client_sends(self, data: bytes) -> None:
        self._receive(data)

    @precondition(lambda self: not self.eof and self.session.is_open)
    @rule(data=st.sampled_from([b"a", b"bc\nd"]), pause=st.sampled_from([1.0, LINE_TIMEOUT - EPSILON]))
    def client_trickles_a_message(self, data: bytes, pause: float) -> None:
        """Bytes of a message, a pause, more of it: the pause counts toward the message's deadline (L14)."""
        self._receive(data)
        self.now += pause
        if self.session.is_open:
            self._receive(data)

    @precondition(lambda self: not self.eof and self.session.is_open)
    @rule(data=st.sampled_from([b"a", b"bc", b"\r", b"\xc3"]))
    def client_sends_part_of_a_message(self, data: bytes) -> None:
        """A message trickled in: its later bytes restart the idle clock, not the message's (L9, L14)."""
        self._receive(data)

    @rule()
    def client_reads(self) -> None:
        self.unsent = b""
        self._observe(self.session.state, None)

    @precondition(lambda self: self.session.state != CLOSED)
    @rule(how=st.sampled_from(["half-close", "reset", "shutdown"]))
    def the_connection_ends(self, how: str) -> None:
        """The client half-closes (L7) or resets it, or the operator stops the server (L11)."""
        state = self.session.state
        if how == "reset":
            self.session.abort()
            TAKEN.add((state, "abort"))
            return
        if how == "half-close":
            if self.eof:
                return
            self.eof = True
        self._input(self.session.end_of_stream if how == "half-close" else self.session.shutdown)
        if state in (HANDSHAKE, PROXY_HEADER) and self.session.state != state:
            TAKEN.add((state, self.session.reason))

    # -- rules: the server's clock ------------------------------------------------------

    @precondition(lambda self: self.session.state != CLOSED)
    @rule(dt=st.sampled_from([0.0, EPSILON, 1.0, 3.0, 7.5, 60.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.session.state != CLOSED)
    @rule(row=st.sampled_from(DEADLINES), offset=st.sampled_from([-EPSILON, 0.0, EPSILON]))
    def time_reaches_a_deadline(self, row: Deadline, offset: float) -> None:
        """Just before, exactly at, or just after a running deadline: the edges a wrong comparison gets wrong."""
        due = self.deadline(row)
        if due is not None and due + offset > self.now:
            self.now = due + offset

    @precondition(lambda self: self.session.state != CLOSED)
    @rule(row=st.sampled_from(DEADLINES), offset=st.sampled_from([-EPSILON, 0.0, EPSILON]))
    def timers_are_checked_at_a_deadline(self, row: Deadline, offset: float) -> None:
        """The two rules above in one step, so that the edges are checked often."""
        self.time_reaches_a_deadline(row, offset)
        self.timers_are_checked()

    @precondition(lambda self: self.session.state != CLOSED)
    @rule()
    def timers_are_checked(self) -> None:
        """A timer check at ``now`` (at any time: a check may come early): what is due fires, nothing else."""
        state = self.session.state
        due = {row.trigger: self.deadline(row) for row in DEADLINES}
        stream = b"".join(data for _, data in self.reads)
        replies = self.replies
        for row in DEADLINES:
            if due[row.trigger] is not None and self.session.state == state:
                row.fire(self, self.now)
        if self.session.state != state:
            watching = [row.trigger for row in DEADLINES if state in row.watches]
            trigger = self.session.reason if self.session.reason in watching else watching[0]
            assert due[trigger] is not None and self.now >= due[trigger], (
                f"{trigger} fired at {self.now}, before its deadline {due[trigger]}"
            )
            self.fired[trigger] = self.now
            TAKEN.add((state, trigger))
            self._observe(self.session.state, None)
            if trigger == "line_timeout":  # the unfinished message is dropped, not answered (L14)
                expected = reference.line_replies(stream, MAX_LINE, reference.LINE_TIMEOUT)
                assert self.replies == expected.replies, (stream, self.replies)
            if trigger == "idle_timeout":
                assert self.replies[len(replies) :].rstrip(b"\r\n") == ERROR_IDLE.encode()
        for row in DEADLINES:
            if due[row.trigger] is not None and self.now >= due[row.trigger]:
                assert self.session.state not in row.watches, (
                    f"{row.trigger}: checked at {self.now}, past its deadline {due[row.trigger]}, "
                    f"still {self.session.state}"
                )

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def no_deadline_fired_early(self) -> None:
        for row in DEADLINES:
            if row.trigger in self.fired and row.trigger == self.session.reason:
                started = row.started(self)
                assert started is not None
                limit = row.limit(self.session.limits)
                assert reference.deadline_due(started, limit, self.fired[row.trigger]), (
                    f"{row.trigger} fired at {self.fired[row.trigger]}, its clock started at {started}"
                )
        if self.session.reason in ("idle_timeout", "line_timeout"):
            assert self.session.reason in self.fired, f"{self.session.reason} fired outside the server's check"

    @invariant()
    def the_core_reports_the_models_deadlines(self) -> None:
        for row in DEADLINES:
            if row.reported is not None:
                assert row.reported(self.session) == self.deadline(row), row.trigger
        running = [due for due in map(self.deadline, _OPEN_ROWS) if due is not None]
        assert self.session.next_deadline() == (min(running) if running else None), "next_deadline"

    @invariant()
    def a_closed_session_sends_nothing_more(self) -> None:
        if self.session.state == CLOSED:
            later = self.now + 10 * IDLE
            assert self.session.receive(b"late\n", self.now) == b""
            assert self.session.check_deadlines(later) == b""
            assert self.session.check_idle(later) == b""
            assert self.session.check_handshake(later) is False
            self.session.check_header(later)
            assert self.session.shutdown() == b""
            assert self.session.end_of_stream() == b""
            assert self.session.state == CLOSED


def test_no_deadline_fires_early_and_none_is_outlived_by_more_than_one_check():
    run_state_machine_as_test(TimedSession, settings=deterministic(400, shrink=True))


#: One short run per claimed trigger, through the rules above: they can take each one.
SCRIPTS = {
    "message": [("client_sends", b"hola\n")],
    "disconnect": [("client_sends", b"DESCONEXION\n"), ("client_reads",)],
    "end_of_stream": [("client_sends", b"a\n"), ("the_connection_ends", "half-close")],
    "line_too_long": [("client_sends", b"y" * (MAX_LINE + 1) + b"\n")],
    "shutdown": [("the_connection_ends", "shutdown"), ("client_reads",)],
    "idle_timeout": [("timers_are_checked_at_a_deadline", DEADLINES[2], 0.0)],
    "line_timeout": [("client_sends", b"a"), ("timers_are_checked_at_a_deadline", DEADLINES[3], 0.0)],
    "abort": [("client_sends", b"hola\n"), ("the_connection_ends", "reset")],
    "drain time over": [("client_sends", b"DESCONEXION\n"), ("timers_are_checked_at_a_deadline", DEADLINES[4], 0.0)],
    "handshake_done": [("begin", HANDSHAKE, IDLE, LINE_TIMEOUT), ("tls_handshake_ends", True)],
    "handshake_failed": [
        ("begin", HANDSHAKE, IDLE, LINE_TIMEOUT),
        ("timers_are_checked_at_a_deadline", DEADLINES[0], 0.0),
    ],
    "proxy_header": [("begin", PROXY_HEADER, IDLE, LINE_TIMEOUT), ("load_balancer_sends", len(HEADER), b"ho")],
    "proxy_rejected": [
        ("begin", PROXY_HEADER, IDLE, LINE_TIMEOUT),
        ("timers_are_checked_at_a_deadline", DEADLINES[1], 0.0),
    ],
}


def _taken(script: list[tuple]) -> set[str]:
    """The triggers a fresh model takes through ``script``, its invariants checked after every step."""
    TAKEN.clear()
    model = TimedSession()
    for method, *args in script:
        getattr(model, method)(*args)
        model.no_deadline_fired_early()
        model.the_core_reports_the_models_deadlines()
        model.a_closed_session_sends_nothing_more()
    return {trigger for _, trigger in TAKEN}


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_rules_take_every_claimed_transition(name):
    assert (name if name in COVERS_TRIGGERS else "abort") in _taken(SCRIPTS[name])


def test_the_scripts_take_exactly_the_claimed_triggers():
    assert set().union(*(_taken(script) for script in SCRIPTS.values())) == COVERS_TRIGGERS
