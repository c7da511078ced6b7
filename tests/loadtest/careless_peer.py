"""A broken server for the tests: it echoes each line back unchanged, as if it forgot to upper-case.

``python -m tests.loadtest.careless_peer --port 0`` prints its address like the peers do,
so the bench's launcher can start it.
"""

from __future__ import annotations

import socketserver

from loadtest.peers.common import announce, parse_args


class Parrot(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            for line in self.rfile:
                self.wfile.write(line)
        except ConnectionError:
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    args = parse_args(__doc__)
    with Server((args.host, args.port), Parrot) as server:
        announce("careless peer", server.server_address)
        server.serve_forever()
