"""P2: an asyncio ``Protocol`` on uvloop, the fastest thing a Python user would pick."""

from __future__ import annotations

import asyncio
import signal

import uvloop

from loadtest.peers.common import BACKLOG, announce, answer, parse_args


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


async def main() -> None:
    args = parse_args(__doc__)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(LineEcho, args.host, args.port, backlog=BACKLOG)
    announce("P2 uvloop protocol", server.sockets[0].getsockname())
    async with server:
        await stop.wait()


if __name__ == "__main__":
    uvloop.run(main())
