"""The session machine as a Mermaid state diagram, written from the machine's own declaration.

``transitions``' own Mermaid drawing styles the model's current state as
"active" (meaningless in a drawing of the machine itself) and draws every
source state's exits separately, so the long list of closing triggers lands on
the loop of a state that messages keep in place and hides its label.  Here the
states that leave alike are drawn as one composite state (a statechart's
superstate: its exits apply to each state inside), and only the transitions
among them are drawn inside it.  A test reads the drawing back and compares it
with the machine's table, so nothing is lost on the way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from transitions import Machine


def _exits(machine: Machine) -> dict[str, dict[str, list[str]]]:
    """``{source: {trigger: [dest, ...]}}`` in declaration order."""
    exits: dict[str, dict[str, list[str]]] = {state: {} for state in machine.states}
    for name, event in machine.events.items():
        for source, declared in event.transitions.items():
            exits[source].setdefault(name, []).extend(transition.dest for transition in declared)
    return exits


def mermaid_of(
    machine: Machine,
    title: str,
    groups: Mapping[str, Sequence[str]] = {},  # noqa: B006 (read only)
    entries: Sequence[str] = (),
    finals: Sequence[str] = (),
) -> str:
    """Draw ``machine``; each of ``groups`` (name -> member states, the first one its initial)
    becomes a composite state when its members leave alike, else its members are drawn one by one."""
    exits = _exits(machine)
    composite: dict[str, str] = {}  # member -> group name
    for name, members in groups.items():
        inside = set(members)
        outward = [{t: d for t, d in exits[m].items() if not set(d) <= inside} for m in members]
        if all(o == outward[0] for o in outward):
            composite.update(dict.fromkeys(members, name))

    def target(state: str, source: str) -> str:
        """A group is entered through its initial state: draw such an edge to the group itself."""
        group = composite.get(state)
        if group is not None and groups[group][0] == state and composite.get(source) != group:
            return group
        return state

    edges: dict[tuple[str, str], list[str]] = {}
    for source, by_trigger in exits.items():
        group = composite.get(source)
        for trigger, dests in by_trigger.items():
            for dest in dests:
                if group is not None and composite.get(dest) != group:
                    if source != groups[group][0]:
                        continue  # drawn once, from the group
                    edges.setdefault((group, target(dest, group)), []).append(trigger)
                else:
                    edges.setdefault((source, target(dest, source)), []).append(trigger)

    lines = ["---", f"title: {title}", "---", "stateDiagram-v2", "  direction LR"]
    lines += [f"  [*] --> {target(state, '')}" for state in entries]
    for name, members in groups.items():
        if composite.get(members[0]) != name:
            continue
        lines.append(f"  state {name} {{")
        lines.append(f"    [*] --> {members[0]}")
        lines += [
            f"    {source} --> {dest}: {' | '.join(triggers)}"
            for (source, dest), triggers in edges.items()
            if composite.get(source) == name
        ]
        lines.append("  }")
    lines += [
        f"  {source} --> {dest}: {' | '.join(triggers)}"
        for (source, dest), triggers in edges.items()
        if source not in composite
    ]
    lines += [f"  {state} --> [*]" for state in finals]
    return "\n".join(lines)
