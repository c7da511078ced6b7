"""Time in the core: a model-based test of ``Session`` driven by a simulated clock (L9, the drain, L13).

The core never reads a clock: every call takes ``now``.  Here Hypothesis drives
one session through reads, a half-close, a shutdown, the client reading its
replies (or not), and the clock, which moves only when a rule advances it, by
any amount or to just before, exactly at, or just after the next deadline.
The server's timer check is a rule of its own, as it is in the worker: it is
the only place a deadline may fire.  The model keeps its own record of when
each deadline's clock started, and after every step checks:

* **no deadline fires early**: a session ended by a deadline was checked at or
  after that deadline (by the model's clock record, not the core's);
* **no session outlives a deadline by more than one check**: after a check at
  or past a deadline, the session is no longer in a state that deadline watches;
* the deadline the core reports (what the worker sets its timer by) is the
  model's exactly, while it runs, and None when it does not.

The deadlines are the rows of ``DEADLINES``: the idle timeout (L9, the core's,
``Session.check_idle``) and the drain time of a closing session (L13, the
worker's: a CLOSING session with replies still unsent at ``closing since +
drain`` is aborted, which must leave the reason it was closing for and send
nothing more).  A new deadline (L14's line timeout) is one more row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from statemachine.machine import CLOSED, CLOSING, CONNECTED, ECHOING
from statemachine.session import LINE, Limits, Session
from tests.formal import reference
from tests.formal.strategies import deterministic

MAX_LINE = 16  # the disconnect word (11 bytes) fits
IDLE = 10.0
DRAIN = 4.0
T0 = 1000.0
EPSILON = 1e-3
OPEN = frozenset({CONNECTED, ECHOING})


@dataclass(frozen=True)
class Deadline:
    """One clock the server keeps for a session, and how the model and the core see it."""

    trigger: str  # the trigger (and reason) it fires
    watches: frozenset[str]  # the states in which it runs
    limit: float
    started: Callable[[TimedSession], float | None]  # the model's record of when it started
    reported: Callable[[Session], float | None] | None  # the core's own deadline, when the core keeps one
    fire: Callable[[TimedSession, float], None]  # what the server's check does when it is due


def _check_idle(model: TimedSession, now: float) -> None:
    model.unsent += model.session.check_idle(now)


def _drain_over(model: TimedSession, now: float) -> None:
    """The worker's rule (server/worker.py ``_on_timer``): replies still unsent at closing + drain: abort."""
    if model.unsent and now >= model.closing_since + DRAIN:
        model.session.abort()


DEADLINES = [
    Deadline("idle_timeout", OPEN, IDLE, lambda m: m.last_byte, Session.idle_deadline, _check_idle),
    Deadline("abort", frozenset({CLOSING}), DRAIN, lambda m: m.closing_since, None, _drain_over),
]

#: What this check covers, in the session machine's words (tests/formal/test_every_check.py walks them);
#: ``test_the_rules_take_every_claimed_transition`` shows the rules below really take each one.
COVERS_TRIGGERS = frozenset(
    {"message", "disconnect", "end_of_stream", "line_too_long", "shutdown", "flushed", "abort"}
    | {deadline.trigger for deadline in DEADLINES}
)
COVERS_STATES = frozenset({CONNECTED, ECHOING, CLOSING, CLOSED})  # a session starts in CONNECTED here
_PHASES = "the phases before a session (O2, O6) end by what arrives or by one deadline, checked against "
NOT_COVERED = {
    "line_timeout": (
        "reference model",
        "L14 is not a row here yet; its clock is predicted read by read by the reference model's "
        "timed_line_replies (the line_deadline property) and driven live by LineDeadlineModel",
    ),
    "HANDSHAKE": ("spin model", _PHASES + "their outcomes by the spin model and the handshake_outcomes property"),
    "handshake_done": ("spin model", _PHASES + "their outcomes by the spin model"),
    "handshake_failed": ("spin model", _PHASES + "their outcomes by the spin model"),
    "PROXY_HEADER": ("spin model", _PHASES + "their outcomes by the spin model and the proxy properties"),
    "proxy_header": ("spin model", _PHASES + "their outcomes by the spin model"),
    "proxy_rejected": ("spin model", _PHASES + "their outcomes by the spin model"),
}

_reads = st.sampled_from(
    [b"hola\n", b"a", b"b\r\n", b"\n", b"\xff\n", b"y" * MAX_LINE, b"y" * (MAX_LINE + 1) + b"\n", b"DESCONEXION\n"]
)
TAKEN: set[tuple[str, str]] = set()  # (state, trigger) pairs taken since it was last cleared


class TimedSession(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.session = Session(Limits(framing=LINE, max_line=MAX_LINE, idle_timeout=IDLE), T0)
        self.last_byte = T0  # the model's own record: the session's start or its last byte received while open
        self.closing_since: float | None = None
        self.unsent = b""  # replies the client has not read yet
        self.fired: dict[str, float] = {}  # deadline trigger -> the check time it fired at
        self.eof = False

    # -- the model's deadlines ----------------------------------------------------

    def deadline(self, row: Deadline) -> float | None:
        started = row.started(self)
        if not row.limit or started is None or self.session.state not in row.watches:
            return None
        return started + row.limit

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
        self.unsent += action()
        reason = self.session.reason if self.session.state != state else None
        self._observe(state, "message" if self.session.state == ECHOING and state != ECHOING else reason)

    # -- rules: the client ----------------------------------------------------------

    @precondition(lambda self: not self.eof and self.session.state != CLOSED)
    @rule(data=_reads)
    def client_sends(self, data: bytes) -> None:
        if self.session.is_open:
            self.last_byte = self.now  # L9: any byte received restarts the idle clock
        self._input(lambda: self.session.receive(data, self.now))

    @precondition(lambda self: not self.eof and self.session.state != CLOSED)
    @rule()
    def client_half_closes(self) -> None:
        self.eof = True
        self._input(self.session.end_of_stream)

    @rule()
    def client_reads(self) -> None:
        self.unsent = b""
        self._observe(self.session.state, None)

    @precondition(lambda self: self.session.state != CLOSED)
    @rule()
    def client_resets(self) -> None:
        state = self.session.state
        self.session.abort()
        TAKEN.add((state, "abort"))

    # -- rules: the server ------------------------------------------------------------

    @rule()
    def operator_stops_the_server(self) -> None:
        self._input(self.session.shutdown)

    @rule(dt=st.sampled_from([0.0, EPSILON, 1.0, 3.0, 7.5, 60.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(row=st.sampled_from(DEADLINES), offset=st.sampled_from([-EPSILON, 0.0, EPSILON]))
    def time_reaches_a_deadline(self, row: Deadline, offset: float) -> None:
        """Just before, exactly at, or just after a running deadline: the edges a wrong comparison gets wrong."""
        due = self.deadline(row)
        if due is not None and due + offset > self.now:
            self.now = due + offset

    @rule(row=st.sampled_from(DEADLINES), offset=st.sampled_from([-EPSILON, 0.0, EPSILON]))
    def timers_are_checked_at_a_deadline(self, row: Deadline, offset: float) -> None:
        """The two rules above in one step, so that the edges are checked often."""
        self.time_reaches_a_deadline(row, offset)
        self.timers_are_checked()

    @rule()
    def timers_are_checked(self) -> None:
        """A timer check at ``now`` (at any time: a check may come early): what is due fires, nothing else."""
        for row in DEADLINES:
            due = self.deadline(row)
            if due is None:
                continue
            state = self.session.state
            row.fire(self, self.now)
            if self.session.state != state:
                self.fired[row.trigger] = self.now
                TAKEN.add((state, row.trigger))
                self._observe(self.session.state, None)
            if self.now >= due:
                assert self.session.state not in row.watches, (
                    f"{row.trigger}: checked at {self.now}, past its deadline {due}, still {self.session.state}"
                )

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def no_deadline_fired_early(self) -> None:
        for row in DEADLINES:
            if row.trigger in self.fired and row.trigger == self.session.reason:
                started = row.started(self)
                assert started is not None
                assert reference.deadline_due(started, row.limit, self.fired[row.trigger]), (
                    f"{row.trigger} fired at {self.fired[row.trigger]}, its clock started at {started}"
                )
        if self.session.reason == "idle_timeout":
            assert "idle_timeout" in self.fired, "the idle timeout fired outside the server's check"

    @invariant()
    def the_core_reports_the_models_deadline(self) -> None:
        for row in DEADLINES:
            if row.reported is not None:
                assert row.reported(self.session) == self.deadline(row), row.trigger

    @invariant()
    def a_closed_session_sends_nothing_more(self) -> None:
        if self.session.state == CLOSED:
            assert self.session.receive(b"late\n", self.now) == b""
            assert self.session.check_idle(self.now + 10 * IDLE) == b""
            assert self.session.shutdown() == b""


def test_no_deadline_fires_early_and_none_is_outlived_by_more_than_one_check():
    run_state_machine_as_test(TimedSession, settings=deterministic(300, shrink=True))


#: One short run per claimed trigger, through the rules above: they can take each one.
SCRIPTS = {
    "message": [("client_sends", b"hola\n")],
    "disconnect": [("client_sends", b"DESCONEXION\n"), ("client_reads",)],
    "end_of_stream": [("client_sends", b"a\n"), ("client_half_closes",)],
    "line_too_long": [("client_sends", b"y" * (MAX_LINE + 1) + b"\n")],
    "shutdown": [("operator_stops_the_server",), ("client_reads",)],
    "idle_timeout": [("timers_are_checked_at_a_deadline", DEADLINES[0], 0.0)],
    "abort": [("client_sends", b"hola\n"), ("client_resets",)],
    "drain time over": [("client_sends", b"DESCONEXION\n"), ("timers_are_checked_at_a_deadline", DEADLINES[1], 0.0)],
}


def _taken(script: list[tuple]) -> set[str]:
    """The triggers a fresh model takes through ``script``, its invariants checked after every step."""
    TAKEN.clear()
    model = TimedSession()
    for method, *args in script:
        getattr(model, method)(*args)
        model.no_deadline_fired_early()
        model.the_core_reports_the_models_deadline()
        model.a_closed_session_sends_nothing_more()
    return {trigger for _, trigger in TAKEN}


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_rules_take_every_claimed_transition(name):
    assert (name if name in COVERS_TRIGGERS else "abort") in _taken(SCRIPTS[name])


def test_the_scripts_take_exactly_the_claimed_triggers():
    assert set().union(*(_taken(script) for script in SCRIPTS.values())) == COVERS_TRIGGERS
