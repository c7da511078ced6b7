"""Each benchmark peer keeps L1-L4 through the shared client, and exits on SIGTERM (the TLS peer over TLS)."""

from __future__ import annotations

import socket

import pytest

from client.connection import Connection, tls_context
from loadtest.servers import PEERS, SPECS, RunningServer
from tests.tlskit import make_cert, needs_openssl

pytestmark = pytest.mark.timeout(60)
PLAIN_PEERS = [name for name in PEERS if not SPECS[name].tls_only]


@pytest.fixture(params=PLAIN_PEERS)
def peer(request):
    with RunningServer(SPECS[request.param]) as server:
        server.wait_started()
        yield server


def test_peer_upper_cases_with_full_unicode_rules_and_ends_on_the_word(peer):
    with Connection(*peer.address) as conn:
        assert conn.request("hola straße") == "HOLA STRASSE"
        assert conn.request("") == ""
        assert conn.request("ñandú ﬁn 日本 ΐ") == "ÑANDÚ FIN 日本 \u0399\u0308\u0301"
        assert conn.request("  espacios  ") == "  ESPACIOS  "
        assert conn.disconnect(" Desconexión ") == " DESCONEXIÓN "


def test_peer_keeps_each_terminator_and_answers_many_lines_per_segment(peer):
    with socket.create_connection(peer.address, timeout=10) as sock:
        sock.sendall(b"uno\r\ndos\ntr\res\nDESCONEXION\nnunca\n")
        received = b""
        while data := sock.recv(4096):
            received += data
    assert received == b"UNO\r\nDOS\nTR\rES\nDESCONEXION\n"


def test_peer_exits_cleanly_on_sigterm(peer):
    with Connection(*peer.address) as conn:
        assert conn.request("adiós") == "ADIÓS"
    assert peer.stop() == 0


@pytest.mark.parametrize("name", [name for name in PLAIN_PEERS if SPECS[name].concurrent])
def test_concurrent_peer_serves_two_clients_at_once(name):
    with RunningServer(SPECS[name]) as server, Connection(*server.address) as one, Connection(*server.address) as two:
        assert one.request("uno") == "UNO"
        assert two.request("dos") == "DOS"
        assert one.request("otra vez") == "OTRA VEZ"


def test_seed_peer_serves_the_next_client_when_the_first_leaves():
    with RunningServer(SPECS["P4"]) as server, Connection(*server.address) as first:
        assert first.request("primero") == "PRIMERO"
        with Connection(*server.address) as second:
            second.send("segundo")  # waits in the listen queue while the first is served
            assert first.disconnect() == "DESCONEXION"
            assert second.read_reply() == "SEGUNDO"


@needs_openssl
def test_tls_peer_answers_over_tls_to_two_clients_and_exits_on_sigterm(tmp_path):
    cert = make_cert(tmp_path)
    context = tls_context(str(cert.cert))
    with RunningServer(SPECS["P1tls"], cert.server_args()) as server:
        with (
            Connection(*server.address, ssl_context=context) as one,
            Connection(*server.address, ssl_context=context) as two,
        ):
            assert one.request("hola straße") == "HOLA STRASSE"
            assert two.request("dos") == "DOS"
            assert one.disconnect(" Desconexión ") == " DESCONEXIÓN "
        assert server.stop() == 0
