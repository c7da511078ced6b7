"""SPEC section 4 written out by hand, and the checks that hold a machine to it.

Nothing here is imported from :mod:`statemachine.machine`: the table is the
spec's, so a change to the declaration shows up as a difference.  The checks
return lists of problems instead of asserting, so that test_mutations.py can
show that each one notices a broken machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

STATES = ("CONNECTED", "ECHOING", "CLOSING", "CLOSED", "HANDSHAKE", "PROXY_HEADER")
INITIAL = "CONNECTED"
FINAL = "CLOSED"
OPEN = ("CONNECTED", "ECHOING")
#: The states a session may start in: INITIAL, then the phases a server option puts before it
#: (O6: the TLS handshake; O2: the PROXY protocol header).
ENTRIES = ("CONNECTED", "HANDSHAKE", "PROXY_HEADER")

#: (state, trigger) -> destination, row by row from the SPEC 4 table.
TABLE: dict[tuple[str, str], str] = {
    **{(state, "message"): "ECHOING" for state in OPEN},
    **{(state, "disconnect"): "CLOSING" for state in OPEN},
    **{(state, "end_of_stream"): "CLOSING" for state in OPEN},
    **{(state, "line_too_long"): "CLOSING" for state in OPEN},
    **{(state, "idle_timeout"): "CLOSING" for state in OPEN},
    **{(state, "line_timeout"): "CLOSING" for state in OPEN},
    **{(state, "shutdown"): "CLOSING" for state in OPEN},
    ("CLOSING", "flushed"): "CLOSED",
    **{(state, "abort"): "CLOSED" for state in ("CONNECTED", "ECHOING", "CLOSING", "HANDSHAKE", "PROXY_HEADER")},
    # O6: the TLS handshake
    ("HANDSHAKE", "handshake_done"): "CONNECTED",
    ("HANDSHAKE", "handshake_failed"): "CLOSED",
    # O2: the PROXY protocol header phase
    ("PROXY_HEADER", "proxy_header"): "CONNECTED",
    ("PROXY_HEADER", "proxy_rejected"): "CLOSED",
}
TRIGGERS = tuple(sorted({trigger for _, trigger in TABLE}))
#: What this check covers (tests/formal/test_every_check.py walks the declaration against it): read off the table.
COVERS_STATES = frozenset(state for pair, dest in TABLE.items() for state in (pair[0], dest))
COVERS_TRIGGERS = frozenset(TRIGGERS)

Table = Mapping[tuple[str, str], str]


def declaration_problems(declared: Table, states: Iterable[str], triggers: Iterable[str], initial: str) -> list[str]:
    """Differences between a declared machine and SPEC 4, one line each."""
    problems = []
    if list(states) != list(STATES):
        problems.append(f"states are {list(states)}, not {list(STATES)}")
    if initial != INITIAL:
        problems.append(f"initial state is {initial}, not {INITIAL}")
    if sorted(triggers) != sorted(TRIGGERS):
        problems.append(f"triggers are {sorted(triggers)}, not {sorted(TRIGGERS)}")
    for pair in sorted(set(TABLE) | set(declared)):
        if pair not in declared:
            problems.append(f"{pair} -> {TABLE[pair]} is missing")
        elif pair not in TABLE:
            problems.append(f"{pair} -> {declared[pair]} is not in the spec")
        elif declared[pair] != TABLE[pair]:
            problems.append(f"{pair} goes to {declared[pair]}, not {TABLE[pair]}")
    return problems


def runtime_problems(
    fire: Callable[[object, str], None], new_model: Callable[[], object], rejected: type[Exception]
) -> list[str]:
    """Drive a fresh model set to every state with every trigger (and an unknown one), as sessions do.

    An allowed pair must land where the spec says; any other must raise
    ``rejected`` (an unknown trigger: ``KeyError``) and leave the state alone.
    """
    problems = []
    if getattr(new_model(), "state", None) != INITIAL:
        problems.append(f"a new model starts in {getattr(new_model(), 'state', None)}, not {INITIAL}")
    for state in STATES:
        for trigger in (*TRIGGERS, "to_CLOSED"):
            model = new_model()
            model.state = state
            pair = (state, trigger)
            try:
                fire(model, trigger)
            except (rejected, KeyError) as exc:
                if pair in TABLE:
                    problems.append(f"{pair} was rejected ({type(exc).__name__}), the spec goes to {TABLE[pair]}")
                elif model.state != state:
                    problems.append(f"rejected {pair} still moved the model to {model.state}")
                continue
            if pair not in TABLE:
                problems.append(f"{pair} was accepted (-> {model.state}), the spec rejects it")
            elif model.state != TABLE[pair]:
                problems.append(f"{pair} landed in {model.state}, not {TABLE[pair]}")
    return problems


def reachable(table: Table, start: str) -> set[str]:
    seen = {start}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        for (source, _), dest in table.items():
            if source == state and dest not in seen:
                seen.add(dest)
                frontier.append(dest)
    return seen


def graph_problems(table: Table, states: Iterable[str], initial: str, entries: Iterable[str] = ENTRIES) -> list[str]:
    """CONNECTED initial, every state reachable from an entry, CLOSED reachable from every state and absorbing."""
    states = list(states)
    entries = list(entries)
    problems = []
    if initial != INITIAL:
        problems.append(f"initial state is {initial}, not {INITIAL}")
    if initial not in entries:
        problems.append(f"the initial state {initial} is not an entry state")
    from_entries = set().union(*(reachable(table, entry) for entry in entries))
    unreachable = [state for state in states if state not in from_entries]
    if unreachable:
        problems.append(f"unreachable from the entry states {entries}: {unreachable}")
    stuck = [state for state in states if FINAL not in reachable(table, state)]
    if stuck:
        problems.append(f"{FINAL} cannot be reached from {stuck}")
    leaving = sorted(pair for pair in table if pair[0] == FINAL)
    if leaving:
        problems.append(f"{FINAL} is not absorbing: {leaving}")
    return problems
