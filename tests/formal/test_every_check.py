"""Every state and trigger of the declaration is in every formal check: the walk.

A new state or trigger (a new phase of a connection, a new deadline) is only
proved like the old ones if each check knows it: the hand-written spec table,
the reference model, the timed model of the core, the live model-based test,
the spin model, and the protocol's own page.  Each check module exports what
it covers (``COVERS_STATES``, ``COVERS_TRIGGERS``), read off its own table,
template or rules where it can be; this test walks ``STATES`` and ``TRIGGERS``
of :mod:`statemachine.machine` and fails on any name a check lacks.

A check may leave a name out only in its ``NOT_COVERED``, with the reason and
the check that covers it instead, and that check must cover it.  An exemption
for a name the check does cover, or that the machine does not declare, fails
too, so the list cannot go stale.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest

from statemachine import machine
from tests.formal import promela, reference, spec_table, test_live_model, test_timed_model

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_ROW = re.compile(r"^\| `(\w+)`[^|]*\| ([A-Z_, ]+) \| ([A-Z_]+) \|$", re.MULTILINE)


def protocol_table() -> dict[tuple[str, str], str]:
    """``{(source, trigger): dest}`` as docs/protocol.md's state machine table states it."""
    return {
        (source.strip(), trigger): dest
        for trigger, sources, dest in _ROW.findall(PROTOCOL.read_text(encoding="utf-8"))
        for source in sources.split(",")
    }


class _Protocol:
    """docs/protocol.md as a check: the names its table uses."""

    def __init__(self) -> None:
        table = protocol_table()
        self.COVERS_TRIGGERS = frozenset(trigger for _, trigger in table)
        self.COVERS_STATES = frozenset(state for pair, dest in table.items() for state in (pair[0], dest))


CHECKS: dict[str, ModuleType | _Protocol] = {
    "spec table": spec_table,
    "reference model": reference,
    "timed core model": test_timed_model,
    "live model": test_live_model,
    "spin model": promela,
    "protocol.md": _Protocol(),
}
DECLARED = frozenset(machine.STATES) | frozenset(machine.TRIGGERS)


def covers(check: ModuleType | _Protocol) -> frozenset[str]:
    return frozenset(check.COVERS_STATES) | frozenset(check.COVERS_TRIGGERS)


@pytest.mark.parametrize("name", CHECKS)
def test_the_check_knows_every_declared_state_and_trigger(name):
    check = CHECKS[name]
    exempt = getattr(check, "NOT_COVERED", {})
    missing = sorted(DECLARED - covers(check) - set(exempt))
    assert missing == [], f"{name} does not cover {missing}: add them to it (or to its NOT_COVERED, with why)"


@pytest.mark.parametrize("name", [name for name in CHECKS if getattr(CHECKS[name], "NOT_COVERED", None)])
def test_every_exemption_is_current_and_covered_elsewhere(name):
    check = CHECKS[name]
    for item, (elsewhere, why) in check.NOT_COVERED.items():
        assert item in DECLARED, f"{name} exempts {item!r}, which the machine does not declare"
        assert item not in covers(check), f"{name} exempts {item!r} but covers it: drop the exemption"
        assert elsewhere in CHECKS and elsewhere != name, f"{name}: {item!r} is said to be covered by {elsewhere!r}"
        assert item in covers(CHECKS[elsewhere]), f"{name} leaves {item!r} to {elsewhere}, which does not cover it"
        assert why.strip(), f"{name}: say why {item!r} is not covered"


def test_no_check_claims_a_name_the_machine_does_not_declare():
    for name, check in CHECKS.items():
        assert covers(check) <= DECLARED, f"{name} covers {sorted(covers(check) - DECLARED)}, which are not declared"


def test_the_protocol_page_states_the_declared_table():
    assert protocol_table() == machine.table()
