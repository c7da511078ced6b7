"""The seed's scenario gives the seed's console, line for line (S4), whoever the client is.

Two sessions, as the classroom ran them: three messages and DESCONEXION, then
three more and DESCONEXION.  The clients are the classroom's own (text with no
newline, against ``--framing raw``), ours in line framing, and ours in raw
framing.  The expected lines are the seed's transcript (with its typo "en
esperando" corrected), ports aside; the classroom server of ``tests.classroom``
prints them too.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.client.clientproc import client_env
from tests.serverproc import ROOT, ServerProcess, running_server

pytestmark = pytest.mark.timeout(120)

SESSIONS = [
    ["HOLA MICHAEL", "otro mensaje", "todo ok", "DESCONEXION"],
    ["de nuevo por aqui", "hola ", "prueba", "DESCONEXION"],
]

SEED_CONSOLE = [
    "Servidor TCP esperando conexiones en 127.0.0.1:PORT",
    "Conexión establecida con el cliente ('127.0.0.1', PORT)",
    "Mensaje recibido: HOLA MICHAEL",
    "Respuesta enviada al cliente: HOLA MICHAEL",
    "Mensaje recibido: otro mensaje",
    "Respuesta enviada al cliente: OTRO MENSAJE",
    "Mensaje recibido: todo ok",
    "Respuesta enviada al cliente: TODO OK",
    "Mensaje recibido: DESCONEXION",
    "El cliente ('127.0.0.1', PORT) solicita desconexión.",
    "Conexión establecida con el cliente ('127.0.0.1', PORT)",
    "Mensaje recibido: de nuevo por aqui",
    "Respuesta enviada al cliente: DE NUEVO POR AQUI",
    "Mensaje recibido: hola ",
    "Respuesta enviada al cliente: HOLA ",
    "Mensaje recibido: prueba",
    "Respuesta enviada al cliente: PRUEBA",
    "Mensaje recibido: DESCONEXION",
    "El cliente ('127.0.0.1', PORT) solicita desconexión.",
]

SHUTDOWN_LINES = ["Cerrando el servidor: no se aceptan más conexiones", "Servidor detenido"]

CLIENTS = {
    "classroom client": ["-m", "tests.classroom", "client"],
    "our client, line framing": ["-m", "client"],
    "our client, raw framing": ["-m", "client", "--framing", "raw"],
}

_PORT = re.compile(r"(?<=127\.0\.0\.1:)\d+$|(?<='127\.0\.0\.1', )\d+(?=\))")


def masked(lines: list[str]) -> list[str]:
    return [_PORT.sub("PORT", line) for line in lines]


def run_scenario(server: ServerProcess, client: list[str]) -> list[subprocess.CompletedProcess]:
    """Each session by a fresh client process, the next one started once the server has seen the last end."""
    results = []
    for number, messages in enumerate(SESSIONS, start=1):
        result = subprocess.run(
            [sys.executable, *client, "--port", str(server.port)],
            cwd=ROOT,
            env=client_env(),
            input="".join(f"{text}\n" for text in messages).encode(),
            capture_output=True,
            timeout=60,
        )
        results.append(result)
        assert result.returncode == 0, result.stderr
        assert result.stderr == b""
        server.wait_for_line(lambda line, n=number: sum("solicita desconexión" in seen for seen in server.stdout) >= n)
    return results


@pytest.mark.parametrize("client", list(CLIENTS))
def test_seed_scenario_prints_exactly_the_seed_console(start_server, client):
    framing = "line" if client == "our client, line framing" else "raw"
    server = start_server("--framing", framing)
    run_scenario(server, CLIENTS[client])
    assert server.stop() == 0
    assert masked(server.stdout) == SEED_CONSOLE + SHUTDOWN_LINES
    assert server.stderr == []


def test_the_classroom_server_prints_the_same_console():
    with running_server("server", module="tests.classroom") as classroom:
        run_scenario(classroom, CLIENTS["classroom client"])
        classroom.kill()
        classroom.wait()
    assert masked(classroom.stdout) == SEED_CONSOLE
