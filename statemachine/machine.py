"""The session state machine: everything that decides a session's state lives here.

Theory of operation
-------------------
The machine is declared once, at import, as plain lists (``STATES``,
``TRANSITIONS``) handed to one ``transitions.Machine`` with
``auto_transitions=False``, so the declared table is the whole machine.  No
model is registered with it: ``Machine.add_model`` costs hundreds of
microseconds and grows with the number of live sessions.  Instead each session
is a small object with a ``state`` attribute, and :func:`fire` drives it through
the shared machine's ``Event`` objects, which check the source state, run the
declared callbacks and set the destination exactly as they would for a
registered model.

One shortcut keeps the per-message cost near zero: a transition whose
destination is its source and which carries no callbacks or conditions (the
``message`` self-loop on ECHOING) leaves the model untouched, so :func:`fire`
skips the library call for the pairs listed in ``SELF_LOOPS``.  That set is
computed from the machine itself at import, never written by hand, and an
undeclared pair always reaches the library, which rejects it with
``MachineError``.

``python -m statemachine`` draws this same declaration as a Mermaid diagram.
"""

from __future__ import annotations

from typing import Any

from transitions import Machine, MachineError

CONNECTED = "CONNECTED"
ECHOING = "ECHOING"
CLOSING = "CLOSING"
CLOSED = "CLOSED"

STATES: list[str] = [CONNECTED, ECHOING, CLOSING, CLOSED]
INITIAL = CONNECTED
FINAL = CLOSED

_OPEN = [CONNECTED, ECHOING]

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "message", "source": _OPEN, "dest": ECHOING},
    {"trigger": "disconnect", "source": _OPEN, "dest": CLOSING},
    {"trigger": "end_of_stream", "source": _OPEN, "dest": CLOSING},
    {"trigger": "line_too_long", "source": _OPEN, "dest": CLOSING},
    {"trigger": "idle_timeout", "source": _OPEN, "dest": CLOSING},
    {"trigger": "shutdown", "source": _OPEN, "dest": CLOSING},
    {"trigger": "flushed", "source": CLOSING, "dest": CLOSED},
    {"trigger": "abort", "source": [CONNECTED, ECHOING, CLOSING], "dest": CLOSED},
]

MACHINE_KWARGS: dict[str, Any] = {
    "states": STATES,
    "transitions": TRANSITIONS,
    "initial": INITIAL,
    "auto_transitions": False,
}

MACHINE = Machine(model=None, **MACHINE_KWARGS)

TRIGGERS: tuple[str, ...] = tuple(MACHINE.events)


def table(machine: Machine = MACHINE) -> dict[tuple[str, str], str]:
    """Return ``{(source, trigger): dest}`` as the machine declares it."""
    return {
        (source, name): transition.dest
        for name, event in machine.events.items()
        for source, declared in event.transitions.items()
        for transition in declared
    }


def _plain_self_loops(machine: Machine) -> frozenset[tuple[str, str]]:
    loops = set()
    for name, event in machine.events.items():
        for source, declared in event.transitions.items():
            state = machine.get_state(source)
            if (
                len(declared) == 1
                and declared[0].dest == source
                and not (declared[0].prepare or declared[0].conditions)
                and not (declared[0].before or declared[0].after)
                and not (state.on_enter or state.on_exit)
                and not (machine.before_state_change or machine.after_state_change)
                and not (machine.prepare_event or machine.finalize_event)
            ):
                loops.add((source, name))
    return frozenset(loops)


SELF_LOOPS = _plain_self_loops(MACHINE)
_EVENTS = MACHINE.events


class SessionModel:
    """A model of the shared machine: one attribute, ``state``."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = INITIAL


def fire(model: SessionModel, trigger: str) -> None:
    """Apply ``trigger`` to ``model`` through the shared machine.

    Raises ``transitions.MachineError`` for a pair the table does not declare
    and ``KeyError`` for a trigger it does not know.
    """
    if (model.state, trigger) in SELF_LOOPS:
        return
    _EVENTS[trigger].trigger(model)


def mermaid() -> str:
    """The machine drawn by ``transitions`` as a Mermaid state diagram."""
    from transitions.extensions import GraphMachine

    drawing = GraphMachine(
        **MACHINE_KWARGS, graph_engine="mermaid", title="upperecho session", show_state_attributes=False
    )
    return drawing.get_graph().draw(None)


__all__ = [
    "CLOSED",
    "CLOSING",
    "CONNECTED",
    "ECHOING",
    "FINAL",
    "INITIAL",
    "MACHINE",
    "MachineError",
    "SELF_LOOPS",
    "STATES",
    "SessionModel",
    "TRANSITIONS",
    "TRIGGERS",
    "fire",
    "mermaid",
    "table",
]
