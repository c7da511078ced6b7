"""``--processes N`` (O1): a supervisor binds once and runs N servers on the shared socket.

Which process gets a connection is the kernel's choice (a hash over the
``SO_REUSEPORT`` group), so a test that needs one process connects until that
process holds the connection, as ``psutil`` reads it from ``/proc``.  Every server is started in a process
group of its own and the whole group is killed at the end.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from server.config import parse
from server.options import UsageError
from server.sharing import BUSY, SharedLimit, read_addresses, read_counts
from server.supervisor import DRAIN_MARGIN
from tests.hardening.harness import wait_until
from tests.proxywire import v1, v2
from tests.serverproc import ROOT, ServerProcess
from tests.wire import connect, read_exactly, read_lines, read_until_closed

pytestmark = pytest.mark.timeout(120)

_STARTED = re.compile(r"Proceso (\d+) de (\d+) atendiendo conexiones \(pid (\d+)\)")
_DRAINING = "Cerrando el servidor: no se aceptan más conexiones"
# A test-only way to make every server process crash as it starts: the
# supervisor forks after the patch, so its processes inherit it.
_CRASHING = (
    "import os, sys\n"
    "from server import app\n"
    "app.Server.serve = lambda self: os._exit(3)\n"
    "from server.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _pids(server: ServerProcess, count: int, start: int = 0) -> dict[int, int]:
    """{process index: pid} once each of ``count`` processes has said it serves (lines from ``start``)."""
    found: dict[int, int] = {}

    def seen(line: str) -> bool:
        match = _STARTED.search(line)
        if match:
            found[int(match.group(1))] = int(match.group(3))
        return len(found) == count

    server.wait_for_line(seen, start=start)
    return found


def _wait_for_count(server: ServerProcess, text: str, count: int) -> None:
    """Wait until ``count`` stdout lines are exactly ``text``."""
    seen = 0

    def enough(line: str) -> bool:
        nonlocal seen
        seen += line == text
        return seen == count

    server.wait_for_line(enough)


def _owner(pids: list[int], sock: socket.socket) -> int | None:
    """Which of ``pids`` holds the server end of ``sock``."""
    port = sock.getsockname()[1]
    for pid in pids:
        if any(conn.raddr and conn.raddr.port == port for conn in psutil.Process(pid).net_connections("tcp")):
            return pid
    return None


def _session_on(
    server: ServerProcess, pid: int, pids: list[int], timeout: float = 30.0, header: bytes = b""
) -> socket.socket:
    """A connection served by process ``pid``: connect until the kernel's spread gives one to it."""
    deadline = time.monotonic() + timeout
    while True:
        sock = _session(server.address, header)
        if _owner(pids, sock) == pid:
            return sock
        sock.sendall(b"DESCONEXION\n")  # another process's: let it go, and its place with it
        read_until_closed(sock)
        sock.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no connection reached process {pid} within {timeout} s")


def _session(address: tuple[str, int], header: bytes = b"") -> socket.socket:
    """A connection that has had one reply, so its process has accepted it (``header``: a PROXY header first)."""
    sock = connect(address)
    sock.sendall(header + b"hola\n")
    assert read_lines(sock, 1) == [b"HOLA\n"]
    return sock


def _round_trip(sock: socket.socket, text: bytes) -> None:
    with sock:
        sock.sendall(text + b"\nDESCONEXION\n")
        assert read_until_closed(sock) == text.upper() + b"\nDESCONEXION\n"


def test_processes_flag_and_variable_are_range_checked():
    assert parse([]).processes == 1
    assert parse(["--processes", "3"]).processes == 3
    assert parse(["--processes", "auto"]).processes == (os.cpu_count() or 1)
    assert parse([], {"UPPERECHO_PROCESSES": "2"}).processes == 2
    assert parse(["--processes", "4"], {"UPPERECHO_PROCESSES": "2"}).processes == 4
    for bad in ("0", "-1", "1025", "two", ""):
        with pytest.raises(UsageError, match="processes"):
            parse(["--processes", bad])
    with pytest.raises(UsageError, match="UPPERECHO_PROCESSES"):
        parse([], {"UPPERECHO_PROCESSES": "many"})


def test_the_shared_limit_counts_every_slot_and_forgets_a_dead_ones():
    table = SharedLimit(total=3, processes=2)
    first = table.for_slot(0)
    assert first.take() is None and first.take() is None
    second = table.for_slot(1)
    assert second.take() is None
    assert second.take() == BUSY, "the total is 3 across both slots"
    table.forget(0)  # process 0 died, and its two sessions with it
    assert second.take() is None and second.take() is None
    second.release()
    assert table.open_now() == [0, 2]
    assert table.opened() == [2, 3]


def test_two_processes_each_serve_and_the_address_is_announced_once(supervised):
    server = supervised("--processes", "2")
    pids = _pids(server, 2)
    assert sorted(pids) == [1, 2] and len(set(pids.values())) == 2
    assert server.stdout[0] == f"Servidor TCP esperando conexiones en 127.0.0.1:{server.port}"
    assert sum("esperando conexiones" in line for line in server.stdout) == 1
    every = list(pids.values())
    _round_trip(_session_on(server, pids[1], every), b"uno")
    _round_trip(_session_on(server, pids[2], every), b"dos")
    status = server.stop()
    assert status == 0, (server.stderr, server.stdout)


def test_a_killed_process_is_restarted_and_serves_again(supervised):
    server = supervised("--processes", "2")
    pids = _pids(server, 2)
    mark = len(server.stdout)
    os.kill(pids[1], signal.SIGKILL)
    server.wait_for_text(
        f"El proceso 1 (pid {pids[1]}) murió por la señal 9 (SIGKILL); se reinicia en", stream="stderr"
    )
    line = server.wait_for_line(lambda text: text.startswith("Proceso 1 de 2"), start=mark)
    replacement = int(_STARTED.search(line).group(3))
    assert replacement not in pids.values()
    _round_trip(_session_on(server, replacement, [replacement, pids[2]]), b"de nuevo")
    status = server.stop()
    assert status == 0, (server.stderr, server.stdout)


@pytest.mark.parametrize("whom", ["supervisor", "group"])
def test_sigterm_drains_every_process_and_loses_no_reply(supervised, whom):
    """SIGTERM to the supervisor, or to the whole group as systemd sends it: the same drain."""
    server = supervised("--processes", "2", "--drain-timeout", "60")  # the clients close when they have read
    pids = _pids(server, 2)
    lines = [f"linea {i:05d} ñandú".encode() for i in range(3000)]
    payload = b"".join(line + b"\n" for line in lines)
    expected = b"".join(line.decode().upper().encode() + b"\n" for line in lines)
    socks = []
    try:
        for pid in pids.values():
            socks.append(_session_on(server, pid, list(pids.values())))
        for sock in socks:
            sock.sendall(payload)
        for sock in socks:  # each process is reading this client's lines
            assert read_exactly(sock, len(expected[:100])) == expected[:100]
        if whom == "group":
            os.killpg(server.pid, signal.SIGTERM)
            _wait_for_count(server, _DRAINING, 2)
            for pid in pids.values():  # the supervisor's SIGTERM may come after the group's: no harm
                os.kill(pid, signal.SIGTERM)
        else:
            server.signal(signal.SIGTERM)
        for sock in socks:
            assert read_until_closed(sock) == expected[100:] + b"error: server shutting down\n"
    finally:
        for sock in socks:
            sock.close()
    assert server.wait() == 0
    assert sum(line == "Servidor detenido" for line in server.stdout) == 2


def test_a_second_signal_stops_every_process_at_once(supervised):
    server = supervised("--processes", "2", "--drain-timeout", "120")
    pids = _pids(server, 2)
    lingering = _session_on(server, pids[1], list(pids.values()))  # never closes: its drain would take 120 s
    try:
        server.signal(signal.SIGTERM)
        assert read_exactly(lingering, 28) == b"error: server shutting down\n"
        server.signal(signal.SIGTERM)
        assert server.wait() == 128 + signal.SIGTERM
    finally:
        lingering.close()
    server.wait_for_text("Segunda señal: salida inmediata", stream="stderr")
    for pid in pids.values():
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} outlived the supervisor"


def test_repeated_crashes_stop_the_server_with_a_clear_line(supervised):
    server = supervised("--processes", "2", command=[sys.executable, "-c", _CRASHING])
    assert server.wait() == 1
    server.wait_for_text("El proceso 1 (pid", stream="stderr")
    assert any("terminó con estado 3; se reinicia en" in line for line in server.stderr)
    gave_up = [i for i, line in enumerate(server.stderr) if "se detiene el servidor" in line]
    assert len(gave_up) == 1
    assert re.fullmatch(r"warning: El proceso \d \(pid \d+\) terminó con estado 3", server.stderr[gave_up[0] - 1])
    gave_up = [server.stderr[i] for i in gave_up]
    assert len(gave_up) == 1 and re.fullmatch(
        r"error: El proceso \d falló 5 veces en 30 s: se detiene el servidor", gave_up[0]
    )
    assert not any("Traceback" in line for line in server.stderr)


def test_max_connections_is_one_total_across_the_processes(supervised):
    server = supervised("--processes", "2", "--max-connections", "4")
    pids = _pids(server, 2)
    held = []
    try:
        for pid in pids.values():
            held += [_session_on(server, pid, list(pids.values())) for _ in range(2)]
        counts = read_counts(server.pid)
        assert counts is not None and [open_ for open_, _ in counts] == [2, 2]
        with connect(server.address) as fifth:
            assert read_until_closed(fifth) == b"error: server busy\n"
        held[0].sendall(b"DESCONEXION\n")
        assert read_until_closed(held[0]) == b"DESCONEXION\n"
        _round_trip(_session(server.address), b"hay sitio")  # the place it left is free again
    finally:
        for sock in held:
            sock.close()
    status = server.stop()
    assert status == 0, (server.stderr, server.stdout)


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for whoever adopted it counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_processes_drain_and_exit_when_the_supervisor_is_killed(supervised):
    server = supervised("--processes", "2")
    pids = _pids(server, 2)
    sock = _session_on(server, pids[2], list(pids.values()))
    with sock:
        server.kill()  # SIGKILL: no chance to pass anything on
        assert read_until_closed(sock) == b"error: server shutting down\n"
    deadline = time.monotonic() + 30
    while not all(_gone(pid) for pid in pids.values()):
        assert time.monotonic() < deadline, "a server process outlived its supervisor"
        time.sleep(0.05)


_HANGING = (
    "import sys, time\n"
    "from server import app\n"
    "app.Server.serve = lambda self: time.sleep(3600)\n"
    "from server.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_a_drain_that_overruns_is_cut_short_with_a_clear_line(supervised):
    """Processes that never finish (test-only: serve() sleeps) are killed drain time + 10 s after the signal."""
    server = supervised("--processes", "2", "--drain-timeout", "0", command=[sys.executable, "-c", _HANGING])
    pids = _pids(server, 2)
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 1
    assert any("Procesos sin terminar 10 s después de la señal: se matan" in line for line in server.stderr)
    assert all(_gone(pid) for pid in pids.values())


# As _HANGING, and each process says when the supervisor's SIGTERM reaches it.
_HANGING_TOLD = _HANGING.replace(
    "from server.__main__",
    "app.Server._on_signal = lambda self, signum, frame: print('told to stop', flush=True)\nfrom server.__main__",
)


def test_a_supervisor_stopped_past_its_drain_deadline_ends_the_drain_as_planned(supervised):
    """Ctrl-Z (SIGSTOP) while draining, continued after the deadline: the overdue kill, not a "second signal"."""
    server = supervised("--processes", "2", "--drain-timeout", "0", command=[sys.executable, "-c", _HANGING_TOLD])
    pids = _pids(server, 2)
    server.signal(signal.SIGTERM)
    server.wait_for_text("told to stop")  # the supervisor has passed SIGTERM on: its deadline is set
    deadline = time.monotonic() + DRAIN_MARGIN + 0.5  # later than the supervisor's own
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(left)  # the condition is the time itself: stopped until the deadline has passed
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert server.wait(timeout=60) == 1
    assert any("Procesos sin terminar 10 s después de la señal: se matan" in line for line in server.stderr)
    assert not any("Segunda señal" in line for line in server.stderr), server.stderr
    assert all(_gone(pid) for pid in pids.values())


def test_a_port_in_use_is_one_clear_line_even_for_another_group_of_ours(supervised):
    """SO_REUSEPORT would let a second supervisor join the first's group: the plain probe bind refuses it."""
    first = supervised("--processes", "2")
    _pids(first, 2)
    second = subprocess.run(
        [sys.executable, "-m", "server", "--processes", "2", "--port", str(first.port)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert second.stderr == f"error: cannot listen on 127.0.0.1:{first.port}: address already in use\n"
    assert second.stdout == ""


_TOO_MANY = b"error: too many connections from your address\n"


def _refused_by(server: ServerProcess, pids: list[int], timeout: float = 30.0) -> set[int]:
    """Connect from 127.0.0.1 until each of ``pids`` has refused one with the L15 line (the kernel picks who)."""
    refused: set[int] = set()
    deadline = time.monotonic() + timeout
    while refused != set(pids):
        with connect(server.address) as extra:
            assert read_exactly(extra, len(_TOO_MANY)) == _TOO_MANY
            owner = _owner(pids, extra)  # the refusal lingers, open, until we close
            if owner is not None:
                refused.add(owner)
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sorted(refused)} of {pids} refused a connection within {timeout} s")
    return refused


def _from(source: str, address: tuple[str, int]) -> socket.socket:
    """A connection whose client address is ``source`` (another loopback address is another client)."""
    try:
        return socket.create_connection(address, timeout=30, source_address=(source, 0))
    except OSError as exc:
        pytest.skip(f"cannot connect from {source} here: {exc}")


def test_max_per_address_is_one_total_across_the_processes(supervised):
    """Three sessions on one process and one on the other make the four allowed: no process has a share of its own."""
    server = supervised("--processes", "2", "--max-per-address", "4")
    pids = _pids(server, 2)
    every = list(pids.values())
    held = []
    try:
        held.append(_session_on(server, pids[2], every))
        held += [_session_on(server, pids[1], every) for _ in range(3)]
        assert read_addresses(server.pid) == {"127.0.0.1": [3, 1]}
        assert [open_ for open_, _ in read_counts(server.pid)] == [3, 1]
        _refused_by(server, every)  # the fifth, wherever it lands
        with _from("127.0.0.2", server.address) as other:
            _round_trip(other, b"otra direccion")
        held[0].sendall(b"DESCONEXION\n")  # the session on the second process ends ...
        assert read_until_closed(held[0]) == b"DESCONEXION\n"
        assert read_addresses(server.pid) == {"127.0.0.1": [3, 0]}
        held[0] = _session(server.address)  # ... and its place goes to the next, wherever it lands
        _refused_by(server, every)
    finally:
        for sock in held:
            sock.close()
    status = server.stop()
    assert status == 0, (server.stderr, server.stdout)


def test_a_killed_process_s_sessions_stop_counting_against_their_address(supervised):
    server = supervised("--processes", "2", "--max-per-address", "3")
    pids = _pids(server, 2)
    every = list(pids.values())
    doomed = [_session_on(server, pids[1], every) for _ in range(2)]
    survivor = _session_on(server, pids[2], every)
    held = []
    try:
        assert read_addresses(server.pid) == {"127.0.0.1": [2, 1]}
        with connect(server.address) as fourth:
            assert read_until_closed(fourth) == _TOO_MANY
        os.kill(pids[1], signal.SIGKILL)
        # logged once the supervisor has reaped it, and forgotten its sessions
        server.wait_for_text(f"El proceso 1 (pid {pids[1]}) murió por la señal 9 (SIGKILL)", stream="stderr")
        assert read_addresses(server.pid) == {"127.0.0.1": [0, 1]}
        held = [_session(server.address) for _ in range(2)]  # the two places the dead sessions held
        with connect(server.address) as fourth:
            assert read_until_closed(fourth) == _TOO_MANY
        _round_trip(survivor, b"sigo aqui")  # the other process's session was never disturbed
    finally:
        for sock in [*doomed, *held, survivor]:
            sock.close()
    status = server.stop()
    assert status == 0, (server.stderr, server.stdout)


def test_behind_a_proxy_the_total_per_address_counts_the_header_s_address(supervised):
    server = supervised("--processes", "2", "--proxy-protocol", "any", "--max-per-address", "1")
    pids = _pids(server, 2)
    every = list(pids.values())
    client, other = ("203.0.113.7", 4242), ("198.51.100.9", 4343)
    first = _session_on(server, pids[1], every, header=v1(client, ("127.0.0.1", 5000)))
    try:
        assert read_addresses(server.pid) == {"203.0.113.7": [1, 0]}
        refused_by: set[int] = set()
        deadline = time.monotonic() + 30
        while refused_by != set(every):  # the same client through the proxy, refused on either process
            with connect(server.address) as again:
                # whose it is, known once accepted (its process waits for the header): a refusal is closed at once
                owner = wait_until(lambda sock=again: _owner(every, sock), 30, "a connection to be accepted")
                again.sendall(v2((client[0], 4343), ("127.0.0.1", 5000)) + b"dos\n")
                assert read_until_closed(again) == _TOO_MANY
                refused_by.add(owner)
            assert time.monotonic() < deadline, f"only {sorted(refused_by)} refused within 30 s"
        _round_trip(_session(server.address, v1(other, ("127.0.0.1", 5000))), b"otro cliente")
    finally:
        first.close()
    status = server.stop()
    assert status == 0, (server.stderr, server.stdout)
