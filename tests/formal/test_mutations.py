"""Do the tests bite?  Each mutant of the core must be caught by the checks that claim to catch it.

The table mutants go through the conformance checks (and, in
test_model_check.py, through spin); the source mutants through the same
property tests, with the same example counts, that test_properties.py runs on
the real core.  docs/verification.md records the outcome of each.
"""

from __future__ import annotations

from types import ModuleType

import pytest

from statemachine import machine
from tests.formal import mutants, properties, spec_table
from tests.formal.mutants import DECLARATION, GRAPH, RUNTIME, SOURCE_MUTANTS, SPIN, TABLE_MUTANTS


@pytest.mark.parametrize("mutant", TABLE_MUTANTS, ids=lambda m: m.name)
def test_table_mutant_is_caught(mutant: mutants.TableMutant, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = mutants.build(mutant)
    declared = machine.table(broken)
    states = list(broken.states)
    caught = set()
    if spec_table.declaration_problems(declared, states, broken.events, broken.initial):
        caught.add(DECLARATION)
    # The real runtime path (``fire`` and its compiled shortcut) driven through the mutant machine.
    monkeypatch.setattr(machine, "PLAIN", machine._compile_plain(broken))
    monkeypatch.setattr(machine, "_EVENTS", broken.events)
    monkeypatch.setattr(machine, "INITIAL", broken.initial)
    if spec_table.runtime_problems(machine.fire, machine.SessionModel, machine.MachineError):
        caught.add(RUNTIME)
    if spec_table.graph_problems(declared, states, broken.initial):
        caught.add(GRAPH)
    assert caught == mutant.killed_by - {SPIN}


def _fails(check: str, core: ModuleType) -> bool:
    factory = getattr(properties, check)
    try:
        if check == "all_of_unicode_echoes":
            factory(core)
        else:
            factory(core, shrink=False)()
    except Exception:  # any failure of the property counts as catching the mutant
        return True
    return False


@pytest.mark.parametrize("mutant", SOURCE_MUTANTS, ids=lambda m: f"{m.rule} {m.name}")
def test_source_mutant_is_caught(mutant: mutants.SourceMutant) -> None:
    core = mutant.make()
    survived = sorted(check for check in mutant.killed_by if not _fails(check, core))
    assert survived == [], f"{mutant.name}: these properties did not notice"


def test_the_unmutated_copy_passes_the_same_checks() -> None:
    """The harness itself: a copy made the mutants' way, with nothing changed, is not caught."""
    core = mutants.session_with()
    assert [check for check in ("framing_invariance", "raw_reads_are_messages") if _fails(check, core)] == []


@pytest.mark.parametrize("mutant", mutants.PROXY_MUTANTS, ids=lambda m: f"{m.rule} {m.name}")
def test_proxy_parser_mutant_is_caught(mutant: mutants.SourceMutant) -> None:
    parser = mutant.make()
    survived = sorted(check for check in mutant.killed_by if not _fails(check, parser))
    assert survived == [], f"{mutant.name}: these properties did not notice"
