"""The session machine is exactly the table of SPEC section 4, and nothing more."""

from __future__ import annotations

import itertools

import pytest
from transitions import Machine

from statemachine.machine import (
    CLOSED,
    CLOSING,
    CONNECTED,
    ECHOING,
    ENTRY_STATES,
    FINAL,
    HANDSHAKE,
    INITIAL,
    MACHINE,
    PLAIN,
    PROXY_HEADER,
    STATES,
    TRIGGERS,
    MachineError,
    SessionModel,
    _compile_plain,
    fire,
    mermaid,
    table,
)

# SPEC section 4, copied by hand: (source, trigger) -> dest.
SPEC_TABLE = {
    (CONNECTED, "message"): ECHOING,
    (ECHOING, "message"): ECHOING,
    (CONNECTED, "disconnect"): CLOSING,
    (ECHOING, "disconnect"): CLOSING,
    (CONNECTED, "end_of_stream"): CLOSING,
    (ECHOING, "end_of_stream"): CLOSING,
    (CONNECTED, "line_too_long"): CLOSING,
    (ECHOING, "line_too_long"): CLOSING,
    (CONNECTED, "idle_timeout"): CLOSING,
    (ECHOING, "idle_timeout"): CLOSING,
    (CONNECTED, "line_timeout"): CLOSING,
    (ECHOING, "line_timeout"): CLOSING,
    (CONNECTED, "shutdown"): CLOSING,
    (ECHOING, "shutdown"): CLOSING,
    (CLOSING, "flushed"): CLOSED,
    (CONNECTED, "abort"): CLOSED,
    (ECHOING, "abort"): CLOSED,
    (CLOSING, "abort"): CLOSED,
    (HANDSHAKE, "abort"): CLOSED,
    (HANDSHAKE, "handshake_done"): CONNECTED,
    (HANDSHAKE, "handshake_failed"): CLOSED,
    (PROXY_HEADER, "abort"): CLOSED,
    (PROXY_HEADER, "proxy_header"): CONNECTED,
    (PROXY_HEADER, "proxy_rejected"): CLOSED,
}
SPEC_TRIGGERS = {
    "message",
    "disconnect",
    "end_of_stream",
    "line_too_long",
    "idle_timeout",
    "line_timeout",
    "shutdown",
    "flushed",
    "abort",
    "handshake_done",
    "handshake_failed",
    "proxy_header",
    "proxy_rejected",
}
ALL_PAIRS = list(
    itertools.product([CONNECTED, ECHOING, CLOSING, CLOSED, HANDSHAKE, PROXY_HEADER], sorted(SPEC_TRIGGERS))
)


def test_states_and_ends_are_the_specs():
    assert STATES == [CONNECTED, ECHOING, CLOSING, CLOSED, HANDSHAKE, PROXY_HEADER]
    assert (INITIAL, FINAL) == (CONNECTED, CLOSED)
    assert ENTRY_STATES == [CONNECTED, HANDSHAKE, PROXY_HEADER]
    assert SessionModel().state == CONNECTED
    assert SessionModel(PROXY_HEADER).state == PROXY_HEADER


@pytest.mark.parametrize("state", [ECHOING, CLOSING, CLOSED, "NOWHERE"])
def test_a_session_starts_only_in_an_entry_state(state):
    with pytest.raises(ValueError) as refused:
        SessionModel(state)
    # the whole message: it names what was asked and every state that may be asked for
    assert str(refused.value) == f"a session cannot start in {state}; entry states: CONNECTED, HANDSHAKE, PROXY_HEADER"


def test_a_session_may_start_in_each_entry_state():
    assert [SessionModel(state).state for state in ENTRY_STATES] == ENTRY_STATES


def test_declared_table_is_the_spec_table():
    assert table() == SPEC_TABLE


def test_no_automatic_transitions():
    """auto_transitions=False: the declared triggers are the only ones (no ``to_CLOSED``)."""
    assert set(TRIGGERS) == SPEC_TRIGGERS
    assert set(MACHINE.events) == SPEC_TRIGGERS


def test_closed_is_final():
    assert not [pair for pair in table() if pair[0] == CLOSED]


@pytest.mark.parametrize(("source", "trigger"), ALL_PAIRS)
def test_fire_follows_the_table(source, trigger):
    model = SessionModel()
    model.state = source
    if (source, trigger) in SPEC_TABLE:
        fire(model, trigger)
        assert model.state == SPEC_TABLE[(source, trigger)]
    else:
        with pytest.raises(MachineError):
            fire(model, trigger)
        assert model.state == source


def test_unknown_trigger_is_a_key_error():
    model = SessionModel()
    with pytest.raises(KeyError):
        fire(model, "to_CLOSED")
    assert model.state == CONNECTED


def test_compiled_shortcut_covers_only_declared_pairs():
    """The shortcut may skip the library only where the library would just set the state."""
    assert PLAIN.items() <= SPEC_TABLE.items()
    assert PLAIN == SPEC_TABLE  # the declaration has no callbacks, so every pair is plain


_SMALL = {
    "states": [CONNECTED, ECHOING, CLOSED],
    "transitions": [
        {"trigger": "message", "source": [CONNECTED, ECHOING], "dest": ECHOING},
        {"trigger": "abort", "source": [CONNECTED, ECHOING], "dest": CLOSED},
    ],
}


def test_compiled_shortcut_leaves_callbacks_to_the_library():
    transitions = [
        {"trigger": "message", "source": [CONNECTED, ECHOING], "dest": ECHOING, "after": "log"},
        {"trigger": "disconnect", "source": [CONNECTED, ECHOING], "dest": CLOSING},
        {"trigger": "flushed", "source": CLOSING, "dest": CLOSED},
        {"trigger": "abort", "source": CONNECTED, "dest": CLOSED},
    ]
    states = [CONNECTED, ECHOING, {"name": CLOSING, "on_enter": "notify"}, CLOSED]
    machine = Machine(model=None, states=states, transitions=transitions, initial=CONNECTED, auto_transitions=False)
    assert _compile_plain(machine) == {(CONNECTED, "abort"): CLOSED}


@pytest.mark.parametrize("hook", ["before_state_change", "after_state_change", "prepare_event", "finalize_event"])
def test_a_machine_wide_callback_leaves_every_transition_to_the_library(hook):
    """A callback on every event: no transition's only effect is the state change."""
    machine = Machine(model=None, initial=CONNECTED, auto_transitions=False, **{**_SMALL, hook: "log"})
    assert _compile_plain(machine) == {}


@pytest.mark.parametrize("callback", ["prepare", "conditions", "unless", "before", "after"])
def test_a_transition_with_any_callback_is_left_to_the_library(callback):
    transitions = [
        {"trigger": "message", "source": CONNECTED, "dest": ECHOING, callback: "check"},
        {"trigger": "message", "source": ECHOING, "dest": ECHOING},
    ]
    machine = Machine(
        model=None, states=[CONNECTED, ECHOING], transitions=transitions, initial=CONNECTED, auto_transitions=False
    )
    assert _compile_plain(machine) == {(ECHOING, "message"): ECHOING}


@pytest.mark.parametrize("hook", ["on_enter", "on_exit"])
def test_a_transition_into_or_out_of_a_state_with_callbacks_is_left_to_the_library(hook):
    """Either end of the transition: the shortcut does not reason about which callbacks would run."""
    states = [{"name": CONNECTED, hook: "notify"}, ECHOING, CLOSED]
    transitions = [
        {"trigger": "message", "source": [CONNECTED, ECHOING], "dest": ECHOING},
        {"trigger": "abort", "source": ECHOING, "dest": CLOSED},
    ]
    machine = Machine(model=None, states=states, transitions=transitions, initial=CONNECTED, auto_transitions=False)
    assert _compile_plain(machine) == {(ECHOING, "message"): ECHOING, (ECHOING, "abort"): CLOSED}


def test_a_pair_whose_transition_conditions_choose_is_left_to_the_library_and_no_other():
    """Several candidates for one (source, trigger): the library picks; the event's other sources stay plain."""
    transitions = [
        {"trigger": "message", "source": CONNECTED, "dest": ECHOING, "conditions": "short"},
        {"trigger": "message", "source": CONNECTED, "dest": CLOSED},
        {"trigger": "message", "source": ECHOING, "dest": ECHOING},
    ]
    machine = Machine(model=None, **{**_SMALL, "transitions": transitions}, initial=CONNECTED, auto_transitions=False)
    assert _compile_plain(machine) == {(ECHOING, "message"): ECHOING}


def test_mermaid_draws_every_state_and_trigger():
    drawing = mermaid()
    assert "stateDiagram" in drawing
    for name in [*STATES, *SPEC_TRIGGERS]:
        assert name in drawing
