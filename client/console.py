"""The interactive client (C1): the seed's console, in Spanish by default.

A line is sent as typed and its reply shown; the disconnect word (any of its L4
forms), end of input (Ctrl-D) and Ctrl-C all end the session the protocol's
way, by sending DESCONEXION, so the server is never left guessing.
"""

from __future__ import annotations

import sys

from client import exitcodes
from client.cli import Config
from client.connection import ClientError, ConnectError, Connection
from client.messages import texts
from statemachine.text import DISCONNECT_WORD, is_disconnect


def _enable_line_editing() -> None:
    """Arrow keys and history in ``input()`` where the platform has ``readline``."""
    try:
        import readline  # noqa: F401  (importing it is what enables it)
    except ImportError:
        pass


def run(config: Config) -> int:
    """Talk to the server until the user leaves; the process exit status."""
    say = texts(config.lang)
    _enable_line_editing()
    try:
        conn = Connection(
            config.host, config.port, config.timeout, config.framing, _warn, ssl_context=config.ssl_context
        ).connect()
    except ConnectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exitcodes.CANNOT_CONNECT
    with conn:
        print(say.connected)
        try:
            return _converse(conn, say.prompt, say.reply, say.closing)
        except KeyboardInterrupt:
            print()
            print(say.closing)
            _abandon(conn)
            return exitcodes.INTERRUPTED
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exitcodes.FAILED


def _converse(conn: Connection, prompt: str, reply: str, closing: str) -> int:
    while True:
        try:
            text = input(prompt)
        except EOFError:
            print()
            text = DISCONNECT_WORD
        if is_disconnect(text):
            print(closing)
            conn.disconnect(text)
            return exitcodes.OK
        try:
            answer = conn.request(text)
        except ValueError as exc:  # a typed CR at the end: the protocol cannot carry it
            print(f"error: {exc}", file=sys.stderr)
            continue
        print(reply.format(text=answer))


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _abandon(conn: Connection) -> None:
    """Ctrl-C: send the disconnect word and read until the server closes, whatever comes.

    A reply may still be due (Ctrl-C while waiting for it), so the next line is
    not necessarily the disconnect word's reply: nothing here is checked.
    """
    try:
        conn.send(DISCONNECT_WORD)
        while True:
            conn.receive_line()
    except ClientError:
        pass
