"""P1: the asyncio streams server most Python users write (``start_server``, ``readline``, ``drain``)."""

from __future__ import annotations

import asyncio
import signal

from loadtest.peers.common import BACKLOG, announce, answer, parse_args


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            terminated = line.endswith(b"\n")
            reply, done = answer(line[:-1] if terminated else line, terminated)
            writer.write(reply)
            await writer.drain()
            if done:
                break
    except (ConnectionError, ValueError):
        pass  # reset by the client, or a line over the reader's limit
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def main() -> None:
    args = parse_args(__doc__)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = await asyncio.start_server(handle, args.host, args.port, backlog=BACKLOG)
    announce("P1 asyncio streams", server.sockets[0].getsockname())
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
