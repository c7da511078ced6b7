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

Driving a model through ``Event.trigger`` costs about 10 microseconds, which
would be most of what a session costs.  So at import the machine is compiled:
every declared transition that has no callbacks and no conditions, between
states with no enter/exit callbacks, is entered in ``PLAIN`` as
``(source, trigger) -> dest``; for those, the library's whole effect is to set
the model's state to ``dest``, and :func:`fire` does just that.  ``PLAIN`` is
read from the machine, never written by hand, so the declaration stays the
single source of truth; a pair it does not hold (an undeclared pair, or a
transition given callbacks later) goes to the library, which runs it in full
or rejects it with ``MachineError``.

``python -m statemachine`` draws this same declaration as a Mermaid diagram.
"""

from __future__ import annotations

from typing import Any

from transitions import Machine, MachineError

CONNECTED = "CONNECTED"
ECHOING = "ECHOING"
CLOSING = "CLOSING"
CLOSED = "CLOSED"
HANDSHAKE = "HANDSHAKE"  # O6: the TLS handshake, before any byte of the protocol
PROXY_HEADER = "PROXY_HEADER"  # O2: waiting for the load balancer's PROXY protocol header

STATES: list[str] = [CONNECTED, ECHOING, CLOSING, CLOSED, HANDSHAKE, PROXY_HEADER]
INITIAL = CONNECTED
FINAL = CLOSED
#: The states a session may start in: INITIAL, then each phase a server option puts before it.
ENTRY_STATES: list[str] = [INITIAL, HANDSHAKE, PROXY_HEADER]

_OPEN = [CONNECTED, ECHOING]

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "message", "source": _OPEN, "dest": ECHOING},
    {"trigger": "disconnect", "source": _OPEN, "dest": CLOSING},
    {"trigger": "end_of_stream", "source": _OPEN, "dest": CLOSING},
    {"trigger": "line_too_long", "source": _OPEN, "dest": CLOSING},
    {"trigger": "idle_timeout", "source": _OPEN, "dest": CLOSING},
    {"trigger": "line_timeout", "source": _OPEN, "dest": CLOSING},
    {"trigger": "shutdown", "source": _OPEN, "dest": CLOSING},
    {"trigger": "flushed", "source": CLOSING, "dest": CLOSED},
    {"trigger": "abort", "source": [CONNECTED, ECHOING, CLOSING, HANDSHAKE, PROXY_HEADER], "dest": CLOSED},
    {"trigger": "handshake_done", "source": HANDSHAKE, "dest": CONNECTED},
    {"trigger": "handshake_failed", "source": HANDSHAKE, "dest": CLOSED},
    {"trigger": "proxy_header", "source": PROXY_HEADER, "dest": CONNECTED},
    {"trigger": "proxy_rejected", "source": PROXY_HEADER, "dest": CLOSED},
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


def _compile_plain(machine: Machine) -> dict[tuple[str, str], str]:
    """``(source, trigger) -> dest`` for the transitions whose only effect is the state change."""
    if machine.before_state_change or machine.after_state_change or machine.prepare_event or machine.finalize_event:
        return {}
    plain = {}
    for name, event in machine.events.items():
        for source, declared in event.transitions.items():
            if len(declared) != 1:
                continue  # several candidates: conditions choose, the library decides
            transition = declared[0]
            ends = (machine.get_state(source), machine.get_state(transition.dest))
            if (
                transition.prepare
                or transition.conditions
                or transition.before
                or transition.after
                or any(state.on_enter or state.on_exit for state in ends)
            ):
                continue
            plain[(source, name)] = transition.dest
    return plain


PLAIN = _compile_plain(MACHINE)
_EVENTS = MACHINE.events


class SessionModel:
    """A model of the shared machine: one attribute, ``state``; ``start`` is one of ``ENTRY_STATES``."""

    __slots__ = ("state",)

    def __init__(self, start: str | None = None) -> None:
        if start is None:
            start = INITIAL
        elif start not in ENTRY_STATES:
            raise ValueError(f"a session cannot start in {start}; entry states: {', '.join(ENTRY_STATES)}")
        self.state = start


def fire(model: SessionModel, trigger: str) -> None:
    """Apply ``trigger`` to ``model`` through the shared machine.

    Raises ``transitions.MachineError`` for a pair the table does not declare
    and ``KeyError`` for a trigger it does not know.
    """
    dest = PLAIN.get((model.state, trigger))
    if dest is None:
        _EVENTS[trigger].trigger(model)
    else:
        model.state = dest


def mermaid() -> str:
    """The machine as a Mermaid state diagram, drawn from this declaration (:mod:`statemachine.diagram`)."""
    from statemachine.diagram import mermaid_of

    return mermaid_of(MACHINE, "upperecho session", groups={"OPEN": _OPEN}, entries=ENTRY_STATES, finals=[FINAL])


__all__ = [
    "CLOSED",
    "CLOSING",
    "CONNECTED",
    "ECHOING",
    "ENTRY_STATES",
    "FINAL",
    "HANDSHAKE",
    "INITIAL",
    "MACHINE",
    "MachineError",
    "PLAIN",
    "PROXY_HEADER",
    "STATES",
    "SessionModel",
    "TRANSITIONS",
    "TRIGGERS",
    "fire",
    "mermaid",
    "table",
]
