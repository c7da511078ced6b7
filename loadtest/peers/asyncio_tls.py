"""P1 over TLS: the same asyncio streams server with an ``ssl.SSLContext`` (``start_server(ssl=...)``), for W8.

``--tls-cert`` and ``--tls-key`` as our server takes them; TLS 1.2 and later.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl

from loadtest.peers.asyncio_streams import handle
from loadtest.peers.common import BACKLOG, announce


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=5000, help="TCP port; 0 picks a free one (default %(default)s)")
    parser.add_argument("--tls-cert", required=True, help="PEM certificate chain")
    parser.add_argument("--tls-key", required=True, help="PEM private key")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.tls_cert, args.tls_key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = await asyncio.start_server(handle, args.host, args.port, backlog=BACKLOG, ssl=context)
    announce("P1 asyncio streams over TLS", server.sockets[0].getsockname())
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
