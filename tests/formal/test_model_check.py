"""Model check of the design with spin: the Promela model is generated from the machine's declaration.

For the model with and without the idle timeout (L9), and with a server that
may or may not start a session with the TLS handshake (O6) or the PROXY header
(O2), spin explores every interleaving of client, session and operator and must
report:

* no assertion violation and no invalid end state (``pan`` without the claim):
  no undeclared (state, trigger) pair is ever fired, every reply arrives once
  and in order before the close, nothing is sent after the close, nothing is
  sent before a valid PROXY header;
* no acceptance cycle for ``<> (state == CLOSED)`` (``pan -a``): every session
  reaches CLOSED;
* no declared transition left unreached, but for those of the phase the
  model leaves out (the idle timeout's when it is off, the handshake's without TLS).

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


def _lines(pairs: set[tuple[str, str]]) -> set[str]:
    return {
        f":: state == {source} && t == {trigger} -> state = {spec_table.TABLE[(source, trigger)]}"
        for source, trigger in pairs
    }


def _leaving(state: str) -> set[str]:
    return _lines({pair for pair in spec_table.TABLE if pair[0] == state})


# What a model without an option cannot take: the idle timeout's two transitions, each phase's three.
_IDLE_ONLY = _lines({(state, "idle_timeout") for state in spec_table.OPEN})
_OPTIONS = [
    pytest.param(True, True, True, set(), id="idle-timeout-on-tls-proxy-either"),
    pytest.param(False, True, True, _IDLE_ONLY, id="idle-timeout-off-tls-proxy-either"),
    pytest.param(True, False, True, _leaving("HANDSHAKE"), id="idle-timeout-on-no-tls"),
    pytest.param(True, True, False, _leaving("PROXY_HEADER"), id="idle-timeout-on-no-proxy"),
]


@pytest.mark.parametrize(("idle", "tls", "proxy", "untaken"), _OPTIONS)
def test_no_invalid_end_state_and_every_reply_arrives_before_the_close(idle, tls, proxy, untaken, tmp_path):
    text = generate(idle=idle, tls=tls, proxy=proxy)
    report = verify(text, tmp_path, liveness=False)
    assert "invalid end states\t+" in report and "assertion violations\t+" in report
    assert errors(report) == 0, report
    assert untaken_transitions(text, report) == untaken


@pytest.mark.parametrize("idle", [True, False], ids=["idle-timeout-on", "idle-timeout-off"])
def test_every_session_reaches_closed(idle, tmp_path):
    report = verify(generate(idle=idle, tls=True, proxy=True), tmp_path, liveness=True)
    assert "acceptance   cycles \t+" in report and "never claim         \t+ (closes)" in report
    assert errors(report) == 0, report


@pytest.mark.parametrize(
    "mutant", [m for m in mutants.TABLE_MUTANTS if mutants.SPIN in m.killed_by], ids=lambda m: m.name
)
def test_spin_rejects_a_broken_table(mutant, tmp_path):
    """An error, or a declared transition that no execution takes (idle timeout on, every entry possible)."""
    broken = mutants.build(mutant)
    text = generate(machine.table(broken), list(broken.states), broken.initial)
    report = verify(text, tmp_path, liveness=False)
    assert errors(report) > 0 or untaken_transitions(text, report)


def test_without_the_message_deadline_or_idle_timeout_a_trickling_client_holds_its_session(tmp_path):
    """L14's reason to exist, in the model: with both clocks off, some session never reaches CLOSED."""
    report = verify(generate(idle=False, line=False), tmp_path, liveness=True)
    assert errors(report) > 0, report
