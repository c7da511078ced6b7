"""What every peer shares: the command line, the first stdout line, and the reply to one line.

The peers are the servers a Python user would write instead of ours.  They keep
the same L1-L4 behaviour (LF or CRLF framing, full Unicode upper-casing, the
disconnect word) so that the benchmark compares like with like; the rule for
the disconnect word is the project's own (``statemachine.text``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable

from statemachine.text import is_disconnect

# The same listen backlog as our server: a short queue would drop connections under churn.
BACKLOG = 4096


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=5000, help="TCP port; 0 picks a free one (default %(default)s)")
    return parser.parse_args()


def family(host: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address (O7), else IPv4: the stdlib servers default to IPv4."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def announce(name: str, address: tuple) -> None:
    """The first stdout line names the address, as our server's does, so launchers can read it back."""
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    print(f"{name} listening on {host}:{address[1]}", flush=True)


async def serve_until_signalled(
    name: str, description: str, start: Callable[[str, int], Awaitable[asyncio.AbstractServer]]
) -> None:
    """The asyncio peers' main: read the flags, ``start(host, port)``, announce, serve until SIGINT/SIGTERM."""
    args = parse_args(description)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = await start(args.host, args.port)
    announce(name, server.sockets[0].getsockname())
    async with server:
        await stop.wait()


def answer(line: bytes, terminated: bool = True) -> tuple[bytes, bool]:
    """The reply to one message and whether it ends the session (L1-L4).

    ``line`` is the message without its LF; ``terminated`` is False for an
    unterminated tail at end of stream, which is answered with no terminator.
    """
    if not terminated:
        end = b""
    elif line.endswith(b"\r"):
        line, end = line[:-1], b"\r\n"
    else:
        end = b"\n"
    text = line.decode(errors="replace")
    return text.upper().encode() + end, is_disconnect(text)
