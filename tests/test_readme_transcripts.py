"""Every transcript in the README is what a real run prints (S4), and this keeps it so.

A transcript is a fenced block right after a ``<!-- transcript: NAME -->``
comment.  Its first line is the command (``$ ...``), the rest what the terminal
shows; the runs here use a free port and the ports are compared masked.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys

import pexpect
import pytest

from tests.client.clientproc import client_env, default_sigint
from tests.serverproc import ROOT, ServerProcess

pytestmark = pytest.mark.timeout(120)

PROMPT = "Ingresa mensaje (o 'DESCONEXION' para salir): "
_PORTS = re.compile(r"(?<=127\.0\.0\.1:)\d+|(?<='127\.0\.0\.1', )\d+(?=\))")


def transcript(name: str) -> tuple[str, list[str]]:
    """The command of the README's transcript ``name`` and the lines it shows."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- transcript: {re.escape(name)} -->\n```\n(.*?)\n```", readme, re.DOTALL)
    assert match, f"README has no transcript {name!r}"
    command, *shown = match[1].split("\n")
    assert command.startswith("$ "), command
    return command[2:], shown


def masked(lines: list[str]) -> list[str]:
    return [_PORTS.sub("PORT", line) for line in lines]


def run_shell(command: str, port: int) -> list[str]:
    """A README command line, run by the shell with this checkout's Python against ``port``."""
    command = command.replace(".venv/bin/python", sys.executable).replace("127.0.0.1 5000", f"127.0.0.1 {port}")
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=client_env(UPPERECHO_PORT=str(port)),
        capture_output=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, b""), done.stderr
    return done.stdout.decode().splitlines()


def test_client_and_server_console_transcripts():
    """``make run`` and the interactive client, as the README shows them side by side."""
    command, server_lines = transcript("server console")
    assert command == "make run"
    client_command, client_lines = transcript("client console")
    assert client_command == ".venv/bin/python -m client"
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    installed = subprocess.run(["make", "-q", ".venv/.installed-run"], cwd=ROOT, capture_output=True, timeout=60)
    if installed.returncode != 0:
        pytest.skip(".venv is not installed yet: make test installs it")
    server = subprocess.Popen(
        ["make", "--no-print-directory", "run", "ARGS=--port 0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make and its server, stopped together
    )
    shown: list[str] = []
    try:
        for line in server.stdout:
            shown.append(line.rstrip("\n"))
            if "esperando conexiones" in line:
                break
        port = int(shown[-1].rsplit(":", 1)[1])
        assert run_console(port, client_lines) == client_lines
        for line in server.stdout:
            shown.append(line.rstrip("\n"))
            if "solicita desconexión" in line:
                break
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.communicate(timeout=60)
    assert masked(shown) == masked(server_lines)


def run_console(port: int, expected: list[str]) -> list[str]:
    """Type what the transcript's prompts show typed; what the terminal showed, line by line."""
    typed = [line[len(PROMPT) :] for line in expected if line.startswith(PROMPT)]
    child = pexpect.spawn(
        sys.executable,
        ["-m", "client"],
        cwd=str(ROOT),
        env=client_env(UPPERECHO_PORT=str(port)),
        encoding="utf-8",
        timeout=30,
        dimensions=(24, 200),
        preexec_fn=default_sigint,
    )
    child.logfile_read = io.StringIO()
    try:
        for text in typed:
            child.expect_exact(PROMPT)
            child.sendline(text)
        child.expect(pexpect.EOF)
        output = child.logfile_read.getvalue()
    finally:
        child.close(force=True)
    return output.replace("\r\n", "\n").rstrip("\n").split("\n")


@pytest.mark.parametrize(("name", "framing"), [("scripted", "line"), ("raw", "raw")])
def test_scripted_client_transcripts(start_server, name, framing):
    command, shown = transcript(name)
    server: ServerProcess = start_server("-q", "--framing", framing)
    assert run_shell(command, server.port) == shown


def test_netcat_transcript(server):
    if shutil.which("nc") is None:
        pytest.skip("nc is not installed (make test installs netcat-openbsd)")
    command, shown = transcript("netcat")
    assert run_shell(command, server.port) == shown
