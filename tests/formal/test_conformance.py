"""The session machine is SPEC 4's table: the declaration, the runtime path and the graph.

Every (state, trigger) pair is tried, on the declaration (``table()``) and on
the path sessions really take (``fire`` on a fresh model set to that state),
against the table written out in spec_table.py.
"""

from __future__ import annotations

from transitions import Machine

from statemachine import machine
from statemachine.session import Limits, Session
from tests.formal import spec_table


def test_the_entry_states_are_the_specs():
    assert list(spec_table.ENTRIES) == machine.ENTRY_STATES
    assert machine.ENTRY_STATES[0] == machine.INITIAL
    for entry in spec_table.ENTRIES:
        assert machine.SessionModel(entry).state == entry


def test_a_session_with_proxy_on_starts_in_the_header_phase():
    assert Session(Limits(proxy="any"), now=0.0).state == "PROXY_HEADER"


def test_the_spec_table_itself_has_the_graph_properties():
    assert spec_table.graph_problems(spec_table.TABLE, spec_table.STATES, spec_table.INITIAL) == []


def test_the_shared_machine_declares_exactly_the_spec_table():
    problems = spec_table.declaration_problems(
        machine.table(), machine.STATES, machine.MACHINE.events, machine.MACHINE.initial
    )
    assert problems == []


def test_the_declaration_lists_alone_give_the_spec_table():
    """A machine built afresh from ``MACHINE_KWARGS`` (not the shared instance) is the same machine."""
    assert machine.MACHINE_KWARGS["auto_transitions"] is False
    fresh = Machine(model=None, **machine.MACHINE_KWARGS)
    assert spec_table.declaration_problems(machine.table(fresh), machine.STATES, fresh.events, fresh.initial) == []


def test_every_pair_on_the_runtime_path_follows_the_spec():
    assert spec_table.runtime_problems(machine.fire, machine.SessionModel, machine.MachineError) == []


def test_sessions_are_models_of_the_same_runtime_path():
    def new_session() -> Session:
        return Session(Limits(), now=0.0)

    assert spec_table.runtime_problems(machine.fire, new_session, machine.MachineError) == []


def test_graph_connected_initial_closed_reachable_and_absorbing_no_unreachable_state():
    assert spec_table.graph_problems(machine.table(), machine.STATES, machine.MACHINE.initial) == []


def test_sessions_start_in_the_spec_entry_states_and_nowhere_else():
    assert list(spec_table.ENTRIES) == machine.ENTRY_STATES
    assert machine.ENTRY_STATES[0] == machine.INITIAL
    for entry in spec_table.ENTRIES:
        assert Session(Limits(), now=0.0, start=entry).state == entry
    for state in set(spec_table.STATES) - set(spec_table.ENTRIES):
        try:
            Session(Limits(), now=0.0, start=state)
        except ValueError:
            continue
        raise AssertionError(f"a session started in {state}, which is no entry state")
