"""The docs show what the code does: the README's diagram is the machine's own drawing."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.serverproc import ROOT


def test_readme_embeds_the_current_state_diagram():
    drawn = subprocess.run(
        [sys.executable, "-m", "statemachine"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "stateDiagram-v2" in drawn
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```mermaid\n{drawn.rstrip()}\n```" in readme, "README diagram is stale: paste `python -m statemachine`"


def _read_back(drawing: str) -> tuple[dict[tuple[str, str], str], list[str], list[str]]:
    """The drawing as ``{(source, trigger): dest}``, its entry and final states.

    A composite state stands for each state inside it as a source, and for its
    initial state as a destination.
    """
    members: dict[str, list[str]] = {}
    initial: dict[str, str] = {}
    edges: list[tuple[str, str, list[str]]] = []
    entries: list[str] = []
    finals: list[str] = []
    group = None
    for line in drawing.splitlines():
        line = line.strip()
        if match := re.fullmatch(r"state (\w+) \{", line):
            group = match[1]
            members[group] = []
        elif line == "}":
            group = None
        elif match := re.fullmatch(r"\[\*\] --> (\w+)", line):
            if group is None:
                entries.append(match[1])
            else:
                initial[group] = match[1]
                members[group].append(match[1])
        elif match := re.fullmatch(r"(\w+) --> \[\*\]", line):
            finals.append(match[1])
        elif match := re.fullmatch(r"(\w+) --> (\w+): (.+)", line):
            edges.append((match[1], match[2], [t.strip() for t in match[3].split("|")]))
            if group is not None:
                members[group] += [s for s in (match[1], match[2]) if s not in members[group]]
    drawn: dict[tuple[str, str], str] = {}
    for source, dest, triggers in edges:
        for state in members.get(source, [source]):
            for trigger in triggers:
                assert (state, trigger) not in drawn, f"{state} {trigger} drawn twice"
                drawn[(state, trigger)] = initial.get(dest, dest)
    resolve = [initial.get(state, state) for state in entries]
    return drawn, resolve, finals


def test_the_drawing_holds_exactly_the_declared_table():
    from statemachine.machine import ENTRY_STATES, FINAL, mermaid, table

    drawn, entries, finals = _read_back(mermaid())
    assert drawn == table()
    assert entries == ENTRY_STATES and finals == [FINAL]


def test_the_supervisors_drawings_hold_exactly_their_declared_tables():
    from server import supervisor

    for drawing, transitions, initial, finals in zip(
        supervisor.mermaid(),
        (supervisor.TRANSITIONS, supervisor.PROCESS_TRANSITIONS),
        (supervisor.INITIAL, supervisor.PROCESS_INITIAL),
        (supervisor.FINAL, [supervisor.PROCESS_FINAL]),
        strict=True,
    ):
        declared = {
            (source, row["trigger"]): row["dest"]
            for row in transitions
            for source in ([row["source"]] if isinstance(row["source"], str) else row["source"])
        }
        assert _read_back(drawing) == (declared, [initial], finals)


def _drawn(moves: list[list[str]], groups: dict[str, list[str]]) -> tuple[str, tuple]:
    """A small machine (entered at ``A``, ended at ``Z``) drawn with ``groups``: the drawing, and what
    reading it back must give (its table, entries and finals)."""
    from transitions import Machine

    from statemachine.diagram import mermaid_of

    states = sorted({state for _, source, dest in moves for state in (source, dest)})
    machine = Machine(states=states, transitions=moves, initial="A", auto_transitions=False)
    drawing = mermaid_of(machine, "t", groups=groups, entries=["A"], finals=["Z"])
    return drawing, ({(source, trigger): dest for trigger, source, dest in moves}, ["A"], ["Z"])


def test_states_are_drawn_as_one_only_when_they_leave_alike():
    """A group is one composite state only if its members' exits out of it are the same, whatever they do inside."""
    inside = [["step", "A", "B"], ["hop", "A", "B"], ["step", "B", "B"]]  # two triggers label one edge inside
    alike, expected = _drawn(inside + [["stop", "A", "Z"], ["stop", "B", "Z"]], {"G": ["A", "B"]})
    assert "state G {" in alike and _read_back(alike) == expected
    unlike, expected = _drawn(inside + [["stop", "A", "Z"], ["quit", "B", "Z"]], {"G": ["A", "B"]})
    assert "state G {" not in unlike and _read_back(unlike) == expected
    alone, expected = _drawn(inside + [["stop", "A", "Z"], ["stop", "B", "Z"]], {"G": ["B"]})
    assert "state G {" in alone and _read_back(alone) == expected  # a group of one leaves like itself


def test_each_group_is_judged_on_its_own():
    """A group drawn state by state does not keep a later group that leaves alike from being drawn as one."""
    first = [["step", "A", "B"], ["step", "B", "B"], ["stop", "A", "Z"], ["quit", "B", "Z"], ["jump", "A", "C"]]
    second = [["go", "C", "D"], ["go", "D", "D"], ["stop", "C", "Z"], ["stop", "D", "Z"]]
    drawing, expected = _drawn(first + second, {"G1": ["A", "B"], "G2": ["C", "D"]})
    assert "state G1 {" not in drawing and "state G2 {" in drawing
    assert _read_back(drawing) == expected


def test_the_drawing_marks_no_state_as_active_and_the_message_loop_label_stands_alone():
    """No "current state" in a drawing of the machine; the loop's ``message`` is the only label at ECHOING."""
    from statemachine.machine import ECHOING, mermaid

    drawing = mermaid()
    assert "classDef" not in drawing and "active" not in drawing
    at_echoing = [line.strip() for line in drawing.splitlines() if line.strip().startswith(f"{ECHOING} -->")]
    assert at_echoing == [f"{ECHOING} --> {ECHOING}: message"]


def test_no_drawing_in_the_docs_marks_a_state_as_active():
    """A drawing of a machine has no current state: ``transitions``' own styling of one (red, "active") is noise."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    drawings = {
        f"{page.name} drawing {number}": drawing
        for page in pages
        for number, drawing in enumerate(re.findall(r"```mermaid\n(.*?)```", page.read_text(encoding="utf-8"), re.S))
    }
    assert len(drawings) >= 3  # the session's, the supervisor's and a server process's
    styled = [name for name, drawing in drawings.items() if "classDef" in drawing or "active" in drawing]
    assert styled == [], styled


def test_the_readmes_locust_reports_land_in_an_ignored_directory():
    """Running the README's Locust command leaves the checkout clean."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    outputs = [path for flag, path in re.findall(r"--(csv|html) (\S+)", readme)]
    assert outputs, "the README shows no Locust report option"
    for path in outputs:
        assert "/" in path, f"{path}: a report in the top of the checkout"
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, timeout=30)
        assert ignored.returncode == 0, f"{path} is not ignored by .gitignore"
