"""The supervisor's two machines (O1) are the tables below, written out by hand.

Like the session machine's conformance check: every (state, trigger) pair is
tried on the declaration and on the path the supervisor really takes
(``server.supervisor.fire`` on a model set to that state), and the graphs are
checked: every state reachable, a final state reachable from every state,
final states absorbing.  Nothing here is read from the declaration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from transitions import Machine, MachineError

from server import supervisor
from statemachine.machine import table

SUPERVISOR_STATES = ("RUNNING", "DRAINING", "GIVING_UP", "STOPPED", "FAILED", "KILLED")
SUPERVISOR_INITIAL = "RUNNING"
SUPERVISOR_FINAL = ("STOPPED", "FAILED", "KILLED")
SUPERVISOR_TABLE = {
    ("RUNNING", "stop"): "DRAINING",  # first SIGINT/SIGTERM, passed on
    ("RUNNING", "give_up"): "GIVING_UP",  # a process failed too often
    ("DRAINING", "all_exited"): "STOPPED",  # exit 0
    ("GIVING_UP", "all_exited"): "FAILED",  # exit 1
    ("DRAINING", "force"): "KILLED",  # second signal, or the drain overran
    ("GIVING_UP", "force"): "KILLED",
}

PROCESS_STATES = ("PENDING", "SERVING", "EXITED")
PROCESS_INITIAL = "PENDING"
PROCESS_FINAL = ("EXITED",)
PROCESS_TABLE = {
    ("PENDING", "started"): "SERVING",
    ("SERVING", "died"): "PENDING",  # exited while the server runs: restart after a back-off
    ("SERVING", "exited"): "EXITED",  # exited while the server stops
    ("PENDING", "cancelled"): "EXITED",
}

MACHINES = {
    "supervisor": (
        supervisor.MACHINE,
        supervisor.MACHINE_KWARGS,
        supervisor.STATES,
        SUPERVISOR_STATES,
        SUPERVISOR_INITIAL,
        SUPERVISOR_FINAL,
        SUPERVISOR_TABLE,
    ),
    "process": (
        supervisor.PROCESS_MACHINE,
        supervisor.PROCESS_MACHINE_KWARGS,
        supervisor.PROCESS_STATES,
        PROCESS_STATES,
        PROCESS_INITIAL,
        PROCESS_FINAL,
        PROCESS_TABLE,
    ),
}


class Model:
    def __init__(self, state: str) -> None:
        self.state = state


def _reachable(spec: dict[tuple[str, str], str], start: str) -> set[str]:
    seen, frontier = {start}, [start]
    while frontier:
        state = frontier.pop()
        for (source, _), dest in spec.items():
            if source == state and dest not in seen:
                seen.add(dest)
                frontier.append(dest)
    return seen


@pytest.mark.parametrize("name", MACHINES)
def test_the_hand_written_table_has_the_graph_properties(name):
    _, _, _, states, initial, final, spec = MACHINES[name]
    assert _reachable(spec, initial) == set(states)
    for state in states:
        assert _reachable(spec, state) & set(final), f"no final state reachable from {state}"
    assert not [pair for pair in spec if pair[0] in final], "a final state is left"


@pytest.mark.parametrize("name", MACHINES)
def test_the_declaration_is_the_table(name):
    machine, kwargs, declared_states, states, initial, _, spec = MACHINES[name]
    assert list(declared_states) == list(states)
    assert machine.initial == initial
    assert kwargs["auto_transitions"] is False
    assert table(machine) == spec
    assert table(Machine(model=None, **kwargs)) == spec  # the lists alone give the same machine


@pytest.mark.parametrize("name", MACHINES)
def test_every_pair_on_the_runtime_path_follows_the_table(name):
    machine, _, _, states, _, _, spec = MACHINES[name]
    triggers = sorted({trigger for _, trigger in spec}) + ["to_STOPPED", "to_EXITED"]
    for state in states:
        for trigger in triggers:
            model = Model(state)
            if (state, trigger) in spec:
                supervisor.fire(machine, model, trigger)
                assert model.state == spec[(state, trigger)], (state, trigger)
            else:
                with pytest.raises((MachineError, KeyError)):
                    supervisor.fire(machine, model, trigger)
                assert model.state == state, f"rejected {(state, trigger)} still moved the model"


def test_the_final_states_are_the_tables():
    """FINAL is what the supervisor's loop runs until: each final state is one way the server ends."""
    assert set(supervisor.FINAL) == set(SUPERVISOR_FINAL)
    assert supervisor.PROCESS_FINAL == "EXITED"


def test_the_operations_guide_embeds_the_current_drawings():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    for drawing in supervisor.mermaid():
        assert f"```mermaid\n{drawing}\n```" in guide, (
            "docs/operations.md is stale: paste `python -m server.supervisor`"
        )
