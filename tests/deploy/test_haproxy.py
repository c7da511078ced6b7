"""O3: the real HAProxy (deploy/haproxy/) in front of three servers on loopback, all on ephemeral ports.

HAProxy is given a listening socket the test has already bound (``bind fd@N``), so no
port is guessed; the servers run with ``--port 0`` and ``--proxy-protocol v2``.  Health
checks run every 200 ms, and the test reads HAProxy's own view of its servers from its
stats socket, waiting on it with a deadline.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from client.connection import ClientError, Connection
from tests.serverproc import ROOT, ServerProcess, running_server
from tests.wire import read_exactly, read_until_closed

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
pytestmark = [
    pytest.mark.skipif(
        HAPROXY is None, reason="needs haproxy (Debian package haproxy; `make test` installs it as root)"
    ),
    pytest.mark.timeout(180),
]
DEADLINE = 30.0  # generous: only reached when something is wrong
SERVERS = 3


def _cluster_module():
    spec = importlib.util.spec_from_file_location("cluster", ROOT / "deploy" / "haproxy" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


@dataclass
class Cluster:
    haproxy: subprocess.Popen
    front: tuple[str, int]
    stats_socket: Path
    log: Path
    servers: list[ServerProcess] = field(default_factory=list)

    def status(self) -> dict[str, str]:
        """HAProxy's status of each server (UP, DOWN, ...), from ``show stat`` on its stats socket."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            text = read_until_closed(sock, timeout=5).decode()
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {row["svname"]: row["status"] for row in rows if row["pxname"] == "upperecho_servers"}

    def wait_status(self, name: str, wanted: str) -> None:
        def reached() -> bool:
            if self.haproxy.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log.read_text()[-2000:]}")
            return self.status().get(name, "").startswith(wanted)

        wait_until(reached, f"HAProxy marks {name} {wanted}")

    def connect(self) -> Connection:
        return Connection(*self.front, timeout=DEADLINE).connect()

    def server_of(self, client: Connection) -> int:
        """Which server holds this client's session: the one whose transcript names its address."""
        port = client._socket().getsockname()[1]
        needle = f"('127.0.0.1', {port})"

        def found() -> list[int]:
            return [i for i, s in enumerate(self.servers) if any(needle in line for line in list(s.stdout))]

        wait_until(lambda: len(found()) == 1, f"exactly one server names {needle}")
        return found()[0]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    render = _cluster_module().render
    with (
        running_server("--proxy-protocol", "v2", "--lang", "en") as one,
        running_server("--proxy-protocol", "v2", "--lang", "en") as two,
        running_server("--proxy-protocol", "v2", "--lang", "en") as three,
    ):
        servers = [one, two, three]
        front = socket.socket()
        front.bind(("127.0.0.1", 0))
        front.listen(128)
        config = tmp_path / "haproxy.cfg"
        stats = tmp_path / "stats.sock"
        config.write_text(render(f"fd@{front.fileno()}", [s.address for s in servers], str(stats), inter="200ms"))
        log = tmp_path / "haproxy.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT, pass_fds=[front.fileno()]
            )
        running = Cluster(proc, front.getsockname(), stats, log, servers)
        front.close()  # HAProxy holds its own copy
        try:
            wait_until(lambda: stats.exists() or proc.poll() is not None, "HAProxy's stats socket")
            for i in range(1, SERVERS + 1):  # the tcp-check passes against every server
                running.wait_status(f"upperecho{i}", "UP")
            yield running
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_replies_through_haproxy_and_the_transcript_names_the_real_client(cluster):
    clients = [cluster.connect() for _ in range(SERVERS)]
    try:
        for i, client in enumerate(clients):
            assert client.request(f"hola desde {i}") == f"HOLA DESDE {i}"
        # leastconn: three held sessions, one on each server
        assert sorted(cluster.server_of(client) for client in clients) == list(range(SERVERS))
        for client in clients:
            port = client._socket().getsockname()[1]
            server = cluster.servers[cluster.server_of(client)]
            server.wait_for_text(f"Connection established with client ('127.0.0.1', {port})")
            assert client.disconnect() == "DESCONEXION"
            server.wait_for_text(f"Client ('127.0.0.1', {port}) asks to disconnect.")
    finally:
        for client in clients:
            client.close()


def test_a_killed_server_is_marked_down_new_sessions_go_elsewhere_and_others_are_untouched(cluster):
    clients = [cluster.connect() for _ in range(SERVERS)]
    try:
        for client in clients:
            assert client.request("antes") == "ANTES"
        owners = [cluster.server_of(client) for client in clients]
        victim = owners[0]
        cluster.servers[victim].proc.send_signal(signal.SIGKILL)
        cluster.wait_status(f"upperecho{victim + 1}", "DOWN")
        for client in clients[1:]:  # sessions on the other servers go on as if nothing happened
            assert client.request("despues") == "DESPUES"
        fresh = [cluster.connect() for _ in range(4)]
        try:
            for client in fresh:
                assert client.request("nuevo") == "NUEVO"
                assert cluster.server_of(client) != victim
        finally:
            for client in fresh:
                client.close()
    finally:
        for client in clients:
            client.close()


def test_a_server_stopped_with_sigterm_drains_through_haproxy_with_no_reply_lost(cluster):
    # About 200 KB of replies still in flight when the SIGTERM comes, and a transcript the
    # console holds whole even when it cannot keep up (S6 drops lines only past its backlog).
    count, size = 400, 500
    client = cluster.connect()
    try:
        assert client.request("primero") == "PRIMERO"
        owner = cluster.servers[cluster.server_of(client)]
        lines = [f"{i:05d}" + "x" * (size - 5) for i in range(count)]
        sock = client._socket()
        sock.sendall("".join(line + "\n" for line in lines).encode())  # and read nothing yet
        owner.wait_for_line(lambda line: line.startswith(f"Message received: {count - 1:05d}"))
        owner.signal(signal.SIGTERM)  # every message is in; the client has read no reply yet
        expected = "".join(line.upper() + "\n" for line in lines).encode() + b"error: server shutting down\n"
        assert read_exactly(sock, len(expected), timeout=DEADLINE) == expected
        assert read_until_closed(sock, timeout=DEADLINE) == b""
        assert owner.wait(timeout=DEADLINE) == 0
        fresh = cluster.connect()  # and the cluster still serves
        try:
            assert fresh.request("otro") == "OTRO"
        finally:
            fresh.close()
    finally:
        client.close()


def test_make_cluster_serves_and_ctrl_c_stops_everything():
    """What ``make cluster`` runs: HAProxy and two servers; Ctrl-C (SIGINT to the foreground group) ends all."""
    proc = subprocess.Popen(
        [sys.executable, "deploy/haproxy/cluster.py", "--servers", "2", "--port", "0", "-q"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a terminal's foreground job
    )
    started: list[psutil.Process] = []
    try:
        first = proc.stdout.readline()
        match = re.match(r"HAProxy on 127\.0\.0\.1:(\d+) -> upperecho on ports (\d+), (\d+)$", first.strip())
        assert match, f"first line: {first!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        port = int(match.group(1))
        wait_until(lambda: len(psutil.Process(proc.pid).children(recursive=True)) >= 3, "HAProxy and two servers")
        started = psutil.Process(proc.pid).children(recursive=True)  # the servers run in sessions of their own

        def served() -> bool:
            try:
                with Connection("127.0.0.1", port, timeout=5) as client:
                    return client.request("hola cluster") == "HOLA CLUSTER"
            except (ClientError, OSError):
                return False  # HAProxy not listening yet, or no server checked up yet

        wait_until(served, "a reply through the cluster")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=DEADLINE) == 0
        _, alive = psutil.wait_procs(started, timeout=DEADLINE)
        assert alive == [], f"left running: {alive}"
    finally:
        try:
            started += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        for child in started:
            if child.is_running():
                child.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
