"""The docs show what the code does: the README's diagram is the machine's own drawing."""

from __future__ import annotations

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


def test_every_declared_transition_is_drawn():
    from statemachine.machine import mermaid, table

    drawing = mermaid()
    for (source, trigger), dest in table().items():
        edge = next(line for line in drawing.splitlines() if line.strip().startswith(f"{source} --> {dest}:"))
        assert trigger in edge.split(":", 1)[1].replace(" ", "").split("|")
