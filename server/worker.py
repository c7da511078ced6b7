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
* a CLOSING session that cannot be flushed within the drain time is aborted;
* with the PROXY protocol on (O2): a connection from outside ``--proxy-from``
  is closed at accept, with no session; a session refused in PROXY_HEADER
  (bad, cut, slow or missing header) is closed at once with nothing sent; once
  the header is read, its source is the connection's peer
  (:meth:`Worker._client_identified`).

With TLS (O6) a connection's ``sock`` is a :class:`server.tls.TlsTransport`
that looks like the socket; the session starts in HANDSHAKE and the worker
drives the handshake until it is done, fails, or passes its deadline.

Fairness (L16): each turn of the loop does a bounded amount of work per ready
connection: at most one read (of at most ``READ_SIZE`` bytes) and one send,
also while draining on shutdown, and at most ``_ACCEPT_BATCH`` accepts.
"""

from __future__ import annotations

import errno
import functools
import heapq
import ipaddress
import itertools
import logging
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from server.logs import LOGGER_NAME, escape
from server.metrics import Counters
from server.poller import ERROR as _ERROR
from server.poller import READ as _READ
from server.poller import WRITE as _WRITE
from server.poller import Poller
from statemachine.machine import CLOSED, CLOSING, HANDSHAKE
from statemachine.proxy import ProxyHeader
from statemachine.session import ERROR_BUSY, PROXY_OFF, Session
from statemachine.text import is_disconnect

if TYPE_CHECKING:
    from server.app import Server

READ_SIZE = 65536
_BUSY = ERROR_BUSY.encode()
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
# On shutdown, read at most this many more times from a socket (one a turn) before the notice.
_SHUTDOWN_READS = 64
# Connections accepted per wake-up before the connections' own events get a turn.
_ACCEPT_BATCH = 64
# accept() errors that mean "out of a resource": stop polling the listener for
# a moment (or until this worker frees a descriptor) instead of spinning.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_PAUSE = 0.1
# Session ids for the logs, unique in the process (next() on a count is atomic).
_SESSION_IDS = itertools.count(1)
#: Refused connections (L10, L15) a worker lets linger at once, each for at most
#: REFUSED_LINGER seconds (or the drain time, if shorter) so that a client which
#: had already sent something still reads its refusal line rather than a reset.
#: Past this many, a refusal is closed as soon as its line is sent: a flood of
#: refused connections cannot hold more descriptors than this (docs/reliability.md).
REFUSED_LINGERING = 64
REFUSED_LINGER = 2.0
#: Closed sessions a worker lets linger at once (L13), each for at most the drain
#: time.  A client that says DESCONEXION and never closes would otherwise hold a
#: descriptor for the drain time outside --max-connections, and a fast enough
#: loop of such clients could run the server out of descriptors.  Past this many,
#: the one that has lingered longest is closed: it has had the most time to read.
CLOSED_LINGERING = 1024

log = logging.getLogger(LOGGER_NAME)


class _AddressRefused(Exception):
    """Raised from the PROXY header hook when the header's address is over its L15 limit."""

    def __init__(self, line: bytes) -> None:
        super().__init__(line.decode().strip())
        self.line = line


class Conn:
    """One socket owned by a worker; ``session`` is None for a refused (busy) socket."""

    __slots__ = (
        "addressed",
        "closing_since",
        "eof",
        "fd",
        "linger_until",
        "mask",
        "opened",
        "out",
        "peer",
        "session",
        "sid",
        "sock",
        "timer_at",
    )

    def __init__(self, sock: socket.socket, peer: object, session: Session | None) -> None:
        self.sock: socket.socket | None = sock
        #: the session holds a place under its address's L15 limit (behind a PROXY header: once it is read)
        self.addressed = True
        self.fd = sock.fileno()
        self.peer = peer
        self.session = session
        self.out = bytearray()
        self.mask = 0
        self.eof = False
        self.closing_since: float | None = None
        self.linger_until: float | None = None
        self.timer_at: float | None = None
        self.opened = 0.0
        self.sid: int | None = None

    def held_output(self) -> bool:
        """Output the worker's queue does not show but that waits for write readiness (TLS)."""
        return False


class TlsConn(Conn):
    """A connection whose ``sock`` is a TLS transport (:mod:`server.tls`)."""

    __slots__ = ()

    def held_output(self) -> bool:
        return self.sock is not None and self.sock.unsent


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
        self.tls = server.tls  # None, or what wraps an accepted socket in TLS
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
        # sessions being drained on shutdown: fd -> reads done; each gets one read a turn
        self._draining: dict[int, int] = {}
        self._refused_linger = min(self.drain, REFUSED_LINGER)
        self._refused_lingering = 0  # refused connections now in self.conns
        self._closed_lingering: dict[Conn, None] = {}  # closed sessions lingering, oldest first
        self._timers: list[tuple[float, int, Conn]] = []
        self._seq = itertools.count()
        self._log_info = log.isEnabledFor(logging.INFO)
        #: this loop's counts for ``--metrics`` (None when off: nothing is counted)
        self.counters = Counters() if server.config.metrics else None
        # The text transcript is the seed's (S4): no reply line and no closed line for the
        # disconnect word, whose request line says it all.  JSON logs are for machines: every event.
        self._every_event = server.config.log_format == "json"
        # O2: the sources allowed to send a PROXY header; None when the protocol is off
        self._proxy_from = server.config.proxy_from if self.limits.proxy != PROXY_OFF else None

    # -- called from other threads --------------------------------------------

    def listen(self, listener: socket.socket, exclusive: bool) -> None:
        """Accept from ``listener`` (non-blocking); ``exclusive``: one wake-up per connection among workers."""
        self._listener = listener
        self._listen_fd = listener.fileno()
        self._listen_mask = _READ | (self.poller.EXCLUSIVE if exclusive else 0)
        self.poller.register(self._listen_fd, self._listen_mask)
        if self.is_alive():  # a plain poll() sees the new descriptor only on its next call
            self._wake()

    def request_stop(self) -> None:
        self._stop_requested = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # already full of wake-ups, or the loop has ended (and closed it)

    # -- the loop -------------------------------------------------------------

    def run(self) -> None:
        poll = self.poller.poll
        conns = self.conns
        wake_fd = self._wake_fd
        monotonic = time.monotonic
        readable = _READ | _ERROR
        writable = _WRITE | _ERROR
        counters = self.counters
        answered = 0
        draining = self._draining  # read by _drain_turn instead, one read a turn
        try:
            while True:
                events = poll(self._next_timeout())
                now = monotonic()
                if counters is not None:
                    answered = counters.messages
                for fd, mask in events:
                    conn = conns.get(fd)
                    if conn is None:
                        if fd == self._listen_fd:  # set by listen(), maybe after the loop began
                            self._accept(now)
                        elif fd == wake_fd:
                            self._on_wake(now)
                        continue  # or closed earlier in this round
                    if mask & readable and fd not in draining:
                        self._on_readable(conn, now)
                    if mask & writable and (conn.out or conn.held_output()) and conn.sock is not None:
                        self._on_writable(conn, now)
                if counters is not None and counters.messages != answered:
                    counters.answered(counters.messages - answered, now)
                if draining:
                    self._drain_turn(now)
                if self._timers and self._timers[0][0] <= now:
                    self._run_timers(now)
                if self._accept_resume_at is not None and now >= self._accept_resume_at:
                    self._resume_accepting()
                if self._stopping and (not self.conns or now >= self._hard_deadline):
                    break
        except Exception as exc:  # reported by the server, which then stops (S7)
            self.server.worker_failed(self, exc)
        finally:
            self.not_accepting.set()
            try:
                self._release()
            except Exception as exc:  # a thread must not end on a traceback (S7)
                self.server.worker_failed(self, exc)

    def _release(self) -> None:
        """The loop has ended: reset what is still open and free the worker's own descriptors."""
        for conn in list(self.conns.values()):
            self._abort(conn)
        self.poller.close()
        self._wake_r.close()
        self._wake_w.close()

    def _next_timeout(self) -> float | None:
        if self._draining:
            return 0.0  # more draining to do next turn
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
            if len(peer) > 2:  # IPv6: (host, port, flowinfo, scope_id)
                peer = plain_peer(peer)
            if self._proxy_from is not None and not _allowed(peer, self._proxy_from):
                sock.close()  # O2: no session, nothing sent
                self.server.proxy_refused(peer, "the address is not in --proxy-from")
                if self.counters is not None:
                    self.counters.refuse("proxy")
                continue
            self._adopt(sock, peer, admit(peer, self._proxy_from is None), now)

    def _pause_accepting(self, exc: OSError, now: float) -> None:
        self.server.accept_failed(exc)
        self.poller.unregister(self._listen_fd)
        self._accept_resume_at = now + _ACCEPT_PAUSE

    def _resume_accepting(self) -> None:
        self._accept_resume_at = None
        self.poller.register(self._listen_fd, self._listen_mask)

    def _adopt(self, sock: socket.socket, peer: object, refusal: bytes | None, now: float) -> None:
        sock.setblocking(False)
        if refusal is not None:  # L10, L15: the refusal line, then a short lingering close; no session
            if self.counters is not None:
                self.counters.refuse("busy" if refusal.startswith(_BUSY) else "per_address")
            if self.tls is not None:  # a TLS client could not read a plain line: it only sees the close
                refusal = b""
            if self._refused_lingering >= REFUSED_LINGERING:
                self._refuse_at_once(sock, refusal)
                return
            conn = Conn(sock, peer, None)
            self.conns[conn.fd] = conn
            self._refused_lingering += 1
            conn.linger_until = now + self._refused_linger
            self._schedule(conn, conn.linger_until)
            self._send(conn, refusal)
            if conn.sock is not None and not conn.out:
                self._linger(conn, now)
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (tests may hand a socketpair) or already reset
        if self.tls is not None:
            self._adopt_tls(sock, peer, now)
            return
        if self._proxy_from is None:
            conn = self._open(Conn(sock, peer, None), now)
            if self._log_info:
                log.info(self.texts.connected.format(peer=peer), extra=_fields(conn, "connected"))
            deadline = conn.session.next_deadline()
        else:  # O2: the client is named when its header is read, and counted under L15 then
            conn = Conn(sock, peer, None)
            conn.addressed = False
            self._open(conn, now, on_header=lambda header: self._client_identified(conn, header))
            deadline = conn.session.header_deadline()
        self._interest(conn)
        if deadline is not None:
            self._schedule(conn, deadline)
        if self._stopping:
            self._shutdown_session(conn, now)

    def _open(self, conn: Conn, now: float, start: str | None = None, on_header: object = None) -> Conn:
        """Give ``conn`` its session (in ``start``, an entry state) and count it opened."""
        hook = functools.partial(self._log_message, conn) if self._log_info else None
        conn.session = Session(self.limits, now, hook, on_header, start=start)
        conn.opened = now
        conn.sid = next(_SESSION_IDS)
        self.conns[conn.fd] = conn
        if self.counters is not None:
            self.counters.opened += 1
        return conn

    @staticmethod
    def _refuse_at_once(sock: socket.socket, refusal: bytes) -> None:
        """Past the lingering cap: the line and the end of the stream, then the descriptor is freed."""
        try:
            sock.send(refusal)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client is already gone, or its buffer is full: it loses the line, not the server
        sock.close()

    # -- reading --------------------------------------------------------------

    def _read_size(self, conn: Conn) -> int:
        """A read whose replies, however large, keep the unsent output within the bound (L12)."""
        return min(READ_SIZE, max(1, (self.output_limit - len(conn.out)) // self._reply_per_byte))

    def _on_readable(self, conn: Conn, now: float) -> None:
        session = conn.session
        if session is not None and session.state == HANDSHAKE:
            self._handshake(conn, now)
            return
        try:
            data = conn.sock.recv(self._read_size(conn))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort(conn)
            return
        if session is None or session.state == CLOSED:
            if not data:  # the client finished; the lingering close is done
                self._close(conn)
            return
        if self._feed(conn, session, data, now):
            if session.state == CLOSING:
                self._on_closing(conn, now)
            elif session.reason == "proxy_rejected":
                self._refuse_header(conn)

    def _feed(self, conn: Conn, session: Session, data: bytes, now: float) -> bool:
        """Give the session what was read (``b""``: end of stream) and send its answer.

        Returns False when the connection is gone (a write error aborted it)."""
        messages = session.messages
        if data:
            try:
                out = session.receive(data, now)
            except _AddressRefused as refused:
                self._refuse_address(conn, refused.line)
                return False
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
        counters = self.counters
        if counters is not None:
            counters.bytes_in += len(data)
            counters.messages += session.messages - messages
        return conn.sock is not None

    def _log_message(self, conn: Conn, text: str, reply: str) -> None:
        shown = escape(text)
        log.info(self.texts.received.format(text=shown), extra=_fields(conn, "received", text=shown))
        if self._every_event or not is_disconnect(text):  # the transcript logs the word's request instead (S4)
            shown = escape(reply)
            log.info(self.texts.replied.format(text=shown), extra=_fields(conn, "replied", text=shown))

    # -- the PROXY protocol header (O2) -----------------------------------------

    def _client_identified(self, conn: Conn, header: ProxyHeader) -> None:
        """The PROXY header is read: from here on the client is the address it names.

        Called by the session before it answers the bytes after the header, so the
        transcript names the client before its first message.  The per-address
        limit (L15) counts the client from here, not from the accept.
        A header naming no address (v2 LOCAL, v1 UNKNOWN) keeps the socket's peer.
        """
        if header.source is not None:
            conn.peer = header.source
        refusal = self.server.claim_address(conn.peer)
        if refusal is not None:
            raise _AddressRefused(refusal)  # before the bytes after the header are answered
        conn.addressed = True
        if self._log_info:
            log.info(self.texts.connected.format(peer=conn.peer), extra=_fields(conn, "connected"))

    def _refuse_address(self, conn: Conn, refusal: bytes) -> None:
        """L15 by the PROXY header's address: the refusal line, the end of the stream, and the close."""
        conn.session.abort()
        self.server.session_ended(conn.peer, conn.addressed)
        if self.counters is not None:
            self.counters.refuse("per_address")
        try:
            conn.sock.send(refusal)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client is already gone: it loses the line, not the server
        self._close(conn)

    def _refuse_header(self, conn: Conn) -> None:
        """The session refused its header (``proxy_rejected``): close now, nothing sent; one line, counted."""
        self.server.session_ended(conn.peer, conn.addressed)
        self.server.proxy_refused(conn.peer, conn.session.proxy_error)
        if self.counters is not None:
            self.counters.refuse("proxy")
            self.counters.session_closed(conn.session.reason, time.monotonic() - conn.opened)
        self._close(conn)

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
            if self.counters is not None:
                self.counters.bytes_out += sent
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
        if self.counters is not None:
            self.counters.bytes_out += sent
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
        mask = (0 if paused or conn.eof else _READ) | (_WRITE if conn.out or conn.held_output() else 0)
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
                log.info(self.texts.disconnect.format(peer=conn.peer), extra=_fields(conn, "disconnect"))
            self._schedule(conn, now + self.drain)
        if conn.out:
            self._interest(conn)
        else:
            self._finish(conn, now)

    def _finish(self, conn: Conn, now: float) -> None:
        """All replies handed to the network: shut down sending, session CLOSED, linger."""
        conn.session.flushed()
        self.server.session_ended(conn.peer, conn.addressed)
        if self.counters is not None:
            self.counters.session_closed(conn.session.reason, now - conn.opened)
        if self._log_info and (self._every_event or conn.session.reason != "disconnect"):  # said already (S4)
            log.info(self.texts.closed_line(conn.peer, conn.session.reason), extra=_fields(conn, "closed"))
        self._linger(conn, now)

    def _linger(self, conn: Conn, now: float) -> None:
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is already gone
        if conn.eof:
            self._close(conn)
            return
        conn.linger_until = now + (self.drain if conn.session is not None else self._refused_linger)
        self._interest(conn)
        self._schedule(conn, conn.linger_until)
        if conn.session is not None:
            lingering = self._closed_lingering
            lingering[conn] = None
            if len(lingering) > CLOSED_LINGERING:
                self._close(next(iter(lingering)))

    def _abort(self, conn: Conn) -> None:
        """Reset the connection: write error, client reset, or drain time exceeded."""
        session = conn.session
        if session is not None and session.state != CLOSED:
            session.abort()
            self.server.session_ended(conn.peer, conn.addressed)
            if self.counters is not None:
                self.counters.session_closed(session.reason, time.monotonic() - conn.opened)
            if self._log_info:
                log.info(self.texts.closed_line(conn.peer, "abort"), extra=_fields(conn, "closed"))
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
        if conn.session is None:
            self._refused_lingering -= 1
        elif conn.linger_until is not None:
            self._closed_lingering.pop(conn, None)
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
        elif session is not None and session.state == HANDSHAKE:
            if session.check_handshake(now):
                self._handshake_failed(conn, "timeout")
            else:
                self._schedule(conn, session.handshake_deadline())
            return
        elif session is not None and session.awaiting_header:
            deadline = session.header_deadline()
            if deadline <= now:
                session.check_header(now)
                self._refuse_header(conn)
            else:
                self._schedule(conn, deadline)
            return
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
            session = conn.session
            if conn.sock is not None and session is not None and (session.is_open or session.awaiting_header):
                self._shutdown_session(conn, now)
            elif conn.sock is not None and conn.session is not None and conn.session.state == HANDSHAKE:
                conn.session.shutdown()
                self._handshake_failed(conn, "server shutting down")

    def _shutdown_session(self, conn: Conn, now: float) -> None:
        """Answer every complete message already received, then send the notice.

        The session is read from once a turn beside the others (L16) until
        nothing more is waiting, it is over the L12 bound, or it has had
        ``_SHUTDOWN_READS`` reads; then it gets the notice.
        """
        self._draining[conn.fd] = 0

    def _drain_turn(self, now: float) -> None:
        draining = self._draining
        for fd, reads in list(draining.items()):
            conn = self.conns.get(fd)
            if conn is None or conn.session is None:
                del draining[fd]  # closed meanwhile (a write error, a reset)
                continue
            if self._drain_read(conn, reads, now):
                draining[fd] = reads + 1
            else:
                del draining[fd]
                self._notify_shutdown(conn, now)

    def _drain_read(self, conn: Conn, reads: int, now: float) -> bool:
        """One read of a draining session; False when it is done reading."""
        session = conn.session
        reading = session.is_open or session.awaiting_header
        if reads >= _SHUTDOWN_READS or conn.eof or not reading or len(conn.out) > self.output_limit:
            return False  # a client over the L12 bound is not read from, even now
        try:
            data = conn.sock.recv(self._read_size(conn))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._abort(conn)
            return False
        return self._feed(conn, session, data, now)

    def _notify_shutdown(self, conn: Conn, now: float) -> None:
        if conn.sock is None:
            return
        session = conn.session
        if session.awaiting_header:  # O2: still no header; refused with nothing sent
            session.shutdown()
        if session.reason == "proxy_rejected":
            self._refuse_header(conn)
            return
        if session.is_open:
            self._send(conn, session.shutdown())
            if conn.sock is None:
                return
        if session.state == CLOSING:
            self._on_closing(conn, now)

    # -- the TLS handshake (O6) -----------------------------------------------

    def _adopt_tls(self, sock: socket.socket, peer: object, now: float) -> None:
        """A TLS session starts in HANDSHAKE; it says nothing and logs nothing until the handshake ends."""
        conn = self._open(TlsConn(self.tls.wrap(sock), peer, None), now, HANDSHAKE)
        self._interest(conn)
        self._schedule(conn, conn.session.handshake_deadline())

    def _handshake(self, conn: Conn, now: float) -> None:
        """One read of the handshake; when it completes, the session starts and takes what came with it."""
        session = conn.session
        try:
            done = conn.sock.handshake(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._handshake_failed(conn, exc.strerror.lower() if exc.strerror else str(exc))
            return
        if not done:
            self._interest(conn)
            return
        session.handshake_done(now)
        if self._log_info:
            log.info(self.texts.connected.format(peer=conn.peer), extra=_fields(conn, "connected"))
        deadline = session.next_deadline()
        if deadline is not None:
            self._schedule(conn, deadline)
        self._interest(conn)
        try:
            data = conn.sock.buffered()
        except OSError:
            self._abort(conn)
            return
        if data is not None and self._feed(conn, session, data, now) and session.state == CLOSING:
            self._on_closing(conn, now)

    def _handshake_failed(self, conn: Conn, why: str) -> None:
        """Closed with nothing sent, one line, one count; no other session is touched."""
        session = conn.session
        if session.state == HANDSHAKE:
            session.handshake_failed()
        self.server.session_ended(conn.peer, conn.addressed)
        self.server.refused("tls")
        if self.counters is not None:
            self.counters.refuse("tls")
            self.counters.session_closed(session.reason, time.monotonic() - conn.opened)
        if self._log_info:
            log.info(self.texts.tls_failed.format(peer=conn.peer, reason=why), extra=_fields(conn, "tls_failed"))
        self._close(conn)


def plain_peer(peer: tuple) -> tuple[str, int]:
    """An IPv6 peer as ``(host, port)`` like an IPv4 one; an IPv4 client of a dual-stack socket by its IPv4 address."""
    host = peer[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (host, peer[1])


def _fields(conn: Conn, event: str, **more: str) -> dict[str, object]:
    """The structured fields of a log line about ``conn`` (``--log-format json``)."""
    session = conn.session
    return {
        "event": event,
        "peer": conn.peer,
        "session": conn.sid,
        "state": session.state if session is not None else None,
        "reason": session.reason if session is not None else None,
        **more,
    }


def _allowed(peer: object, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    """O2: may this socket peer send a PROXY header (is it in ``--proxy-from``)?"""
    try:
        address = ipaddress.ip_address(peer[0])
    except (TypeError, ValueError, IndexError):
        return False  # not an IP peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 client on a dual-stack socket
    return any(address in network for network in networks)
