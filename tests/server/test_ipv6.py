"""O7: IPv6 hosts for the server (``--host ::`` dual-stack), the client, Locust and the bench."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import pytest

from client.connection import ConnectError, Connection
from loadtest.traffic import parse_host
from tests.loadtest.locustrun import finish, start_locust, stats
from tests.serverproc import ROOT, quiet, running_server
from tests.wire import connect, read_until_closed

pytestmark = pytest.mark.timeout(180)


def _ipv6_loopback() -> str | None:
    """Why IPv6 cannot be tested here, or None when ::1 works."""
    if not socket.has_ipv6:
        return "this Python has no IPv6 support"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        return f"the machine has no IPv6 loopback (::1): {exc.strerror or exc}"
    return None


_NO_IPV6 = _ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(_NO_IPV6 is not None, reason=_NO_IPV6 or "")


def _exchange(address: tuple[str, int]) -> tuple[int, bytes]:
    with connect(address) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"hola\nDESCONEXION\n")
        return port, read_until_closed(sock)


@needs_ipv6
def test_dual_stack_serves_ipv4_and_ipv6_and_prints_bracketed_addresses(start_server):
    server = start_server("--host", "::", "--metrics", "[::1]:0", "--log-format", "json")
    assert server.stdout[0] == f"Servidor TCP esperando conexiones en [::]:{server.port}"
    server.wait_for_text("reachable from other machines", stream="stderr")
    url = server.wait_for_text("metrics on ").split("metrics on ", 1)[1]
    assert url.startswith("http://[::1]:") and url.endswith("/metrics")
    port6, reply6 = _exchange(("::1", server.port))
    assert reply6 == b"HOLA\nDESCONEXION\n"
    try:
        port4, reply4 = _exchange(("127.0.0.1", server.port))
    except ConnectionRefusedError:
        pytest.skip("the OS keeps IPv6 sockets IPv6-only (IPV6_V6ONLY cannot be turned off)")
    assert reply4 == b"HOLA\nDESCONEXION\n"
    for peer in (f"[::1]:{port6}", f"127.0.0.1:{port4}"):  # an IPv4 client by its IPv4 address, not ::ffff:
        line = server.wait_for_line(lambda text, peer=peer: '"event": "closed"' in text and f'"{peer}"' in text)
        assert json.loads(line)["peer"] == peer
    with urllib.request.urlopen(url, timeout=10) as response:
        assert "upperecho_sessions_opened_total 2.0" in response.read().decode()


@needs_ipv6
def test_ipv6_transcript_shows_the_peer_like_an_ipv4_one(start_server):
    server = start_server("--host", "[::1]")
    assert server.stdout[0].endswith(f"[::1]:{server.port}")
    port, reply = _exchange(("::1", server.port))
    assert reply == b"HOLA\nDESCONEXION\n"
    server.wait_for_text(f"Conexión establecida con el cliente ('::1', {port})")


@needs_ipv6
def test_client_library_and_cli_take_an_ipv6_host(start_server):
    server = start_server("--host", "::1")
    with Connection("::1", server.port) as conn:
        assert conn.request("hola") == "HOLA"
        conn.disconnect()
    for host in ("::1", "[::1]"):
        done = subprocess.run(
            [sys.executable, "-m", "client", "--host", host, "--port", str(server.port), "--file", "-"],
            cwd=ROOT,
            input="hola\nadiós\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == "HOLA\nADIÓS\n"


@needs_ipv6
def test_client_error_names_the_ipv6_address_in_brackets():
    with socket.socket(socket.AF_INET6) as holder:
        holder.bind(("::1", 0))
        port = holder.getsockname()[1]  # bound, not listening: connecting is refused
        with pytest.raises(ConnectError, match=rf"cannot connect to \[::1\]:{port}: "):
            Connection("::1", port, timeout=5).connect()


@pytest.mark.parametrize(
    ("url", "address"),
    [("tcp://[::1]:5003", ("::1", 5003)), ("[::1]:5004", ("::1", 5004)), ("[::1]", ("::1", 5000))],
)
def test_locust_host_takes_ipv6_in_brackets(url, address):
    assert parse_host(url) == address


@pytest.mark.parametrize("url", ["tcp://::1:5000", "::1"])
def test_locust_host_without_brackets_says_how(url):
    with pytest.raises(ValueError, match="brackets"):
        parse_host(url)


@needs_ipv6
def test_locust_runs_headless_over_ipv6(tmp_path):
    prefix = tmp_path / "run"
    with running_server(*quiet("--host", "::1")) as server:
        proc = start_locust(
            "--headless", "-u", "4", "-r", "4", "-t", "4s", "--think-time", "0.01",
            "--host", f"tcp://[::1]:{server.port}", "--csv", str(prefix),
            cwd=tmp_path,
        )  # fmt: skip
        code, output = finish(proc, timeout=120)
    assert code == 0, output[-3000:]
    table = stats(prefix)
    assert int(table["Aggregated"]["Request Count"]) > 0, output[-3000:]
    assert int(table["Aggregated"]["Failure Count"]) == 0


@needs_ipv6
@pytest.mark.timeout(240)
def test_bench_runs_every_server_on_an_ipv6_host(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.bench",
            "--quick",
            "--host",
            "::1",
            "--workloads",
            "W1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    document = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert document["errors"] == []
    left_out = {item["server"] for item in document["not_applicable"]}  # the TLS-only peer, in W1
    assert {row["server"] for row in document["summary"]} == set(document["servers"]) - left_out
    assert all(row["value"] > 0 for row in document["summary"])
