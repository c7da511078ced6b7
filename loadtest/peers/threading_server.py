"""P3: the standard library's thread-per-client answer, ``socketserver.ThreadingTCPServer``."""

from __future__ import annotations

import signal
import socketserver
import sys

from loadtest.peers.common import BACKLOG, announce, answer, family, parse_args


class LineHandler(socketserver.StreamRequestHandler):
    disable_nagle_algorithm = True

    def handle(self) -> None:
        try:
            for line in self.rfile:
                terminated = line.endswith(b"\n")
                reply, done = answer(line[:-1] if terminated else line, terminated)
                self.wfile.write(reply)
                if done:
                    return
        except ConnectionError:
            pass  # reset by the client


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = BACKLOG


def main() -> None:
    args = parse_args(__doc__)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    Server.address_family = family(args.host)
    with Server((args.host, args.port), LineHandler) as server:
        announce("P3 ThreadingTCPServer", server.server_address)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
