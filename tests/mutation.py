"""An independent judge of the tests: mutmut over the core and over a sample of the worker.

``make mutation`` runs this; it is not part of ``make test`` (it takes long).
The project's own mutants (tests/formal/mutants.py) were written by the people
who wrote the tests; mutmut's are not.  Each part is run in a copy of the tree
under ``build/mutation/<part>/``, since mutmut edits the files it mutates: the
working tree is never touched.

* ``statemachine``: every mutant of ``statemachine/`` against the fast suites
  (tests/statemachine, tests/test_docs.py, tests/formal without the live model and without
  test_mutations.py, which re-applies the project's own mutants by text, so
  that any outside edit of those lines errors there and would count as a kill);
* ``worker``: the mutants on a sample of ``server/worker.py``'s lines (every
  ``--every``-th line that holds code) against the live suites (tests/server,
  tests/hardening without the soak) and the spin model of the worker loop,
  which is generated from the worker's own figures.

The summary (mutants, killed, survived, timed out) and every survivor's diff
are printed and written to ``build/mutation/<part>.txt``.  For the
statemachine part, the spin model checks run only for machine.py's mutants: they
are generated from that file's declaration and cannot see the others.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
MUTMUT = (sys.executable, "-m", "mutmut")


# mutmut 2.5.1 counts only exit status 1 as a kill, so a mutant that breaks an import (pytest's
# status 2) would "survive": the runner is this module, which turns every failure into 1.
RUNNER = (sys.executable, "-m", "tests.mutation", "pytest")
# The suite's per-test timeout is for a normal run; under mutation a loaded machine may need longer.
PYTEST_OPTIONS = ("-x", "-q", "-p", "no:cacheprovider", "-o", "timeout=900")
THEN = "--then"


@dataclass(frozen=True)
class Part:
    paths: str
    tests: tuple[str, ...]
    pytest_options: tuple[str, ...] = ()
    sampled: bool = False
    #: (file, options): extra pytest options for the mutants of every other file than ``file``
    narrowed: tuple[str, tuple[str, ...]] | None = None
    #: file -> the tests that run first for its mutants.  The runner stops at the first failure, so a killed
    #: mutant costs the tests before the one that kills it; the same tests run, in another order.
    first: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: tests that run last for every mutant, being slow (a minute on a busy machine) and seldom the first to fail
    last: tuple[str, ...] = ()


def _tests(*names: str) -> tuple[str, ...]:
    return tuple(f"tests/statemachine/test_{name}.py" for name in names)


PARTS = {
    "statemachine": Part(
        "statemachine/",
        # test_docs.py: the README's drawing must be the declaration's own, as statemachine/ draws it
        ("tests/statemachine", "tests/formal", "tests/test_docs.py"),
        (
            "--ignore=tests/formal/test_live_model.py",
            "--ignore=tests/formal/test_mutations.py",
            # asks git about .gitignore, and the copy the mutants run in is no git checkout
            "--deselect=tests/test_docs.py::test_the_readmes_locust_reports_land_in_an_ignored_directory",
        ),
        # The spin models are generated from machine.py's declaration alone: they cannot see the other files.
        narrowed=(
            "statemachine/machine.py",
            ("--ignore=tests/formal/test_model_check.py", "--ignore=tests/formal/test_worker_model.py"),
        ),
        first={
            "statemachine/framing.py": _tests("framing", "line_limit", "every_boundary"),
            "statemachine/machine.py": (*_tests("machine"), "tests/formal/test_conformance.py"),
            "statemachine/diagram.py": (*_tests("machine"), "tests/test_docs.py"),
            "statemachine/proxy.py": _tests("proxy", "session_proxy"),
            "statemachine/session.py": _tests(
                "session_line", "session_raw", "session_control", "session_messages", "session_reports", "limits"
            ),
            "statemachine/text.py": _tests("text"),
        },
        last=_tests("prefilter"),
    ),
    "worker": Part(
        "server/worker.py",
        ("tests/server", "tests/hardening", "tests/formal/test_worker_model.py"),
        ("-m", "not slow"),
        sampled=True,
        # the model of the loop, checked by spin, is generated from the worker's own figures (READ_SIZE, the bound)
        last=("tests/formal/test_worker_model.py",),
    ),
}


class MutationRunError(Exception):
    """mutmut could not run (its baseline failed, or it is not installed)."""


CACHE = ".mutmut-cache"


def copy_tree(destination: Path, keep_cache: bool = False) -> None:
    """The files git knows of (tracked, or new and not ignored), copied afresh.

    With ``keep_cache``, mutmut's record of the mutants already run survives
    the copy: mutmut then runs only the mutants not yet tested against these
    sources and tests, so a run too long for one sitting can go on later.
    """
    kept = None
    if keep_cache and (destination / CACHE).exists():
        kept = (destination / CACHE).read_bytes()
    if destination.exists():
        shutil.rmtree(destination)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            target = destination / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    if kept is not None:
        (destination / CACHE).write_bytes(kept)


_HOOK = """\
# Written by tests/mutation.py: mutmut calls this before each mutant.  Each file's mutants run the part's
# tests in the order most likely to stop early for that file, without the checks that cannot see it.
import os

COMMANDS = {commands!r}


def pre_mutation(context):
    command = COMMANDS.get(os.path.normpath(context.filename))
    if command is not None:
        context.config.test_command = command
"""


def ordered_tests(part: Part, file: str) -> list[str]:
    """The part's test paths for the mutants of ``file``: its ``first`` tests, the rest, then the ``last``."""
    files: list[str] = []
    for path in part.tests:
        root = ROOT / path
        found = sorted(root.rglob("test_*.py")) if root.is_dir() else [root]
        files += [str(test.relative_to(ROOT)) for test in found]
    front = list(part.first.get(file, ()))
    return front + [test for test in files if test not in front and test not in part.last] + list(part.last)


def test_commands(part: Part, files: list[str]) -> dict[str, str]:
    """mutmut's test command for the mutants of each of ``files``: the runner's tests, reordered, in stages."""
    commands = {}
    for file in files:
        options = [*PYTEST_OPTIONS, *part.pytest_options]
        if part.narrowed is not None and file != part.narrowed[0]:
            options += part.narrowed[1]
        ignored = {option.removeprefix("--ignore=") for option in options if option.startswith("--ignore=")}
        tests = [test for test in ordered_tests(part, file) if test not in ignored]  # pytest runs a named file
        first = len(part.first.get(file, ()))
        stages = [tests[:first], tests[first:]] if first else [tests]
        command = [*RUNNER]
        for number, stage in enumerate(stages):
            command += [*([THEN] if number else []), *options, *stage]
        commands[file] = shlex.join(command)
    return commands


def sample_patch(path: str, every: int, offset: int = 0) -> str:
    """A patch that marks every ``every``-th code line of ``path`` as added, for mutmut's ``--use-patch-file``."""
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    code = [n for n, line in enumerate(lines, start=1) if line.strip() and not line.strip().startswith("#")]
    chosen = set(code[offset::every])
    body = [f"+{line}" if n in chosen else f" {line}" for n, line in enumerate(lines, start=1)]
    header = [f"--- {path}\n+++ {path}", f"@@ -1,{len(lines) - len(chosen)} +1,{len(lines)} @@"]
    return "\n".join(header + body) + "\n"


def _sources(path: str) -> list[Path]:
    """The Python files a ``--paths-to-mutate`` entry names."""
    source = ROOT / path
    return [source] if source.is_file() else sorted(source.rglob("*.py"))


@dataclass
class Outcome:
    mutants: int
    killed: int
    suspicious: int  # killed, but slower than the baseline
    survived: list[str]  # one unified diff each, headed by the mutant's number
    timed_out: list[str]
    untested: int


def read_results(workdir: Path, paths: str) -> Outcome:
    """Every mutant's status from mutmut's cache, and ``mutmut show``'s diff of each that was not killed.

    The mutated files are copied afresh first: a run that was stopped may have left a mutant on disk,
    and the diffs are taken against what is there.
    """
    for path in paths.split(","):
        for file in _sources(path):
            shutil.copy2(file, workdir / file.relative_to(ROOT))
    files = {str(file.relative_to(ROOT)) for path in paths.split(",") for file in _sources(path)}
    with sqlite3.connect(workdir / CACHE) as cache:
        rows = cache.execute(
            "SELECT m.id, m.status, l.line_number, s.filename FROM Mutant m"
            " JOIN Line l ON m.line = l.id JOIN SourceFile s ON l.sourcefile = s.id ORDER BY m.id"
        ).fetchall()
    rows = [row for row in rows if row[3] in files]  # a copy once used for other files still holds their record

    def shown(number: int, line: int, filename: str) -> str:
        diff = subprocess.run([*MUTMUT, "show", str(number)], cwd=workdir, capture_output=True, text=True).stdout
        return f"#{number} {filename}:{line + 1}\n{diff.strip()}"

    count = Counter(status for _, status, _, _ in rows)
    return Outcome(
        mutants=len(rows),
        killed=count["ok_killed"] + count["ok_suspicious"],
        suspicious=count["ok_suspicious"],
        survived=[shown(n, line, f) for n, status, line, f in rows if status == "bad_survived"],
        timed_out=[shown(n, line, f) for n, status, line, f in rows if status == "bad_timeout"],
        untested=count["untested"] + count["skipped"],
    )


def _workdir(name: str, only: str | None) -> Path:
    return WORK / (name if only is None else f"{name}-{only.replace('/', '_').replace(',', '+')}")


#: Records a baseline time in a fresh mutmut cache, as mutmut's own unmutated run would (run in the copy).
_SEED_BASELINE = (
    "import sys; from mutmut.cache import hash_of_tests, set_cached_test_time; "
    "set_cached_test_time(float(sys.argv[1]), hash_of_tests(['tests/']))"
)


def keep_survivors(workdir: Path, tests_hash: str) -> int:
    """Mark the survivors in ``workdir``'s record as run against the tests of ``tests_hash``; returns how many.

    mutmut runs a survivor again whenever any test has changed since, and each
    costs the whole suite.  A survivor already read is equivalent (no test can
    kill it) or real (then the test that now kills it was checked by applying
    it): either way a second run tells nothing new, and a long run resumed after
    each new test would spend its time on them.  Without this, they run again.
    A mutant that timed out is run again: the machine may have been the cause.
    """
    with sqlite3.connect(workdir / CACHE) as cache:
        return cache.execute(
            "UPDATE Mutant SET tested_against_hash = ? WHERE status = 'bad_survived'", (tests_hash,)
        ).rowcount


def repeated_line_mutants(workdir: Path, files: Collection[str]) -> list[tuple[int, str]]:
    """The mutants mutmut 2.5.1 leaves unrun: on a line whose text an earlier line of the same file has.

    Its cache looks up the record of a line by the line's text first and reuses
    it for every later line with the same text (``get_cached_mutation_statuses``),
    so a repeated ``return b""`` takes the verdicts of the first one and its own
    mutants are never run: they stay "untested" after a finished run.  Returns
    ``(mutant number, file)`` for each in ``files`` (the record may hold others, from another run).
    """
    with sqlite3.connect(workdir / CACHE) as cache:
        rows = cache.execute(
            "SELECT m.id, s.filename FROM Mutant m JOIN Line l ON m.line = l.id"
            " JOIN SourceFile s ON l.sourcefile = s.id WHERE m.status = 'untested' AND EXISTS ("
            "SELECT 1 FROM Line o WHERE o.sourcefile = l.sourcefile AND o.line = l.line"
            " AND o.line_number < l.line_number) ORDER BY m.id"
        ).fetchall()
    return [(number, filename) for number, filename in rows if filename in files]


def record_verdict(workdir: Path, number: int, killed: bool, tests_hash: str) -> None:
    """Write a mutant's verdict into mutmut's record, as its own run would."""
    with sqlite3.connect(workdir / CACHE) as cache:
        cache.execute(
            "UPDATE Mutant SET status = ?, tested_against_hash = ? WHERE id = ?",
            ("ok_killed" if killed else "bad_survived", tests_hash, number),
        )


def run_repeated_lines(name: str, workdir: Path, commands: dict[str, str], tests_hash: str) -> None:
    """Run the mutants mutmut skipped (:func:`repeated_line_mutants`) with each file's own test command."""
    left = repeated_line_mutants(workdir, commands)
    if left:
        print(f"[{name}] {len(left)} mutants on repeated lines, which mutmut skips: run here", flush=True)
    for number, filename in left:
        subprocess.run([*MUTMUT, "apply", str(number)], cwd=workdir, check=True, capture_output=True)
        try:
            failed = subprocess.run(shlex.split(commands[filename]), cwd=workdir).returncode != 0
        finally:
            shutil.copy2(ROOT / filename, workdir / filename)
        record_verdict(workdir, number, failed, tests_hash)
        print(f"[{name}] #{number} {filename}: {'killed' if failed else 'survived'}", flush=True)


#: mutmut's hash of the tests, as its run computes it (run in the copy).
_TESTS_HASH = "from mutmut.cache import hash_of_tests; print(hash_of_tests(['tests/']))"


def run_part(
    name: str,
    every: int,
    offset: int,
    only: str | None = None,
    baseline: float | None = None,
    resume: bool = False,
    survivors_read: bool = False,
) -> Outcome:
    part = PARTS[name]
    workdir = _workdir(name, only)
    copy_tree(workdir, keep_cache=resume)
    if baseline is not None:  # shards of one run: the suite has passed once, unmutated; not once a shard
        subprocess.run([sys.executable, "-c", _SEED_BASELINE, str(baseline)], cwd=workdir, check=True)
    tests_hash = subprocess.run(
        [sys.executable, "-c", _TESTS_HASH], cwd=workdir, check=True, capture_output=True, text=True
    ).stdout.strip()
    if survivors_read and (workdir / CACHE).exists():
        print(f"[{name}] {keep_survivors(workdir, tests_hash)} survivors already read are not run again", flush=True)
    runner = shlex.join([*RUNNER, *PYTEST_OPTIONS, *part.tests, *part.pytest_options])
    files = [str(file.relative_to(ROOT)) for path in (only or part.paths).split(",") for file in _sources(path)]
    commands = test_commands(part, files)
    hook = _HOOK.format(commands=commands)
    (workdir / "mutmut_config.py").write_text(hook, encoding="utf-8")
    command = [
        *MUTMUT,
        "run",
        "--paths-to-mutate",
        only or part.paths,
        "--tests-dir",
        "tests/",
        "--runner",
        runner,
        "--test-time-multiplier",
        "4",
        "--test-time-base",
        "60",
        "--no-progress",
        "--simple-output",
    ]
    if part.sampled:
        (workdir / "sample.patch").write_text(sample_patch(part.paths, every, offset), encoding="utf-8")
        command += ["--use-patch-file", "sample.patch"]
    print(f"[{name}] mutmut over {only or part.paths} in {workdir.relative_to(ROOT)}", flush=True)
    started = time.monotonic()
    run = subprocess.run(command, cwd=workdir)
    if run.returncode & 1:
        raise MutationRunError(f"mutmut failed on {name} (exit {run.returncode}); see the output above")
    run_repeated_lines(name, workdir, commands, tests_hash)
    return report_part(name, only, every, time.monotonic() - started)


def report_part(name: str, only: str | None, every: int, seconds: float | None = None) -> Outcome:
    """Summarize the run in ``name``'s copy (also one that was stopped: its mutants not yet run are counted)."""
    part = PARTS[name]
    workdir = _workdir(name, only)
    if not (workdir / CACHE).exists():
        raise MutationRunError(f"no mutmut run in {workdir.relative_to(ROOT)}")
    outcome = read_results(workdir, only or part.paths)
    report = summary(name, only or part.paths, part, outcome, seconds, every if part.sampled else None)
    print(report)
    (workdir.parent / f"{workdir.name}.txt").write_text(report, encoding="utf-8")
    return outcome


def summary(name: str, paths: str, part: Part, outcome: Outcome, seconds: float | None, every: int | None) -> str:
    scope = f"{paths} (every {every}th code line)" if every else paths
    head = (
        f"mutation summary [{name}]: {scope} against {' '.join(part.tests)}\n"
        f"  mutants {outcome.mutants}, killed {outcome.killed} ({outcome.suspicious} of them slow), "
        f"survived {len(outcome.survived)}, timed out {len(outcome.timed_out)}, not run {outcome.untested}; "
        + (f"{seconds / 60:.1f} min\n" if seconds is not None else "(a stopped run)\n")
    )
    diffs = [f"\n--- survived ---\n{diff}" for diff in outcome.survived]
    diffs += [f"\n--- timed out ---\n{diff}" for diff in outcome.timed_out]
    return head + "".join(diffs) + "\n"


def run_tests(arguments: list[str]) -> int:
    """Run pytest for mutmut: 0 when every test passes, 1 for any failure (collection errors too).

    ``--then`` splits the arguments into stages, each one pytest run, and a failed stage ends the
    run: the first stage holds the few tests most likely to kill the mutant, so that a killed one
    does not pay for collecting the whole suite.
    """
    stage: list[str] = []
    for argument in [*arguments, THEN]:
        if argument != THEN:
            stage.append(argument)
            continue
        if subprocess.run([sys.executable, "-m", "pytest", *stage]).returncode != 0:
            return 1
        stage = []
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pytest"]:
        return run_tests(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", metavar="part", help=f"any of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--every", type=int, default=8, help="worker: mutate every Nth code line (default 8)")
    parser.add_argument("--offset", type=int, default=0, help="worker: which line of each N to start from")
    parser.add_argument("--only", help="mutate these files of the part (comma-separated), e.g. to run shards at once")
    parser.add_argument("--report", action="store_true", help="only summarize the last run (also a stopped one)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on with a stopped run: keep its record and run only the mutants not yet run (same --only)",
    )
    parser.add_argument(
        "--survivors-read",
        action="store_true",
        help="with --resume: do not run again the survivors of the stopped run (each one already read)",
    )
    parser.add_argument(
        "--baseline",
        type=float,
        metavar="SECONDS",
        help="skip mutmut's unmutated run and take this as the suite's time (shards, once the suite has passed)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    if args.survivors_read and not args.resume:
        parser.error("--survivors-read goes with --resume")
    if args.every < 1 or not 0 <= args.offset < args.every:
        parser.error("--every must be at least 1 and --offset in 0..every-1")
    try:
        if args.report:
            outcomes = [report_part(name, args.only, args.every) for name in args.parts or PARTS]
        else:
            outcomes = [
                run_part(name, args.every, args.offset, args.only, args.baseline, args.resume, args.survivors_read)
                for name in args.parts or PARTS
            ]
    except MutationRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if all(not outcome.survived for outcome in outcomes) else 2


if __name__ == "__main__":
    sys.exit(main())
