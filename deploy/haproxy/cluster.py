"""Start HAProxy in front of N upperecho servers on loopback, for trying the cluster by hand (O3).

``python deploy/haproxy/cluster.py --servers 3 --port 5000`` (or ``make cluster N=3``)
starts N servers with ``--proxy-protocol v2 --port 0``, reads back their ports,
fills ``haproxy.cfg.in`` and runs HAProxy in the foreground on ``--port``, a socket
this script binds and hands over (``bind fd@N``), so a port in use is one clear
line and ``--port 0`` picks a free one (the first line says which).
Ctrl-C (or SIGTERM) stops HAProxy and then the servers, which drain as usual (L11).
The tests use :func:`render` to fill the same template.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from string import Template

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TEMPLATE = HERE / "haproxy.cfg.in"
_ADDRESS = re.compile(r"(\S+):(\d+)\s*$")


class ClusterError(Exception):
    """The cluster cannot start: one clear line."""


def render(bind: str, servers: Sequence[tuple[str, int]], stats_socket: str, inter: str = "2s") -> str:
    """The HAProxy configuration for ``servers`` (host, port), listening on ``bind`` (``HOST:PORT`` or ``fd@N``)."""
    lines = "\n".join(f"    server upperecho{i} {host}:{port}" for i, (host, port) in enumerate(servers, start=1))
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        bind=bind, servers=lines, stats_socket=stats_socket, inter=inter, check_timeout=inter
    )


def _start_server(index: int, extra: Sequence[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", "0", "--proxy-protocol", "v2", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C reaches HAProxy and us; we stop the servers with one SIGTERM
    )
    first = proc.stdout.readline()
    match = _ADDRESS.search(first)
    if not match:
        proc.kill()
        raise ClusterError(f"server {index} did not start: {first.strip() or 'no output'}")
    threading.Thread(target=_relay, args=(proc.stdout, f"[upperecho{index}] "), daemon=True).start()
    return proc, int(match.group(2))


def _relay(stream, prefix: str) -> None:
    """A server's transcript on our stdout, each line prefixed with the server's name."""
    for line in stream:
        print(prefix + line, end="", flush=True)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/haproxy/cluster.py", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", "-n", type=int, default=3, help="upperecho servers to start (default 3)")
    parser.add_argument("--port", type=int, default=5000, help="HAProxy's port on 127.0.0.1; 0 = any (default 5000)")
    args, extra = parser.parse_known_args(argv)
    if not 1 <= args.servers <= 64:
        print("error: --servers must be between 1 and 64", file=sys.stderr)
        return 2
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        print("error: haproxy is not installed (Debian: apt-get install haproxy)", file=sys.stderr)
        return 1
    front = socket.socket()
    try:
        front.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        front.bind(("127.0.0.1", args.port))
        front.listen(512)
    except OSError as exc:
        front.close()
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {(exc.strerror or str(exc)).lower()}", file=sys.stderr)
        return 1
    port = front.getsockname()[1]
    servers: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)  # also when started with SIGINT ignored (a background job)
    with front, tempfile.TemporaryDirectory(prefix="upperecho-haproxy-") as workdir:
        try:
            ports = []
            for index in range(1, args.servers + 1):
                proc, server_port = _start_server(index, extra)
                servers.append(proc)
                ports.append(server_port)
            config = Path(workdir) / "haproxy.cfg"
            config.write_text(
                render(f"fd@{front.fileno()}", [("127.0.0.1", p) for p in ports], f"{workdir}/stats.sock"),
                encoding="utf-8",
            )
            print(f"HAProxy on 127.0.0.1:{port} -> upperecho on ports {', '.join(map(str, ports))}", flush=True)
            print(f"try: python -m client --port {port}   (Ctrl-C stops everything)", flush=True)
            return subprocess.run([haproxy, "-db", "-f", str(config)], pass_fds=[front.fileno()]).returncode
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            for proc in servers:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in servers:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    sys.exit(main())
