"""L15: with ``--max-per-address N``, one client address cannot take more than N sessions."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.hardening.harness import hold_sessions, wait_until
from tests.serverproc import ROOT
from tests.wire import read_exactly, read_until_closed

pytestmark = pytest.mark.timeout(120)

TOO_MANY = b"error: too many connections from your address\n"


def _from(source: str, address: tuple[str, int]) -> socket.socket:
    """A connection whose client address is ``source`` (another loopback address is another client)."""
    try:
        return socket.create_connection(address, timeout=30, source_address=(source, 0))
    except OSError as exc:
        pytest.skip(f"cannot connect from {source} here: {exc}")


def _served(sock: socket.socket, text: str) -> bool:
    """True if ``text`` is echoed (a refused connection reads its refusal line instead)."""
    expected = f"{text.upper()}\n".encode()
    sock.sendall(f"{text}\n".encode())
    return read_exactly(sock, len(expected)) == expected


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_the_address_over_its_limit_is_refused_while_another_is_served(start_server, how):
    if how == "flag":
        srv = start_server("-q", "--max-per-address", "50")
    else:
        srv = start_server("-q", env={"UPPERECHO_MAX_PER_ADDRESS": "50"})
    held = hold_sessions(srv.address, 50)  # from 127.0.0.1, each one shown to be a served session
    try:
        with _from("127.0.0.1", srv.address) as fifty_first:
            assert read_until_closed(fifty_first) == TOO_MANY
        with _from("127.0.0.2", srv.address) as other:
            assert _served(other, "otra dirección")
        # a session's end frees its slot for the same address
        held.pop().close()

        def admitted() -> bool:
            with _from("127.0.0.1", srv.address) as again:
                return _served(again, "de nuevo")

        wait_until(admitted, 30, "a new session from 127.0.0.1 once one of its 50 has ended")
    finally:
        for sock in held:
            sock.close()


def test_refusals_take_no_slot_and_are_logged(start_server):
    srv = start_server("-q", "--lang", "en", "--max-per-address", "2", "--max-connections", "5")
    held = hold_sessions(srv.address, 2)
    try:
        for _ in range(20):
            with _from("127.0.0.1", srv.address) as refused:
                assert read_until_closed(refused) == TOO_MANY
        line = srv.wait_for_text("Too many connections from one address", stream="stderr")
        assert line.startswith("warning: ")
        # the twenty refusals took none of the five slots: three more addresses get one each
        others = [_from(f"127.0.0.{i}", srv.address) for i in (2, 3, 4)]
        try:
            assert all(_served(sock, "hola") for sock in others)
        finally:
            for sock in others:
                sock.close()
    finally:
        for sock in held:
            sock.close()


def test_the_limit_is_off_by_default(start_server):
    srv = start_server("-q", "--max-connections", "60")
    for sock in hold_sessions(srv.address, 60):
        sock.close()


def test_an_exposed_server_warns_when_the_limit_is_off(start_server):
    srv = start_server("-q", "--host", "0.0.0.0")
    line = srv.wait_for_text("reachable from other machines", stream="stderr")
    assert "--max-per-address is off" in line


def test_an_exposed_server_with_the_limit_does_not_warn_about_it(start_server):
    srv = start_server("-q", "--host", "0.0.0.0", "--max-per-address", "20")
    line = srv.wait_for_text("reachable from other machines", stream="stderr")
    assert "--max-per-address" not in line


@pytest.mark.parametrize("value", ["-1", "2000000", "lots"])
def test_bad_limits_are_refused_at_start(value):
    result = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", "--max-per-address", value],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-per-address" in lines[0]
