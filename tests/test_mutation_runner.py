"""``make mutation``'s runner: reordering and staging the tests must not change which tests run.

A mutant counts as killed when any test fails, so the verdict depends only on
the set of tests run.  The runner puts each file's most likely killers first,
in a stage of their own, and the slow ones last; these tests check that every
file's mutants still meet exactly the part's tests, each once, and that a
failing stage is a kill.
"""

from __future__ import annotations

import shlex
import sqlite3

import pytest

from tests import mutation


def _stages(command: str) -> list[list[str]]:
    """The test files of each pytest run a test command makes (options left out)."""
    words = shlex.split(command)
    assert words[: len(mutation.RUNNER)] == list(mutation.RUNNER)
    stages: list[list[str]] = [[]]
    for word in words[len(mutation.RUNNER) :]:
        if word == mutation.THEN:
            stages.append([])
        elif word.endswith(".py") and not word.startswith("-"):
            stages[-1].append(word)
    return stages


def _part_tests(part: mutation.Part, file: str) -> set[str]:
    """What pytest would run for the part, from its directories, less what it ignores for ``file``."""
    ignored = [option for option in part.pytest_options if option.startswith("--ignore=")]
    if part.narrowed is not None and file != part.narrowed[0]:
        ignored += part.narrowed[1]
    names = set()
    for path in part.tests:
        root = mutation.ROOT / path
        found = root.rglob("test_*.py") if root.is_dir() else [root]
        names |= {str(test.relative_to(mutation.ROOT)) for test in found}
    return names - {option.removeprefix("--ignore=") for option in ignored}


@pytest.mark.parametrize("name", mutation.PARTS)
def test_each_files_mutants_meet_exactly_the_parts_tests_once(name):
    part = mutation.PARTS[name]
    files = [str(f.relative_to(mutation.ROOT)) for p in part.paths.split(",") for f in mutation._sources(p)]
    for file, command in mutation.test_commands(part, files).items():
        stages = _stages(command)
        run = [test for stage in stages for test in stage]
        assert len(run) == len(set(run)), f"{file}: a test file runs twice"
        assert set(run) == _part_tests(part, file), file
        assert stages[0][: len(part.first.get(file, ()))] == list(part.first.get(file, ()))
        assert run[len(run) - len(part.last) :] == list(part.last)
        assert shlex.split(command).count("-x") == len(stages), f"{file}: every stage stops at its first failure"


def test_the_spin_checks_run_only_for_the_file_they_are_generated_from():
    part = mutation.PARTS["statemachine"]
    commands = mutation.test_commands(part, ["statemachine/machine.py", "statemachine/session.py"])
    assert "tests/formal/test_model_check.py" in commands["statemachine/machine.py"]
    assert "tests/formal/test_model_check.py" not in _stages(commands["statemachine/session.py"])[-1]


def test_a_failing_stage_is_a_kill_and_ends_the_run(tmp_path):
    passing, failing = tmp_path / "test_pass.py", tmp_path / "test_fail.py"
    passing.write_text("def test_ok():\n    pass\n", encoding="utf-8")
    failing.write_text("def test_broken():\n    assert False\n", encoding="utf-8")
    broken_import = tmp_path / "test_import.py"
    broken_import.write_text("import no_such_module_here\n", encoding="utf-8")
    quiet = ["-q", "-p", "no:cacheprovider"]
    assert mutation.run_tests([*quiet, str(passing), mutation.THEN, *quiet, str(passing)]) == 0
    assert mutation.run_tests([*quiet, str(failing), mutation.THEN, *quiet, str(passing)]) == 1
    assert mutation.run_tests([*quiet, str(passing), mutation.THEN, *quiet, str(failing)]) == 1
    assert mutation.run_tests([*quiet, str(broken_import)]) == 1  # pytest says 2: mutmut must read a kill


@pytest.mark.parametrize("resume", [False, True])
def test_a_resumed_run_keeps_the_record_of_the_mutants_already_run(tmp_path, resume):
    copy = tmp_path / "part"
    mutation.copy_tree(copy)
    (copy / mutation.CACHE).write_bytes(b"mutants already run")
    (copy / "statemachine" / "text.py").write_text("a mutant left on disk by a stopped run")
    mutation.copy_tree(copy, keep_cache=resume)
    assert (copy / mutation.CACHE).exists() == resume
    assert (copy / "statemachine" / "text.py").read_bytes() == (mutation.ROOT / "statemachine" / "text.py").read_bytes()


def test_survivors_already_read_are_marked_as_run_against_todays_tests_and_nothing_else(tmp_path):
    with sqlite3.connect(tmp_path / mutation.CACHE) as cache:
        cache.execute(
            "CREATE TABLE Mutant (id INTEGER PRIMARY KEY, tested_against_hash TEXT NOT NULL, status TEXT NOT NULL)"
        )
        cache.executemany(
            "INSERT INTO Mutant (tested_against_hash, status) VALUES ('old', ?)",
            [("bad_survived",), ("ok_killed",), ("untested",), ("bad_timeout",), ("bad_survived",)],
        )
    assert mutation.keep_survivors(tmp_path, "today") == 2
    with sqlite3.connect(tmp_path / mutation.CACHE) as cache:
        rows = cache.execute("SELECT status, tested_against_hash FROM Mutant ORDER BY id").fetchall()
    assert rows == [
        ("bad_survived", "today"),
        ("ok_killed", "old"),
        ("untested", "old"),
        ("bad_timeout", "old"),  # a timeout is judged again: it may have been the machine
        ("bad_survived", "today"),
    ]


def test_the_mutants_mutmut_skips_on_repeated_lines_are_found_and_their_verdicts_recorded(tmp_path):
    """mutmut's record of a line is found by its text, so a line repeated later in a file is never run."""
    with sqlite3.connect(tmp_path / mutation.CACHE) as cache:
        cache.executescript(
            "CREATE TABLE SourceFile (id INTEGER PRIMARY KEY, filename TEXT);"
            "CREATE TABLE Line (id INTEGER PRIMARY KEY, sourcefile INTEGER, line TEXT, line_number INTEGER);"
            "CREATE TABLE Mutant (id INTEGER PRIMARY KEY, line INTEGER, tested_against_hash TEXT, status TEXT);"
            "INSERT INTO SourceFile VALUES (1, 'a.py'), (2, 'b.py');"
            # a.py: 'return b""' on lines 3 and 9, 'x = 1' once; b.py repeats a.py's line once only
            "INSERT INTO Line VALUES (1, 1, 'return b\"\"', 3), (2, 1, 'x = 1', 5), (3, 1, 'return b\"\"', 9),"
            " (4, 2, 'return b\"\"', 1);"
            "INSERT INTO Mutant VALUES (1, 1, 'h', 'ok_killed'), (2, 2, '', 'untested'), (3, 3, '', 'untested'),"
            " (4, 3, '', 'untested'), (5, 4, '', 'untested'), (6, 3, 'h', 'ok_killed');"
        )
    # not x = 1 (its run was only stopped), nor b.py's line (the first of its text in that file)
    assert mutation.repeated_line_mutants(tmp_path, ["a.py", "b.py"]) == [(3, "a.py"), (4, "a.py")]
    assert mutation.repeated_line_mutants(tmp_path, ["b.py"]) == []  # only the files the run is about
    mutation.record_verdict(tmp_path, 3, True, "today")
    mutation.record_verdict(tmp_path, 4, False, "today")
    assert mutation.repeated_line_mutants(tmp_path, ["a.py", "b.py"]) == []
    with sqlite3.connect(tmp_path / mutation.CACHE) as cache:
        rows = cache.execute("SELECT id, status, tested_against_hash FROM Mutant WHERE id IN (3, 4)").fetchall()
    assert rows == [(3, "ok_killed", "today"), (4, "bad_survived", "today")]


def test_a_summary_counts_only_the_files_it_names(tmp_path):
    """A copy whose record also holds other files' mutants (it once ran them) reports only the files asked for."""
    (tmp_path / "statemachine").mkdir()
    with sqlite3.connect(tmp_path / mutation.CACHE) as cache:
        cache.executescript(
            "CREATE TABLE SourceFile (id INTEGER PRIMARY KEY, filename TEXT);"
            "CREATE TABLE Line (id INTEGER PRIMARY KEY, sourcefile INTEGER, line TEXT, line_number INTEGER);"
            "CREATE TABLE Mutant (id INTEGER PRIMARY KEY, line INTEGER, tested_against_hash TEXT, status TEXT);"
            "INSERT INTO SourceFile VALUES (1, 'statemachine/text.py'), (2, 'statemachine/framing.py');"
            "INSERT INTO Line VALUES (1, 1, 'a', 0), (2, 2, 'b', 0);"
            "INSERT INTO Mutant VALUES (1, 1, 'h', 'ok_killed'), (2, 1, 'h', 'ok_killed'), (3, 2, '', 'untested');"
        )
    outcome = mutation.read_results(tmp_path, "statemachine/text.py")
    assert (outcome.mutants, outcome.killed, outcome.untested) == (2, 2, 0)


def test_survivors_read_goes_only_with_resume(capsys):
    with pytest.raises(SystemExit):
        mutation.main(["statemachine", "--survivors-read"])
    assert "--survivors-read goes with --resume" in capsys.readouterr().err
