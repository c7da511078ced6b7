"""The classroom's protocol, as the seed's two programs and their copies speak it: a test peer.

Written for the tests from the exercise's description, the way its students
write it, so upperecho can be checked against the programs its first users
already have:

* the server is blocking and serves one client at a time; each ``recv(1024)``
  is one message, answered upper-cased with nothing added; the bare text is
  compared with ``DESCONEXION`` (case, accents and white space count), which
  ends that client's session with no answer;
* the client sends what is typed with no newline, reads one ``recv(1024)`` as
  the answer, and leaves after sending ``DESCONEXION``.

Both print the seed's Spanish console.  Run them as
``python -m tests.classroom server [--port N]`` and
``python -m tests.classroom client [--port N]``; the server's first line gives
its address, like upperecho's.
"""

from __future__ import annotations

import argparse
import socket
import sys

WORD = "DESCONEXION"
PROMPT = f"Ingresa mensaje (o '{WORD}' para salir): "


def serve(host: str, port: int) -> None:
    """Serve clients one after another until interrupted."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1)
        bound_host, bound_port = listener.getsockname()[:2]
        print(f"Servidor TCP esperando conexiones en {bound_host}:{bound_port}", flush=True)
        while True:
            conn, address = listener.accept()
            with conn:
                print(f"Conexión establecida con el cliente {address}", flush=True)
                _converse(conn, address)


def _converse(conn: socket.socket, address: object) -> None:
    while True:
        data = conn.recv(1024)
        if not data:  # the client went away without the word
            return
        text = data.decode()
        print(f"Mensaje recibido: {text}", flush=True)
        if text == WORD:
            print(f"El cliente {address} solicita desconexión.", flush=True)
            return
        answer = text.upper()
        conn.send(answer.encode())
        print(f"Respuesta enviada al cliente: {answer}", flush=True)


def talk(host: str, port: int) -> None:
    """The console client: one typed line out, one read back, until the word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.connect((host, port))
        print("Se establece una conexión con el servidor.", flush=True)
        while True:
            try:
                text = input(PROMPT)
            except EOFError:
                return
            sock.send(text.encode())
            if text == WORD:
                print("Cerrando conexión con el servidor...", flush=True)
                return
            answer = sock.recv(1024).decode()
            print(f"Respuesta del servidor: {answer}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.classroom", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    try:
        if args.role == "server":
            serve(args.host, args.port)
        else:
            talk(args.host, args.port)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
