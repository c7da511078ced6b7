"""P2: an asyncio ``Protocol`` on uvloop, the fastest thing a Python user would pick."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import uvloop

from loadtest.peers.common import BACKLOG, answer, serve_until_signalled


class LineEcho(asyncio.Protocol):
    """Frame by LF in ``data_received``; stop reading while the transport's buffer is full."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + data).split(b"\n")
        replies = []
        for line in lines:
            reply, done = answer(line)
            replies.append(reply)
            if done:
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
        if replies:
            self.transport.write(b"".join(replies))

    def eof_received(self) -> None:
        if self.pending:
            self.transport.write(answer(self.pending, terminated=False)[0])

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


def start(host: str, port: int) -> Awaitable[asyncio.AbstractServer]:
    return asyncio.get_running_loop().create_server(LineEcho, host, port, backlog=BACKLOG)


if __name__ == "__main__":
    uvloop.run(serve_until_signalled("P2 uvloop protocol", __doc__, start))
