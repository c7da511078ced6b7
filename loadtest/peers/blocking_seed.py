"""P4: the seed's design, one client at a time with ``recv(1024)``, framed by LF like the others."""

from __future__ import annotations

import signal
import socket
import sys

from loadtest.peers.common import BACKLOG, announce, answer, family, parse_args


def serve(conn: socket.socket) -> None:
    """Answer one client until it disconnects or closes."""
    pending = b""
    while True:
        data = conn.recv(1024)
        if not data:
            if pending:
                conn.sendall(answer(pending, terminated=False)[0])
            return
        *lines, pending = (pending + data).split(b"\n")
        replies = []
        for line in lines:
            reply, done = answer(line)
            replies.append(reply)
            if done:
                conn.sendall(b"".join(replies))
                return
        conn.sendall(b"".join(replies))


def main() -> None:
    args = parse_args(__doc__)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with socket.create_server((args.host, args.port), family=family(args.host), backlog=BACKLOG) as listener:
        announce("P4 blocking seed", listener.getsockname())
        try:
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    try:
                        serve(conn)
                    except ConnectionError:
                        pass  # reset by the client: serve the next one
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
