"""The scripted client (C2, C3): a file or standard input in, exactly the replies out."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading

import pytest

from tests.client.clientproc import client_env, default_sigint, one_error_line, run_client
from tests.client.fakeserver import drain_until_closed, fake_server, free_port, upper_echo
from tests.serverproc import ROOT

pytestmark = pytest.mark.timeout(120)

WORDS = ["hola", "straße", "ñandú", "Ærøskøbing", "café", "İstanbul", "ΐ", "groß", "señor", "añejo", "ﬁn", "école"]


def utf8_lines(count: int = 3000, seed: int = 3) -> list[str]:
    """Accents, ß, ñ, ligatures, spaces and empty lines; never a disconnect word."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        if i % 9 == 0:
            lines.append("")
        else:
            words = rng.choices(WORDS, k=rng.randint(1, 6))
            lines.append(f"{' ' * (i % 3)}{i} {' '.join(words)}{'  ' * (i % 4 == 1)}")
    return lines


def as_file(lines: list[str]) -> bytes:
    """LF endings, with every seventh line in CRLF (the client strips both)."""
    return b"".join(line.encode() + (b"\r\n" if i % 7 == 3 else b"\n") for i, line in enumerate(lines))


def expected(lines: list[str]) -> bytes:
    return "".join(line.upper() + "\n" for line in lines).encode()


@pytest.fixture
def quiet_server(start_server):
    return start_server("-q")


@pytest.mark.parametrize("pipeline", [False, True], ids=["one-by-one", "pipeline"])
@pytest.mark.parametrize("source", ["file", "file-dash", "pipe"])
def test_three_thousand_utf8_lines_give_exactly_their_upper_case(quiet_server, tmp_path, source, pipeline):
    lines = utf8_lines()
    path = tmp_path / "messages.txt"
    path.write_bytes(as_file(lines))
    args = ["--port", str(quiet_server.port), *(["--pipeline"] if pipeline else [])]
    if source == "file":
        result = run_client(*args, "--file", str(path))
    elif source == "file-dash":
        with path.open("rb") as stdin:
            result = run_client(*args, "--file", "-", stdin=stdin)
    else:
        result = run_client(*args, stdin=None, input=path.read_bytes())
    assert result.stderr == ""
    assert result.returncode == 0
    assert result.stdout == expected(lines)


@pytest.mark.parametrize("pipeline", [[], ["--pipeline"]], ids=["one-by-one", "pipeline"])
def test_sends_each_line_once_and_adds_the_disconnect_word(pipeline):
    with fake_server(upper_echo) as fake:
        result = run_client("--port", str(fake.port), *pipeline, stdin=None, input="uno\r\ndós\n\n tres".encode())
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "UNO\nDÓS\n\n TRES\n".encode()  # the added DESCONEXION's reply is not printed
    assert bytes(fake.received) == "uno\ndós\n\n tres\nDESCONEXION\n".encode()


@pytest.mark.parametrize("pipeline", [[], ["--pipeline"]], ids=["one-by-one", "pipeline"])
def test_disconnect_word_in_the_input_ends_the_run(pipeline, tmp_path):
    path = tmp_path / "m.txt"
    path.write_bytes(b"a\n  desconexion \nb\nc")
    with fake_server(upper_echo) as fake:
        result = run_client("--port", str(fake.port), *pipeline, "--file", str(path))
    assert result.returncode == 0
    assert result.stdout == b"A\n  DESCONEXION \n"
    assert result.stderr == f"warning: 2 lines after DESCONEXION ({path} line 2) not sent\n"
    assert bytes(fake.received) == b"a\n  desconexion \n"


def test_accented_disconnect_word_with_the_real_server(quiet_server):
    result = run_client("--port", str(quiet_server.port), stdin=None, input="hola\nDesconexión\n".encode())
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "HOLA\nDESCONEXIÓN\n".encode()


def test_empty_input_prints_nothing_and_still_says_goodbye():
    with fake_server(upper_echo) as fake:
        result = run_client("--port", str(fake.port), stdin=None, input=b"")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", "")
    assert bytes(fake.received) == b"DESCONEXION\n"


@pytest.mark.parametrize("pipeline", [[], ["--pipeline"]], ids=["one-by-one", "pipeline"])
def test_dead_server_is_one_line_and_status_3(pipeline):
    port = free_port()
    result = run_client("--port", str(port), *pipeline, stdin=None, input=b"hola\n")
    assert result.returncode == 3
    assert result.stdout == b""
    assert one_error_line(result.stderr) == f"error: cannot connect to 127.0.0.1:{port}: connection refused"


def answer_one_then_hang_up(conn: socket.socket, fake) -> None:
    """Answer the first message, then close the connection while the client still expects replies."""
    line = fake.read_line(conn)
    conn.sendall(line[:-1].upper() + b"\n")
    drain_until_closed(conn, fake)


@pytest.mark.parametrize("pipeline", [[], ["--pipeline"]], ids=["one-by-one", "pipeline"])
def test_connection_lost_mid_run_is_a_clear_error(pipeline):
    with fake_server(answer_one_then_hang_up) as fake:
        result = run_client("--port", str(fake.port), *pipeline, stdin=None, input=b"uno\ndos\ntres\n")
    assert result.returncode == 1
    assert result.stdout == b"UNO\n"
    assert one_error_line(result.stderr) == "error: the server closed the connection (1 message answered)"


@pytest.mark.parametrize("pipeline", [[], ["--pipeline"]], ids=["one-by-one", "pipeline"])
def test_server_error_line_names_the_input_line(start_server, tmp_path, pipeline):
    server = start_server("-q", "--max-line", "10")
    path = tmp_path / "m.txt"
    path.write_text("corta\n" + "x" * 50 + "\nnunca\n", encoding="utf-8")
    result = run_client("--port", str(server.port), *pipeline, "--file", str(path))
    assert result.returncode == 1
    assert result.stdout == b"CORTA\n"
    assert one_error_line(result.stderr) == (f"error: {path} line 2: server said: error: line too long (max 10 bytes)")


def test_ctrl_c_stops_a_run_with_status_130():
    def mute(conn, fake):
        while fake.recv(conn):  # never answers; records until the client closes
            pass

    with fake_server(mute) as fake:
        client = subprocess.Popen(
            [sys.executable, "-m", "client", "--port", str(fake.port), "--timeout", "60"],
            cwd=ROOT,
            env=client_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=default_sigint,
        )
        try:
            client.stdin.write(b"hola\n")
            client.stdin.flush()
            fake.wait_received(b"hola\n")
            client.send_signal(signal.SIGINT)
            stdout, stderr = client.communicate(timeout=60)
        finally:
            client.kill()
            client.wait(timeout=30)
    assert client.returncode == 130
    assert stdout == b""
    assert one_error_line(stderr.decode()) == "error: interrupted"


def test_missing_file_is_status_2_before_connecting():
    result = run_client("--port", str(free_port()), "--file", "no-such-file.txt")
    assert result.returncode == 2
    assert one_error_line(result.stderr) == "error: cannot read no-such-file.txt: no such file or directory"


@pytest.mark.parametrize("pipeline", [[], ["--pipeline"]], ids=["one-by-one", "pipeline"])
@pytest.mark.parametrize(
    ("data", "problem"),
    [(b"ok\n\xff\xfe\nno\n", "is not valid UTF-8"), (b"ok\nfin en CR\r\r\nno\n", "ends with a CR")],
    ids=["invalid-utf8", "final-cr"],
)
def test_unsendable_input_line_stops_the_run_with_status_2(pipeline, data, problem):
    with fake_server(upper_echo) as fake:
        result = run_client("--port", str(fake.port), *pipeline, stdin=None, input=data)
    assert result.returncode == 2
    assert result.stdout == b"OK\n"
    assert one_error_line(result.stderr) == (
        f"error: standard input line 2 {problem}"
        + (", which line framing cannot carry" if "CR" in problem else "")
        + " (the lines before it were answered)"
    )
    assert bytes(fake.received) == b"ok\nDESCONEXION\n"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--window", "5"], {}, "error: --window only applies with --pipeline (see --help)"),
        (["--port", "cinco"], {}, "error: argument --port: not a number: 'cinco' (see --help)"),
        (
            [],
            {"UPPERECHO_PORT": "70000"},
            "error: UPPERECHO_PORT: must be between 1 and 65535, got '70000' (see --help)",
        ),
        ([], {"UPPERECHO_LANG": "fr"}, "error: UPPERECHO_LANG: must be one of es, en, got 'fr' (see --help)"),
    ],
)
def test_usage_errors_are_status_2(args, env, message):
    result = run_client(*args, env=client_env(**env), stdin=None, input=b"hola\n")
    assert result.returncode == 2
    assert one_error_line(result.stderr) == message


def test_environment_gives_the_address_and_a_flag_wins(quiet_server):
    env = client_env(UPPERECHO_HOST=quiet_server.host, UPPERECHO_PORT=str(quiet_server.port))
    assert run_client(env=env, stdin=None, input=b"por entorno\n").stdout == b"POR ENTORNO\n"
    env["UPPERECHO_PORT"] = str(free_port())
    by_flag = run_client("--port", str(quiet_server.port), env=env, stdin=None, input=b"por flag\n")
    assert (by_flag.returncode, by_flag.stdout) == (0, b"POR FLAG\n")


def test_help_documents_the_exit_statuses():
    result = run_client("--help")
    assert result.returncode == 0
    for line in ["0    every message answered", "1    the server sent an error line", "3    cannot connect", "130"]:
        assert line in result.stdout.decode()


def test_closed_standard_output_stops_quietly(quiet_server, tmp_path):
    # 700 kB of replies: far more than a pipe holds once ``head`` has gone.
    path = tmp_path / "m.txt"
    path.write_text("línea\n" * 100000, encoding="utf-8")
    reader = subprocess.Popen(["head", "-n", "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        client = subprocess.Popen(
            [sys.executable, "-m", "client", "--port", str(quiet_server.port), "--file", str(path), "--pipeline"],
            cwd=ROOT,
            env=client_env(),
            stdout=reader.stdin,
            stderr=subprocess.PIPE,
        )
        reader.stdin.close()
        _, stderr = client.communicate(timeout=90)
        assert reader.stdout.read() == "LÍNEA\nLÍNEA\n".encode()
    finally:
        reader.kill()
        reader.wait(timeout=30)
        reader.stdout.close()
    assert client.returncode == 1
    assert stderr == b""


def read_pty(master: int, into: bytearray) -> None:
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: every copy of the other end is closed
            return
        if not data:
            return
        into += data


@pytest.mark.parametrize(("count", "shown"), [(3000, True), (10, False)])
def test_progress_bar_on_a_terminal_stderr_only_for_long_input(quiet_server, tmp_path, count, shown):
    lines = utf8_lines(count)
    path = tmp_path / "m.txt"
    path.write_bytes(as_file(lines))
    master, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a fresh pty is 0 x 0
    drawn = bytearray()
    reader = threading.Thread(target=read_pty, args=(master, drawn), daemon=True)
    reader.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "client", "--port", str(quiet_server.port), "--file", str(path)],
            cwd=ROOT,
            env=client_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=90,
        )
    finally:
        os.close(terminal)
        reader.join(timeout=30)
        os.close(master)
    assert result.returncode == 0
    assert result.stdout == expected(lines)
    text = drawn.decode(errors="replace")
    assert "Traceback" not in text
    if shown:
        assert "/3.00k" in text and "msg" in text, text
    else:
        assert text == ""


@pytest.mark.parametrize("pipeline", [[], ["--pipeline"]], ids=["one-by-one", "pipeline"])
def test_a_line_is_sent_and_answered_while_the_input_is_still_open(pipeline):
    """C6: a slow pipe (``(echo a; sleep 3; echo b) | ...``) holds back nothing that was already written."""
    with fake_server(upper_echo) as fake:
        client = subprocess.Popen(
            [sys.executable, "-m", "client", "--port", str(fake.port), *pipeline],
            cwd=ROOT,
            env=client_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            client.stdin.write(b"a\n")
            client.stdin.flush()
            fake.wait_received(b"a\n")  # sent, though more input may come
            assert client.stdout.readline() == b"A\n"  # and its reply is out before the input ends
            stdout, stderr = client.communicate(b"b\n", timeout=60)
        finally:
            client.kill()
            client.wait(timeout=30)
    assert (client.returncode, stdout, stderr) == (0, b"B\n", b"")
    assert bytes(fake.received) == b"a\nb\nDESCONEXION\n"


def answer_one_then_time_out(conn: socket.socket, fake) -> None:
    """Answer the first line; at the second, end the session the way an idle timeout does."""
    line = fake.read_line(conn)
    conn.sendall(line[:-1].upper() + b"\n")
    fake.read_line(conn)
    conn.sendall(b"error: idle timeout\n")
    drain_until_closed(conn, fake)


@pytest.mark.parametrize("pipeline", [[], ["--pipeline"]], ids=["one-by-one", "pipeline"])
def test_a_line_about_the_session_blames_no_input_line(pipeline):
    with fake_server(answer_one_then_time_out) as fake:
        result = run_client("--port", str(fake.port), *pipeline, stdin=None, input=b"uno\ndos\n")
    assert (result.returncode, result.stdout) == (1, b"UNO\n")
    assert one_error_line(result.stderr) == "error: server said: error: idle timeout (1 message answered)"


def test_a_busy_server_blames_no_input_line(start_server):
    server = start_server("-q", "--max-connections", "1")
    with socket.create_connection(server.address, timeout=30) as holder:
        holder.sendall(b"ocupo\n")
        assert holder.recv(64) == b"OCUPO\n"  # admitted: the one session the server allows
        result = run_client("--port", str(server.port), stdin=None, input=b"hola\n")
    assert (result.returncode, result.stdout) == (1, b"")
    assert one_error_line(result.stderr) == "error: server said: error: server busy (0 messages answered)"
