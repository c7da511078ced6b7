"""Model check of the worker loop with spin: one worker, three clients (promela_worker.py).

* Safety, three clients (``pan`` without a claim): no assertion fails and no
  run ends stuck: every complete message read is answered before the session
  closes, every reply reaches the client before the FIN, unsent output stays
  under its bound (L12), a ready session is served in the turn it is ready (no
  starvation, L16), never more sessions than the limit (L10), and shutdown ends
  within the drain time (L11).
* Liveness, two clients (``pan -a -f``, weak fairness): every session reaches
  CLOSED and frees its slot and socket, and a worker told to stop stops.  (Three
  clients take minutes here: the state space grows about a hundredfold a client.)
* Mutants of the loop, two clients: each switch of the template turned off (or
  a figure changed) must make spin object, so the properties bite.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.formal import promela_worker

_MISSING = [tool for tool, found in (("spin", shutil.which("spin")), ("gcc", shutil.which("gcc"))) if not found]
pytestmark = [
    pytest.mark.skipif(
        bool(_MISSING),
        reason=f"the model check needs {' and '.join(_MISSING)} (Debian packages spin, gcc); "
        "`make test` installs them when it runs as root",
    ),
    pytest.mark.timeout(600),
]
MODEL = "worker.pml"
TWO = {"N": 2, "MAXCONN": 2}  # two clients, two sessions at once


def verify(text: str, workdir: Path, claim: str | None = None) -> str:
    """spin and pan on ``text``: safety without ``claim``, else that LTL claim under weak fairness."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MODEL).write_text(text, encoding="utf-8")
    subprocess.run(["spin", "-a", MODEL], cwd=workdir, check=True, capture_output=True, timeout=120)
    flags = ["-DMEMLIM=2048", "-DCOLLAPSE", "-DNFAIR=3", *([] if claim else ["-DNOCLAIM"])]
    subprocess.run(
        ["gcc", "-O2", *flags, "-o", "pan", "pan.c"], cwd=workdir, check=True, capture_output=True, timeout=300
    )
    search = ["-a", "-f", "-N", claim] if claim else []
    run = subprocess.run(
        ["./pan", "-m200000", "-w24", *search], cwd=workdir, capture_output=True, text=True, timeout=500
    )
    report = run.stdout
    assert "State-vector" in report, f"pan did not finish:\n{report}\n{run.stderr}"
    assert "max search depth too small" not in report and "reached -DMEMLIM bound" not in report, report
    return report


def errors(report: str) -> int:
    return int(re.search(r"errors: (\d+)", report).group(1))


def test_the_model_is_generated_from_the_declaration_and_the_code():
    text = promela_worker.generate()
    for name, value in promela_worker.constants().items():
        assert f"#define {name} {value}\n" in text
    assert "assert(false)  /* an undeclared (state, trigger) pair */" in text
    assert ":: st[i] == CLOSING && t == flushed -> st[i] = CLOSED" in text


def test_three_clients_every_safety_property_holds(tmp_path):
    report = verify(promela_worker.generate(), tmp_path)
    assert "assertion violations\t+" in report and "invalid end states\t+" in report
    assert errors(report) == 0, report


def test_two_clients_with_two_messages_each_keep_the_output_bound(tmp_path):
    """The control for the backpressure mutant below: the same sizes with the loop as it is."""
    report = verify(promela_worker.generate(**TWO, NMSG=2), tmp_path)
    assert errors(report) == 0, report


@pytest.mark.parametrize("claim", ["ends", "stops"])
def test_every_session_closes_and_frees_its_slot_and_shutdown_ends(claim, tmp_path):
    report = verify(promela_worker.generate(**TWO), tmp_path, claim)
    assert "acceptance   cycles \t+ (fairness enabled)" in report
    assert errors(report) == 0, report


#: A broken loop, the switch or figure that makes it, and the check that must object.
MUTANTS = {
    "one ready session served per turn": ({"SERVE_ALL": 0}, None),
    "shutdown does not read what has arrived": ({"SHUTDOWN_READS": 0}, None),
    "FIN before the replies are handed over": ({"FLUSH_WAITS": 0}, None),
    "no busy limit": ({"ADMIT_CHECK": 0, "MAXCONN": 1}, None),
    "an aborted session keeps its slot": ({"FREE_ON_ABORT": 0}, "ends"),
    "no hard deadline on shutdown": ({"HARD": 0}, None),
    "no backpressure (two messages a client, so the bound can be passed)": ({"BACKPRESSURE": 0, "NMSG": 2}, None),
}


@pytest.mark.parametrize("name", MUTANTS)
def test_spin_rejects_a_broken_loop(name, tmp_path):
    change, claim = MUTANTS[name]
    report = verify(promela_worker.generate(**{**TWO, **change}), tmp_path, claim)
    assert errors(report) > 0, f"{name}: spin found nothing\n{report}"
