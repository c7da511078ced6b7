"""The set-up a newcomer meets (§8): a light ``make run`` that says how to serve the seed's client."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tomllib

import pytest

from tests.serverproc import ROOT

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
]

RAW_HINT = "serve it with 'make run FRAMING=raw'"


def _make(*args: str, **variables: str) -> list[str]:
    """What make would run (``-n``), every target taken as out of date (``-B``), with no UPPERECHO_* from outside."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("UPPERECHO_")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", *args],
        cwd=ROOT,
        env={**env, **variables},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _installs(commands: list[str]) -> list[str]:
    return [line for line in commands if "pip install" in line and "--upgrade pip" not in line]


def test_make_run_installs_only_the_server_and_make_test_everything():
    assert [line.split("pip install", 1)[1].split()[-1] for line in _installs(_make("run"))] == ["."]
    extras = re.findall(r"\.\[([\w,]+)\]", " ".join(_installs(_make("test"))))
    assert extras and set(extras[0].split(",")) >= {"client", "load", "test"}


def test_make_run_says_how_to_serve_the_seeds_client_and_passes_flags():
    commands = _make("run")
    hint = next(i for i, line in enumerate(commands) if RAW_HINT in line)
    assert commands[hint + 1].split()[-2:] == ["-m", "server"]  # the hint comes first, then the server
    raw = _make("run", "FRAMING=raw", "ARGS=--port 0 -q")
    assert raw[-1].split()[-6:] == ["server", "--framing", "raw", "--port", "0", "-q"]


def test_make_run_says_raw_when_the_environment_asks_for_raw_framing():
    """``UPPERECHO_FRAMING=raw make run`` serves raw framing: its first line must not tell to ask for it."""
    commands = _make("run", UPPERECHO_FRAMING="raw")
    hint = next(line for line in commands if line.startswith("echo "))
    assert RAW_HINT not in hint and "raw framing" in hint
    assert commands[-1].split()[-3:] == ["server", "--framing", "raw"]


def test_project_metadata_uses_the_spdx_license_with_a_setuptools_that_reads_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"  # a table is deprecated and warned about at every install
    (requirement,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    version = tuple(int(part) for part in requirement.split(">=")[1].split("."))
    assert version >= (77, 0, 3)  # PEP 639's license expressions
    assert project["project"]["dependencies"] == ["transitions>=0.9.3"]  # all the server needs


def test_make_run_serves_at_once_and_prints_the_hint_first():
    up_to_date = subprocess.run(["make", "-q", ".venv/.installed-run"], cwd=ROOT, capture_output=True, timeout=60)
    if up_to_date.returncode != 0:
        pytest.skip(".venv is not installed yet: make test installs it")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", "ARGS=--port 0"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make and the server: stopped together below
    )
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "esperando conexiones" in line:
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    assert RAW_HINT in lines[0]
    assert re.fullmatch(r"Servidor TCP esperando conexiones en 127\.0\.0\.1:\d+", lines[-1]), lines
