"""An event-loop thread that owns many connections (Netty's event loop, nginx's worker).

Each worker has its own poller and its own connections, and accepts its own
new connections from the listening socket it polls with them (see
:mod:`server.app`).  All protocol decisions
are the session's (:mod:`statemachine.session`); the worker moves bytes, keeps
the clocks and carries out what a state asks for:

* open sessions are read from, except while their unsent output is over the
  bound (L12 backpressure);
* a CLOSING session's output is sent, then the sending side is shut down and
  the session is ``flushed`` (CLOSED); the socket lingers, discarding input,
  until the client closes or the drain time passes (L13);
* a CLOSING session that cannot be flushed within the drain time is aborted.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from server.logs import LOGGER_NAME, escape
from server.poller import ERROR as _ERROR
from server.poller import READ as _READ
from server.poller import WRITE as _WRITE
from server.poller import Poller
from statemachine.machine import CLOSED, CLOSING
from statemachine.session import ERROR_BUSY, Session

if TYPE_CHECKING:
    from server.app import Server

READ_SIZE = 65536
_BUSY_LINE = ERROR_BUSY.encode() + b"\n"
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
# On shutdown, read at most this much more from a socket before the notice.
_SHUTDOWN_READS = 64
# Connections accepted per wake-up before the connections' own events get a turn.
_ACCEPT_BATCH = 64
# accept() errors that mean "out of a resource": stop polling the listener for
# a moment (or until this worker frees a descriptor) instead of spinning.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_PAUSE = 0.1

log = logging.getLogger(LOGGER_NAME)


class Conn:
    """One socket owned by a worker; ``session`` is None for a refused (busy) socket."""

    __slots__ = ("closing_since", "eof", "fd", "linger_until", "mask", "out", "peer", "session", "sock", "timer_at")

    def __init__(self, sock: socket.socket, peer: object, session: Session | None) -> None:
        self.sock: socket.socket | None = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.session = session
        self.out = bytearray()
        self.mask = 0
        self.eof = False
        self.closing_since: float | None = None
        self.linger_until: float | None = None
        self.timer_at: float | None = None


class Worker(threading.Thread):
    """One event loop; see the module docstring."""

    def __init__(self, index: int, server: Server) -> None:
        super().__init__(name=f"upperecho-worker-{index}", daemon=True)
        self.server = server
        self.limits = server.config.limits
        self.drain = server.config.drain_timeout
        self.output_limit = server.config.output_limit
        self._reply_per_byte = self.limits.reply_per_byte
        self.texts = server.texts
        self.poller = Poller()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_fd = self._wake_r.fileno()
        self.poller.register(self._wake_fd, _READ)
        self._listener: socket.socket | None = None
        self._listen_fd = -1
        self._listen_mask = 0
        # Set while accepting is paused for want of descriptors (the listener is
        # then out of the poller); None while accepting, and after shutdown.
        self._accept_resume_at: float | None = None
        #: set once this worker will not call accept() again (shutdown, or the loop ended)
        self.not_accepting = threading.Event()
        self._stop_requested = False
        self._stopping = False
        self._hard_deadline: float | None = None
        self.conns: dict[int, Conn] = {}
        self._timers: list[tuple[float, int, Conn]] = []
        self._seq = itertools.count()
        self._log_info = log.isEnabledFor(logging.INFO)
        self._on_message = self._log_message if self._log_info else None

    # -- called from other threads --------------------------------------------

    def listen(self, listener: socket.socket, exclusive: bool) -> None:
        """Accept from ``listener`` (non-blocking); ``exclusive``: one wake-up per connection among workers."""
        self._listener = listener
        self._listen_fd = listener.fileno()
        self._listen_mask = _READ | (self.poller.EXCLUSIVE if exclusive else 0)
        self.poller.register(self._listen_fd, self._listen_mask)

    def request_stop(self) -> None:
        self._stop_requested = True
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:
            pass  # already full of wake-ups

    # -- the loop -------------------------------------------------------------

    def run(self) -> None:
        poll = self.poller.poll
        conns = self.conns
        wake_fd = self._wake_fd
        listen_fd = self._listen_fd
        monotonic = time.monotonic
        readable = _READ | _ERROR
        writable = _WRITE | _ERROR
        try:
            while True:
                events = poll(self._next_timeout())
                now = monotonic()
                for fd, mask in events:
                    conn = conns.get(fd)
                    if conn is None:
                        if fd == listen_fd:
                            self._accept(now)
                        elif fd == wake_fd:
                            self._on_wake(now)
                        continue  # or closed earlier in this round
                    if mask & readable:
                        self._on_readable(conn, now)
                    if mask & writable and conn.out and conn.sock is not None:
                        self._on_writable(conn, now)
                if self._timers and self._timers[0][0] <= now:
                    self._run_timers(now)
                if self._accept_resume_at is not None and now >= self._accept_resume_at:
                    self._resume_accepting()
                if self._stopping and (not self.conns or now >= self._hard_deadline):
                    break
        except Exception:
            log.exception("worker %s failed", self.name)
            raise
        finally:
            self.not_accepting.set()
            for conn in list(self.conns.values()):
                self._abort(conn)
            self.poller.close()
            self._wake_r.close()
            self._wake_w.close()

    def _next_timeout(self) -> float | None:
        deadlines = []
        if self._timers:
            deadlines.append(self._timers[0][0])
        if self._stopping:
            deadlines.append(self._hard_deadline)
        if self._accept_resume_at is not None:
            deadlines.append(self._accept_resume_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _on_wake(self, now: float) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        if self._stop_requested and not self._stopping:
            self._begin_shutdown(now)

    # -- accepting ------------------------------------------------------------

    def _accept(self, now: float) -> None:
        accept = self._listener.accept
        admit = self.server.admit
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, peer = accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker took it, or the backlog is empty
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._pause_accepting(exc, now)
                    return
                continue  # the client gave up before we accepted (ECONNABORTED, ...)
            self._adopt(sock, peer, admit(peer), now)

    def _pause_accepting(self, exc: OSError, now: float) -> None:
        self.server.accept_failed(exc)
        self.poller.unregister(self._listen_fd)
        self._accept_resume_at = now + _ACCEPT_PAUSE

    def _resume_accepting(self) -> None:
        self._accept_resume_at = None
        self.poller.register(self._listen_fd, self._listen_mask)

    def _adopt(self, sock: socket.socket, peer: object, admitted: bool, now: float) -> None:
        sock.setblocking(False)
        if not admitted:  # L10: the busy line, then a lingering close; no session
            conn = Conn(sock, peer, None)
            self.conns[conn.fd] = conn
            conn.linger_until = now + self.drain
            self._schedule(conn, conn.linger_until)
            self._send(conn, _BUSY_LINE)
            if conn.sock is not None and not conn.out:
                self._linger(conn, now)
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (tests may hand a socketpair) or already reset
        conn = Conn(sock, peer, Session(self.limits, now, self._on_message))
        self.conns[conn.fd] = conn
        if self._log_info:
            log.info(self.texts.connected.format(peer=peer))
        self._interest(conn)
        deadline = conn.session.next_deadline()
        if deadline is not None:
            self._schedule(conn, deadline)
        if self._stopping:
            self._shutdown_session(conn, now)

    # -- reading --------------------------------------------------------------

    def _read_size(self, conn: Conn) -> int:
        """A read whose replies, however large, keep the unsent output within the bound (L12)."""
        return min(READ_SIZE, max(1, (self.output_limit - len(conn.out)) // self._reply_per_byte))

    def _on_readable(self, conn: Conn, now: float) -> None:
        try:
            data = conn.sock.recv(self._read_size(conn))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort(conn)
            return
        session = conn.session
        if session is None or session.state == CLOSED:
            if not data:  # the client finished; the lingering close is done
                self._close(conn)
            return
        if self._feed(conn, session, data, now) and session.state == CLOSING:
            self._on_closing(conn, now)

    def _feed(self, conn: Conn, session: Session, data: bytes, now: float) -> bool:
        """Give the session what was read (``b""``: end of stream) and send its answer.

        Returns False when the connection is gone (a write error aborted it)."""
        if data:
            out = session.receive(data, now)
            started = session.line_started
            if started is not None and (conn.timer_at is None or started < conn.timer_at):
                deadline = session.line_deadline()  # L14: may come before the timer set so far
                if deadline is not None:
                    self._schedule(conn, deadline)
        else:
            conn.eof = True
            out = session.end_of_stream()
        if out:
            self._send(conn, out)
        return conn.sock is not None

    def _log_message(self, text: str, reply: str) -> None:
        log.info(self.texts.received.format(text=escape(text)))
        log.info(self.texts.replied.format(text=escape(reply)))

    # -- writing --------------------------------------------------------------

    def _send(self, conn: Conn, data: bytes) -> None:
        if not conn.out:
            try:
                sent = conn.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._abort(conn)
                return
            if sent == len(data):
                return
            conn.out += memoryview(data)[sent:]
        else:
            conn.out += data
        self._interest(conn)

    def _on_writable(self, conn: Conn, now: float) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort(conn)
            return
        del conn.out[:sent]
        session = conn.session
        if not conn.out and (session is None or session.state == CLOSING):
            if session is None:
                self._linger(conn, now)
            else:
                self._finish(conn, now)
            return
        self._interest(conn)

    def _interest(self, conn: Conn) -> None:
        """Register what the connection waits for: input unless paused or ended, output if any."""
        session = conn.session
        paused = session is not None and session.is_open and len(conn.out) > self.output_limit
        mask = (0 if paused or conn.eof else _READ) | (_WRITE if conn.out else 0)
        if mask == conn.mask:
            return
        if conn.mask == 0:
            self.poller.register(conn.fd, mask)
        elif mask == 0:
            self.poller.unregister(conn.fd)
        else:
            self.poller.modify(conn.fd, mask)
        conn.mask = mask

    # -- closing --------------------------------------------------------------

    def _on_closing(self, conn: Conn, now: float) -> None:
        """The session entered CLOSING: flush, or wait for the output to drain."""
        session = conn.session
        if conn.closing_since is None:
            conn.closing_since = now
            if session.reason == "disconnect" and self._log_info:
                log.info(self.texts.disconnect.format(peer=conn.peer))
            self._schedule(conn, now + self.drain)
        if conn.out:
            self._interest(conn)
        else:
            self._finish(conn, now)

    def _finish(self, conn: Conn, now: float) -> None:
        """All replies handed to the network: shut down sending, session CLOSED, linger."""
        conn.session.flushed()
        self.server.session_ended()
        if self._log_info:
            log.info(self.texts.closed.format(peer=conn.peer, reason=conn.session.reason))
        self._linger(conn, now)

    def _linger(self, conn: Conn, now: float) -> None:
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is already gone
        if conn.eof:
            self._close(conn)
            return
        conn.linger_until = now + self.drain
        self._interest(conn)
        self._schedule(conn, conn.linger_until)

    def _abort(self, conn: Conn) -> None:
        """Reset the connection: write error, client reset, or drain time exceeded."""
        session = conn.session
        if session is not None and session.state != CLOSED:
            session.abort()
            self.server.session_ended()
            if self._log_info:
                log.info(self.texts.closed.format(peer=conn.peer, reason="abort"))
        if conn.sock is not None:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            except OSError:
                pass
        self._close(conn)

    def _close(self, conn: Conn) -> None:
        sock = conn.sock
        if sock is None:
            return
        if conn.mask:
            self.poller.forget(conn.fd)
            conn.mask = 0
        conn.sock = None
        conn.out = bytearray()
        del self.conns[conn.fd]
        sock.close()
        if self._accept_resume_at is not None:
            self._accept_resume_at = 0.0  # a descriptor is free: try accepting again now

    # -- timers (idle timeout, drain time, lingering) -------------------------

    def _schedule(self, conn: Conn, when: float) -> None:
        if conn.timer_at is None or when < conn.timer_at:
            conn.timer_at = when
            timers = self._timers
            if len(timers) > 2 * len(self.conns) + 64:
                self._drop_dead_timers()
            heapq.heappush(timers, (when, next(self._seq), conn))

    def _drop_dead_timers(self) -> None:
        """Forget the entries of closed or rescheduled connections.

        A dead entry is otherwise kept until its deadline: with the idle
        timeout's 300 s, every short session would stay in memory for
        minutes.  Filtering in place keeps ``_run_timers``' reference valid.
        """
        timers = self._timers
        timers[:] = [entry for entry in timers if entry[2].sock is not None and entry[2].timer_at == entry[0]]
        heapq.heapify(timers)

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, conn = heapq.heappop(timers)
            if conn.sock is None or conn.timer_at != when:
                continue  # closed, or superseded by an earlier deadline
            conn.timer_at = None
            self._on_timer(conn, now)

    def _on_timer(self, conn: Conn, now: float) -> None:
        session = conn.session
        if conn.linger_until is not None:
            deadline = conn.linger_until
            expire = self._close
        elif session is not None and session.state == CLOSING:
            deadline = conn.closing_since + self.drain
            expire = self._abort
        elif session is not None and session.is_open:
            deadline = session.next_deadline()
            if deadline is None:
                return
            if deadline <= now:
                self._send(conn, session.check_deadlines(now))
                if conn.sock is not None:
                    self._on_closing(conn, now)
                return
            self._schedule(conn, deadline)
            return
        else:
            return
        if deadline <= now:
            expire(conn)
        else:
            self._schedule(conn, deadline)

    # -- shutdown (L11) -------------------------------------------------------

    def _begin_shutdown(self, now: float) -> None:
        self._stopping = True
        if self._accept_resume_at is None:  # L11: stop accepting; the server then closes the listener
            self.poller.unregister(self._listen_fd)
        self._accept_resume_at = None
        self.not_accepting.set()
        self._hard_deadline = now + self.drain
        for conn in list(self.conns.values()):
            if conn.sock is not None and conn.session is not None and conn.session.is_open:
                self._shutdown_session(conn, now)

    def _shutdown_session(self, conn: Conn, now: float) -> None:
        """Answer every complete message already received, then send the notice."""
        session = conn.session
        for _ in range(_SHUTDOWN_READS):
            if conn.eof or not session.is_open or len(conn.out) > self.output_limit:
                break  # a client over the L12 bound is not read from, even now
            try:
                data = conn.sock.recv(self._read_size(conn))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._abort(conn)
                return
            if not self._feed(conn, session, data, now):
                return
        if session.is_open:
            self._send(conn, session.shutdown())
            if conn.sock is None:
                return
        if session.state == CLOSING:
            self._on_closing(conn, now)
