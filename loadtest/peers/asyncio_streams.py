"""P1: the asyncio streams server most Python users write (``start_server``, ``readline``, ``drain``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from loadtest.peers.common import BACKLOG, answer, serve_until_signalled


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


def start(host: str, port: int) -> Awaitable[asyncio.AbstractServer]:
    return asyncio.start_server(handle, host, port, backlog=BACKLOG)


if __name__ == "__main__":
    asyncio.run(serve_until_signalled("P1 asyncio streams", __doc__, start))
