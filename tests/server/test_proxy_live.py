"""The PROXY protocol on the live server (O2): the header's client in the transcript; bad, cut, oversized,
slow and disallowed headers closed with nothing sent, one line each, counted, nobody else disturbed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from server.config import networks
from server.worker import _allowed
from tests.proxywire import V2_SIGNATURE, v1, v2, v2_local
from tests.serverproc import ROOT
from tests.wire import connect, read_lines, read_until_closed

pytestmark = pytest.mark.timeout(120)

CLIENT = ("203.0.113.7", 4242)
REFUSED = "(PROXY protocol): "


def proxied(start_server, *args: str):
    return start_server("--lang", "en", "--proxy-protocol", "any", *args)


def refusals(server) -> list[str]:
    return [line for line in server.stderr if REFUSED in line]


def wait_refusal(server, count: int) -> str:
    return server.wait_for_line(lambda line: REFUSED in line and f"({count} so far)" in line, stream="stderr")


@pytest.mark.parametrize(
    ("header", "named"),
    [
        (v1(CLIENT, ("127.0.0.1", 5000)), "('203.0.113.7', 4242)"),
        (v2(CLIENT, ("127.0.0.1", 5000), tlvs=b"\x01\x00\x02h2"), "('203.0.113.7', 4242)"),
        (v2(("2001:db8::7", 61000), ("::1", 5000)), "('2001:db8::7', 61000)"),
        (v1(("2001:db8::7", 61000), ("::1", 5000)), "('2001:db8::7', 61000)"),
    ],
    ids=["v1-tcp4", "v2-tcp4-tlv", "v2-tcp6", "v1-tcp6"],
)
def test_the_header_names_the_client_in_the_transcript(start_server, header, named):
    server = start_server("--proxy-protocol", "any")
    with connect(server.address) as sock:
        sock.sendall(header + b"hola\n")
        assert read_lines(sock, 1) == [b"HOLA\n"]
        sock.sendall(b"DESCONEXION\n")
        assert read_until_closed(sock) == b"DESCONEXION\n"
    server.wait_for_text(f"El cliente {named} solicita desconexión.")
    established = [line for line in server.stdout if line.startswith("Conexión establecida")]
    assert established == [f"Conexión establecida con el cliente {named}"]
    assert server.stdout.index(established[0]) < server.stdout.index("Mensaje recibido: hola")


@pytest.mark.parametrize("header", [v2_local(), b"PROXY UNKNOWN\r\n"], ids=["v2-local", "v1-unknown"])
def test_local_and_unknown_keep_the_sockets_address(start_server, header):
    server = proxied(start_server)
    with connect(server.address) as sock:
        port = sock.getsockname()[1]
        sock.sendall(header + b"ping\n")
        assert read_lines(sock, 1) == [b"PING\n"]
    server.wait_for_text(f"Connection established with client ('127.0.0.1', {port})")


def test_a_header_a_byte_at_a_time_then_the_client_speaks(start_server):
    server = proxied(start_server)
    with connect(server.address) as sock:
        for byte in v2(CLIENT, ("127.0.0.1", 1)):
            sock.send(bytes([byte]))
        sock.sendall(b"uno\n")
        assert read_lines(sock, 1) == [b"UNO\n"]
    server.wait_for_text("Connection established with client ('203.0.113.7', 4242)")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"hola\n", "not a PROXY protocol version 1 or 2 header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nhola\n", "LF alone"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\nhola\n", "not an IPv4 address"),
        (b"PROXY UNKNOWN " + b"x" * 200, "no CRLF within 107 bytes"),
        (V2_SIGNATURE + b"\x21\x11\x07\xd0" + bytes(2000), "2000 bytes of addresses and TLVs, over the 1024 allowed"),
        (V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "UDP"),
    ],
    ids=["no-header", "lf-alone", "leading-zero", "v1-oversized", "v2-oversized", "v2-udp"],
)
def test_a_bad_header_gets_nothing_one_line_and_others_are_unaffected(start_server, payload, reason):
    server = proxied(start_server)
    with connect(server.address) as good:
        good.sendall(v1(CLIENT, ("127.0.0.1", 5000)) + b"antes\n")
        assert read_lines(good, 1) == [b"ANTES\n"]
        with connect(server.address) as bad:
            bad.sendall(payload)
            try:
                assert read_until_closed(bad) == b""
            except ConnectionResetError:
                pass  # closed with our bytes unread: a reset, still nothing sent
        line = wait_refusal(server, 1)
        assert reason in line
        good.sendall(b"despues\n")
        assert read_lines(good, 1) == [b"DESPUES\n"]
    # the transcript is written by the console thread, after the replies: read it up to the last line
    server.wait_for_text("Message received: despues")
    assert len(refusals(server)) == 1
    assert not any("Message received" in line and "hola" in line for line in server.stdout)
    assert sum(line.startswith("Connection established") for line in server.stdout) == 1


def test_end_of_stream_inside_the_header(start_server):
    server = proxied(start_server)
    with connect(server.address) as sock:
        sock.sendall(b"PROXY TCP4 1.2.3.4")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b""
    assert "end of stream inside the PROXY header (1 so far)" in wait_refusal(server, 1)


def test_a_slow_header_is_refused_at_the_deadline_and_bytes_do_not_extend_it(start_server):
    server = proxied(start_server, "--proxy-timeout", "1")
    with connect(server.address) as slow, connect(server.address) as silent:
        slow.sendall(b"PROXY ")
        slow.sendall(b"TCP4 ")  # more bytes, same deadline
        assert read_until_closed(slow, timeout=30) == b""
        assert read_until_closed(silent, timeout=30) == b""
    wait_refusal(server, 2)
    assert all("no complete PROXY header within 1 s" in line for line in refusals(server))


def test_a_source_outside_proxy_from_is_closed_at_accept_with_no_session(start_server):
    server = proxied(start_server, "--proxy-from", "192.0.2.0/24,2001:db8::/32", "--max-connections", "1")
    for count in (1, 2):  # no session is made, so the single place is never taken
        with connect(server.address) as sock:
            port = sock.getsockname()[1]
            sock.sendall(v1(CLIENT, ("127.0.0.1", 5000)) + b"hola\n")
            try:
                assert read_until_closed(sock) == b""
            except ConnectionResetError:
                pass
        line = wait_refusal(server, count)
        assert f"('127.0.0.1', {port})" in line and "not in --proxy-from" in line
    assert not any(line.startswith("Connection established") for line in server.stdout)
    assert not any("busy" in line for line in server.stderr)


def test_a_flood_of_bad_headers_cannot_flood_the_console_and_every_one_is_counted(start_server):
    flood = 200
    server = proxied(start_server, "-q")
    for i in range(flood):
        with connect(server.address, timeout=30) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                assert read_until_closed(sock) == b"", f"bad header {i}"
            except ConnectionResetError:
                pass
    with connect(server.address) as honest:  # nobody else is disturbed
        honest.sendall(v1(CLIENT, ("127.0.0.1", 5000)) + b"hola\n")
        assert read_lines(honest, 1) == [b"HOLA\n"]
    assert server.stop() == 0
    logged = refusals(server)
    # a burst of 10 lines, then at most one a second: 200 refusals within the test's timeout cannot all be
    # logged one by one; each line gives the count so far, and the line at exit counts those after the last
    assert 0 < len(logged) < flood, server.stderr[-5:]
    counts = [int(re.search(r"\((\d+) so far\)$", line).group(1)) for line in logged]
    assert counts == sorted(set(counts)) and counts[:10] == list(range(1, 11))
    after = flood - counts[-1]
    summary = [line for line in server.stderr if line.startswith("warning: PROXY protocol: ")]
    assert summary == [f"warning: PROXY protocol: {after} more connections refused and not logged ({flood} in all)"]


def test_shutdown_during_the_header_sends_nothing_and_a_session_after_it_gets_the_notice(start_server):
    server = proxied(start_server)
    with connect(server.address) as waiting, connect(server.address) as session:
        session.sendall(v1(CLIENT, ("127.0.0.1", 5000)) + b"uno\n")
        assert read_lines(session, 1) == [b"UNO\n"]
        waiting.sendall(b"PROXY TCP")
        server.signal(signal.SIGTERM)
        assert read_until_closed(session) == b"error: server shutting down\n"
        assert read_until_closed(waiting) == b""
    assert server.wait() == 0
    assert any("the server is shutting down" in line for line in refusals(server))


def test_without_the_option_a_header_is_just_a_message(start_server):
    server = start_server()
    with connect(server.address) as sock:
        sock.sendall(b"PROXY UNKNOWN\r\n")
        assert read_lines(sock, 1) == [b"PROXY UNKNOWN\r\n"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--proxy-protocol", "v3"], "--proxy-protocol"),
        (["--proxy-from", "10.0.0.1/8"], "--proxy-from"),
        (["--proxy-from", "somewhere"], "--proxy-from"),
        (["--proxy-timeout", "0"], "--proxy-timeout"),
        (["--proxy-timeout", "3000000"], "--proxy-timeout"),
    ],
)
def test_bad_proxy_flags_give_one_line_and_status_2(args, needle):
    result = subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


def test_proxy_from_matches_addresses_the_way_accept_reports_them():
    allowed = networks("127.0.0.0/8,::1/128,192.0.2.7")
    assert _allowed(("127.0.0.1", 5000), allowed)
    assert _allowed(("::1", 5000, 0, 0), allowed)
    assert _allowed(("::ffff:127.0.0.9", 5000, 0, 0), allowed)  # IPv4 on a dual-stack socket
    assert _allowed(("192.0.2.7", 1), allowed)
    assert not _allowed(("192.0.2.8", 1), allowed)
    assert not _allowed(("10.0.0.1", 1), allowed)
    assert not _allowed(("fe80::1%eth0", 1, 0, 2), allowed)


def test_the_per_address_limit_counts_the_header_address_not_the_proxy(start_server):
    """L15 with O2: every connection comes from the proxy's address; the limit is per client it names."""
    server = proxied(start_server, "--max-per-address", "1")
    other = ("198.51.100.9", 4343)
    with connect(server.address) as first, connect(server.address) as second, connect(server.address) as third:
        first.sendall(v1(CLIENT, ("127.0.0.1", 5000)) + b"uno\n")
        assert read_lines(first, 1) == [b"UNO\n"]
        second.sendall(v1((CLIENT[0], 4343), ("127.0.0.1", 5000)) + b"dos\n")
        assert read_until_closed(second) == b"error: too many connections from your address\n"
        third.sendall(v2(other, ("127.0.0.1", 5000)) + b"tres\n")
        assert read_lines(third, 1) == [b"TRES\n"]  # another client behind the same proxy is served
        first.sendall(b"DESCONEXION\n")
        assert read_until_closed(first) == b"DESCONEXION\n"
    server.wait_for_text("Too many connections from one address", stream="stderr")
    with connect(server.address) as again:  # the first client's place is free once its session ended
        again.sendall(v1(CLIENT, ("127.0.0.1", 5000)) + b"otra vez\n")
        assert read_lines(again, 1) == [b"OTRA VEZ\n"]
    assert not any("dos" in line for line in server.stdout), "the refused session's message was read"
