"""The client over TLS (O6): ``--tls --cafile`` gets the replies; a certificate or name it cannot trust is refused."""

from __future__ import annotations

import pytest

from client.connection import ConnectError, Connection, tls_context
from tests.client.clientproc import run_client as _run_client
from tests.tlskit import Cert, make_cert, needs_openssl

pytestmark = [needs_openssl, pytest.mark.timeout(120)]


def run_client(*args: str, input: str):
    """The client with ``input`` piped on its standard input."""
    return _run_client(*args, stdin=None, input=input.encode())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cert, Cert, Cert]:
    """The server's certificate, another one nobody signed for it, and one for another host name."""
    directory = tmp_path_factory.mktemp("tls")
    return make_cert(directory), make_cert(directory, "other"), make_cert(directory, "elsewhere", "DNS:elsewhere")


def test_scripted_client_over_tls_gets_every_reply(start_server, certs):
    cert = certs[0]
    srv = start_server("--lang", "en", *cert.server_args())
    result = run_client(
        "--port", str(srv.port), "--tls", "--cafile", str(cert.cert), "--file", "-", input="hola\nñandú\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HOLA\nÑANDÚ\n".encode()
    srv.wait_for_text("asks to disconnect")  # the client ended the session the protocol's way (S4)


def test_pipelined_client_over_tls(start_server, certs):
    cert = certs[0]
    srv = start_server("-q", *cert.server_args())
    lines = [f"mensaje {i}" for i in range(3000)]
    result = run_client(
        "--port",
        str(srv.port),
        "--tls",
        "--cafile",
        str(cert.cert),
        "--pipeline",
        "--file",
        "-",
        input="".join(f"{line}\n" for line in lines),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [line.upper() for line in lines]


def test_an_untrusted_certificate_is_refused_and_insecure_skips_the_check(start_server, certs):
    cert, other, _ = certs
    srv = start_server("--lang", "en", *cert.server_args())
    refused = run_client("--port", str(srv.port), "--tls", "--cafile", str(other.cert), "--file", "-", input="hola\n")
    assert refused.returncode == 3
    assert refused.stdout == b""
    assert "certificate verify failed" in refused.stderr and "Traceback" not in refused.stderr
    insecure = run_client("--port", str(srv.port), "--tls", "--insecure", "--file", "-", input="hola\n")
    assert insecure.returncode == 0, insecure.stderr
    assert insecure.stdout == b"HOLA\n"


def test_the_host_name_is_checked_by_default(start_server, certs):
    elsewhere = certs[2]
    srv = start_server("--lang", "en", *elsewhere.server_args())
    with pytest.raises(ConnectError, match="TLS certificate verify failed: .*(mismatch|doesn't match|not valid)"):
        Connection(srv.host, srv.port, ssl_context=tls_context(str(elsewhere.cert))).connect()
    with Connection(srv.host, srv.port, ssl_context=tls_context(insecure=True)) as conn:
        assert conn.request("sin nombre") == "SIN NOMBRE"
        assert conn.disconnect() == "DESCONEXION"


def test_tls_flags_need_tls_and_a_readable_ca_file(tmp_path):
    for args, needle in [
        (("--cafile", "x.pem"), "--cafile only applies with --tls"),
        (("--insecure",), "--insecure only applies with --tls"),
        (("--tls", "--cafile", str(tmp_path / "missing.pem")), "cannot use the CA file"),
    ]:
        result = run_client(*args, "--file", "-", input="hola\n")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], result.stderr


def test_a_plain_client_on_the_tls_port_and_a_tls_client_on_a_plain_port_fail_clearly(start_server, certs):
    cert = certs[0]
    plain_server = start_server("--lang", "en")
    with pytest.raises(ConnectError, match="TLS handshake failed"):
        Connection(plain_server.host, plain_server.port, timeout=10, ssl_context=tls_context(str(cert.cert))).connect()
    tls_server = start_server("--lang", "en", *cert.server_args())
    result = run_client("--port", str(tls_server.port), "--timeout", "10", "--file", "-", input="hola\n")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
