"""Model check of the design with spin: the Promela model is generated from the machine's declaration.

For the model with and without the idle timeout (L9), spin explores every
interleaving of client, session and operator and must report:

* no assertion violation and no invalid end state (``pan`` without the claim):
  no undeclared (state, trigger) pair is ever fired, every reply arrives once
  and in order before the close, nothing is sent after the close;
* no acceptance cycle for ``<> (state == CLOSED)`` (``pan -a``): every session
  reaches CLOSED;
* (with the idle timeout) no declared transition left unreached.

Then the same generator is run on broken tables, and spin must object.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from statemachine import machine
from tests.formal import mutants, promela, spec_table

_MISSING = [tool for tool, found in (("spin", shutil.which("spin")), ("gcc", shutil.which("gcc"))) if not found]
pytestmark = [
    pytest.mark.skipif(
        bool(_MISSING),
        reason=f"the model check needs {' and '.join(_MISSING)} (Debian packages spin, gcc); "
        "`make test` installs them when it runs as root",
    ),
    pytest.mark.timeout(300),
]
MODEL = "upperecho.pml"


def generate(table=None, states=None, initial=None, **options: object) -> str:
    return promela.promela(
        machine.table() if table is None else table,
        machine.STATES if states is None else states,
        machine.INITIAL if initial is None else initial,
        **options,
    )


def verify(text: str, workdir: Path, liveness: bool) -> str:
    """Run spin and pan on ``text``; returns pan's report."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MODEL).write_text(text, encoding="utf-8")
    # -o3: no statement merging, so that every branch of fire() is its own state in the "unreached" report
    subprocess.run(["spin", "-a", "-o3", MODEL], cwd=workdir, check=True, capture_output=True, timeout=120)
    flags = [] if liveness else ["-DNOCLAIM"]
    subprocess.run(["gcc", "-O0", *flags, "-o", "pan", "pan.c"], cwd=workdir, check=True, timeout=240)
    run = subprocess.run(
        ["./pan", "-m20000", "-w20", *(["-a"] if liveness else [])],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = run.stdout
    assert "State-vector" in report, f"pan did not finish:\n{report}\n{run.stderr}"
    assert "max search depth too small" not in report
    return report


def errors(report: str) -> int:
    return int(re.search(r"errors: (\d+)", report).group(1))


def unreached_lines(report: str, proctype: str) -> set[int]:
    section = report.split(f"unreached in proctype {proctype}\n", 1)[1].split("unreached in", 1)[0]
    return {int(number) for number in re.findall(rf"{re.escape(MODEL)}:(\d+),", section)}


def test_the_generated_fire_table_is_the_declared_table():
    text = generate()
    lines = sorted(promela.fire_lines(text).values())
    expected = sorted(
        f":: state == {source} && t == {trigger} -> state = {dest}"
        for (source, trigger), dest in spec_table.TABLE.items()
    )
    assert lines == expected
    assert "assert(false)  /* an undeclared (state, trigger) pair */" in text


def untaken_transitions(text: str, report: str) -> set[str]:
    """Declared transitions whose branch of fire() no execution of the model reaches."""
    lines = promela.fire_lines(text)
    return {lines[number] for number in unreached_lines(report, "Session") & set(lines)}


@pytest.mark.parametrize("idle", [True, False], ids=["idle-timeout-on", "idle-timeout-off"])
def test_no_invalid_end_state_and_every_reply_arrives_before_the_close(idle, tmp_path):
    text = generate(idle=idle)
    report = verify(text, tmp_path, liveness=False)
    assert "invalid end states\t+" in report and "assertion violations\t+" in report
    assert errors(report) == 0, report
    if idle:  # with the idle timeout off, its two transitions cannot be taken
        assert untaken_transitions(text, report) == set()
    else:
        assert {line.split(" && ")[1].split()[2] for line in untaken_transitions(text, report)} == {"idle_timeout"}


@pytest.mark.parametrize("idle", [True, False], ids=["idle-timeout-on", "idle-timeout-off"])
def test_every_session_reaches_closed(idle, tmp_path):
    report = verify(generate(idle=idle), tmp_path, liveness=True)
    assert "acceptance   cycles \t+" in report and "never claim         \t+ (closes)" in report
    assert errors(report) == 0, report


@pytest.mark.parametrize(
    "mutant", [m for m in mutants.TABLE_MUTANTS if mutants.SPIN in m.killed_by], ids=lambda m: m.name
)
def test_spin_rejects_a_broken_table(mutant, tmp_path):
    """An error, or a declared transition that no execution takes (idle timeout on)."""
    broken = mutants.build(mutant)
    text = generate(machine.table(broken), list(broken.states), broken.initial)
    report = verify(text, tmp_path, liveness=False)
    assert errors(report) > 0 or untaken_transitions(text, report)


def test_without_the_message_deadline_or_idle_timeout_a_trickling_client_holds_its_session(tmp_path):
    """L14's reason to exist, in the model: with both clocks off, some session never reaches CLOSED."""
    report = verify(generate(idle=False, line=False), tmp_path, liveness=True)
    assert errors(report) > 0, report
