"""The server: a listening socket, a fixed pool of workers, and the main thread for signals.

Each worker polls the listening socket beside its connections and accepts for
itself, as nginx's workers do: a new connection costs no hand-over between
threads and no extra wake-up.  With several workers the listener is
registered with ``EPOLLEXCLUSIVE``, so one connection wakes one worker.  The
thread count is ``2 + workers`` (with the console writer of :mod:`server.logs`)
however many clients there are (S1).  The main
thread only waits for signals: the first SIGINT/SIGTERM starts a graceful
shutdown (L11), a second one exits at once.  A worker that fails wakes it too:
the server says why in one line and shuts down with a non-zero status, so no
listening socket is left that nobody serves (S7).

What is shared between workers lives here, under locks: the count of live
sessions (L10) and of live sessions per client address (L15), and the rate of
the console's busy and out-of-descriptor warnings.  In a process under
``--processes`` both counts are the whole server's, kept in the table of
:mod:`server.sharing`.  Admission is one call,
``admit(peer)`` when a connection arrives and ``session_ended(peer)`` when its
session ends, keyed by the client's host (:func:`address_key`), so whatever
decides which address a client has (the socket's peer today) changes one place.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
import signal
import socket
import threading
import time

from server import logs
from server.config import Config
from server.logs import LOGGER_NAME, escape
from server.messages import texts
from server.sharing import BUSY, SharedLimit
from server.tls import TlsServer, TlsSetupError, server_context
from server.worker import CLOSED_LINGERING, REFUSED_LINGERING, Worker
from statemachine.session import ERROR_BUSY

log = logging.getLogger(LOGGER_NAME)

# Refusal warnings (busy, per address, PROXY): a burst of this many lines, then
# one more per second at most, each kind on its own; the refusals not logged are
# counted in the next line (a flood must not push everyone else's lines out of
# the console's bounded backlog, S6).
_REFUSED_BURST = 10
_REFUSED_PER_SECOND = 1.0
# At exit the console gets what is left of the drain time to write its backlog,
# but at least this long (S6).
_CONSOLE_GRACE = 0.5
# Descriptors the process needs besides its connections (stdio, selectors, wake-ups).
_FD_RESERVE = 64
# "Cannot accept" warnings: one per stretch of failures, and of those at most a
# burst of this many, then one a minute; a line says how many were not logged.
# (Closing and reopening at the descriptor limit fails anew after every success.)
_EXHAUSTED_BURST = 3
_EXHAUSTED_PER_SECOND = 1 / 60


#: What a refused connection is told (L10, L15); the worker sends it and closes.
BUSY_LINE = ERROR_BUSY.encode() + b"\n"
TOO_MANY_LINE = b"error: too many connections from your address\n"


def address_key(peer: object) -> object:
    """The part of a peer address that L15 counts by: the host, without the port."""
    return peer[0] if isinstance(peer, tuple) else peer


def dual_stack(sock: socket.socket) -> None:
    """O7: an IPv6 socket also serves IPv4 clients (as ``::ffff:a.b.c.d``) where the OS allows it."""
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except (OSError, AttributeError):
        pass  # IPv6 only here: IPv4 clients need a server of their own


class LineBudget:
    """How many lines of one kind of warning may be written: a burst, then ``per_second``.

    A token bucket that counts the lines it held back; the caller holds its lock.
    """

    def __init__(self, burst: int, per_second: float) -> None:
        self.burst = float(burst)
        self.per_second = per_second
        self.tokens = float(burst)
        self.refilled = time.monotonic()
        self.held_back = 0

    def spend(self, now: float) -> int | None:
        """None when this line is held back (it is counted); else how many were held back before it."""
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.per_second)
        self.refilled = now
        if self.tokens < 1.0:
            self.held_back += 1
            return None
        self.tokens -= 1.0
        return self.take_held_back()

    def take_held_back(self) -> int:
        """The lines held back since the last one written, counted once."""
        held, self.held_back = self.held_back, 0
        return held


class StartError(Exception):
    """The server cannot start (port in use, no permission, ...): one clear line."""


def open_listener(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking listening socket on ``host:port``, or :class:`StartError` in one clear line.

    ``reuse_port``: one of a group of sockets on the same port (``SO_REUSEPORT``)
    among which the kernel spreads new connections (``--processes``)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            dual_stack(sock)
        sock.bind(address)
        sock.listen(min(4096, socket.SOMAXCONN * 32))
    except OSError as exc:
        sock.close()
        raise StartError(f"cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}") from None
    sock.setblocking(False)
    return sock


def raise_fd_limit(max_connections: int, lingering: int = 0) -> None:
    """S5: lift the soft open-file limit to the hard one; warn if it is still too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have
    needed = max_connections + _FD_RESERVE + lingering  # the refused and closed connections allowed to linger at once
    if soft != resource.RLIM_INFINITY and needed > soft:
        log.warning(
            "--max-connections %d needs about %d file descriptors but the limit is %d; "
            "connections beyond it will wait until others close",
            max_connections,
            needed,
            soft,
        )


def warn_if_exposed(host: str, max_per_address: int) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        unlimited = "" if max_per_address else ", and --max-per-address is off (one address may take it all)"
        log.warning(
            "listening on %s, which is reachable from other machines; --max-connections is the flood guard%s",
            host,
            unlimited,
        )


class Server:
    """Listen, accept, hand out; see the module docstring."""

    #: False in a process under the supervisor, which sends SIGKILL itself on a second
    #: signal: there a repeated SIGTERM (from the supervisor and from whoever signalled
    #: the whole group, as systemd does) must not cut the drain short.
    second_signal_exits = True

    def __init__(self, config: Config, shared: SharedLimit | None = None) -> None:
        self.config = config
        self.shared = shared
        self.texts = texts(config.lang)
        self._live = 0
        self._per_address: dict[object, int] = {}  # L15 in this process alone (no shared table)
        self._per_address_limit = config.max_per_address
        self._live_lock = threading.Lock()
        self._listener: socket.socket | None = None
        # The signal handler writes to _wake_w; the main thread sleeps in a read of _wake_r.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._signals = 0
        self._failed = False
        self._exit_by: float | None = None
        self._warn_lock = threading.Lock()  # guards the budgets below and the counts
        self._exhausted_logged = False
        self._exhausted_lines = LineBudget(_EXHAUSTED_BURST, _EXHAUSTED_PER_SECOND)
        self._busy_lines = LineBudget(_REFUSED_BURST, _REFUSED_PER_SECOND)
        self._proxy_lines = LineBudget(_REFUSED_BURST, _REFUSED_PER_SECOND)
        #: refusals so far by reason ("tls": failed handshakes), counted whether or not --metrics is on
        self.refusals: dict[str, int] = {"tls": 0}
        self._count_lock = threading.Lock()
        self.tls: TlsServer | None = None
        if config.tls_cert is not None:
            try:
                self.tls = TlsServer(server_context(config.tls_cert, config.tls_key))
            except TlsSetupError as exc:
                raise StartError(str(exc)) from None
        #: O2: connections refused for the PROXY protocol (source not allowed, no valid header)
        self.proxy_refusals = 0
        self.workers = [Worker(i, self) for i in range(config.workers)]

    # -- start ----------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Open the listening socket; returns the address actually bound."""
        self._listener = open_listener(self.config.host, self.config.port)
        bound = self._listener.getsockname()
        return bound[0], bound[1]

    def adopt(self, listener: socket.socket) -> None:
        """Serve a listening socket opened elsewhere (a process under ``--processes``)."""
        self._listener = listener

    def raise_fd_limit(self) -> None:
        raise_fd_limit(self.config.max_connections, len(self.workers) * (REFUSED_LINGERING + CLOSED_LINGERING))

    def warn_if_exposed(self, host: str) -> None:
        warn_if_exposed(host, self.config.max_per_address)

    # -- run ------------------------------------------------------------------

    def serve(self) -> int:
        """Run the workers until a signal; drain; return the exit status."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        # A signal the kernel hands to a worker thread must still wake the main
        # thread out of its recv(): the C-level handler writes to this socket too.
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        # Every worker thread exists before the first connection is accepted, so the
        # thread count a client can see never changes while it is served (S1).
        for worker in self.workers:
            worker.start()
        exclusive = len(self.workers) > 1
        for worker in self.workers:
            worker.listen(self._listener, exclusive)
        while not self._signals and not self._failed:
            self._wake_r.recv(64)
        status = self._shutdown()
        return 1 if self._failed else status

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        if self._signals > 1:
            if not self.second_signal_exits:
                return
            log.warning(self.texts.forced)
            logs.flush(_CONSOLE_GRACE)
            os._exit(128 + signum)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # a wake-up is already waiting

    # -- bookkeeping called by workers ----------------------------------------

    def worker_failed(self, worker: threading.Thread, exc: BaseException) -> None:
        """A worker's loop raised: one line says why, and the main thread shuts the server down (S7)."""
        with self._warn_lock:
            first, self._failed = not self._failed, True
        log.debug("%s failed", worker.name, exc_info=exc)
        if first:  # later failures (another worker, the same one's cleanup) only add to the debug log
            why = escape(str(exc))
            log.error("%s stopped on %s: %s; shutting the server down", worker.name, type(exc).__name__, why)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # a wake-up is already waiting

    def admit(self, peer: object, by_address: bool = True) -> bytes | None:
        """A connection was accepted: None makes it a session; otherwise the line that refuses it (L10, L15).

        ``by_address`` False leaves L15 to :meth:`claim_address`, once the client's own
        address is known (the PROXY header's, O2)."""
        if self._exhausted_logged:  # accepting works again: a later failure is news
            self._exhausted_logged = False
        per_address = self._per_address_limit if by_address else 0
        with self._live_lock:
            if self._live >= self.config.max_connections:
                refusal = BUSY_LINE
            elif self.shared is not None:  # the whole server's totals (O1), L15's among them
                why = self.shared.take(address_key(peer) if per_address else None)
                if why is None:
                    self._live += 1
                    return None
                refusal = BUSY_LINE if why == BUSY else TOO_MANY_LINE
            elif per_address and self._per_address.get(key := address_key(peer), 0) >= per_address:
                refusal = TOO_MANY_LINE
            else:
                self._live += 1
                if per_address:
                    self._per_address[key] = self._per_address.get(key, 0) + 1
                return None
        self._warn_refused(peer, refusal)
        return refusal

    def claim_address(self, peer: object) -> bytes | None:
        """L15 for a session admitted without it: None counts it under ``peer``'s address; else the refusal."""
        if not self._per_address_limit:
            return None
        with self._live_lock:
            key = address_key(peer)
            if self.shared is not None:
                if self.shared.claim(key):
                    return None
            elif self._per_address.get(key, 0) < self._per_address_limit:
                self._per_address[key] = self._per_address.get(key, 0) + 1
                return None
        self._warn_refused(peer, TOO_MANY_LINE)
        return TOO_MANY_LINE

    def session_ended(self, peer: object, by_address: bool = True) -> None:
        """The session admitted for ``peer`` has ended: its slots are free (``by_address``: its L15 one too)."""
        with self._live_lock:
            self._live -= 1
            if self.shared is not None:
                self.shared.release(address_key(peer) if self._per_address_limit and by_address else None)
            elif self._per_address_limit and by_address:
                key = address_key(peer)
                left = self._per_address[key] - 1
                if left:
                    self._per_address[key] = left
                else:
                    del self._per_address[key]

    def refused(self, reason: str) -> None:
        """Count one refusal (a connection closed before it became a session of the protocol)."""
        with self._count_lock:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def _warn_refused(self, peer: object, refusal: bytes) -> None:
        with self._warn_lock:
            unlogged = self._busy_lines.spend(time.monotonic())
        if unlogged is None:
            return
        if unlogged:
            log.warning(self.texts.busy_unlogged.format(count=unlogged))
        text = self.texts.busy if refusal == BUSY_LINE else self.texts.too_many
        reason = "busy" if refusal == BUSY_LINE else "per_address"
        log.warning(text.format(peer=peer), extra={"event": "refused", "peer": peer, "reason": reason})

    def proxy_refused(self, peer: object, reason: str) -> None:
        """O2: a connection closed with nothing sent, for its source or its header: one line, counted."""
        with self._warn_lock:
            self.proxy_refusals += 1
            count = self.proxy_refusals
            if self._proxy_lines.spend(time.monotonic()) is None:
                return  # the next line's count, or the one at exit, covers it
        log.warning(
            self.texts.proxy_refused.format(peer=peer, reason=reason, count=count),
            extra={"event": "refused", "peer": peer, "reason": "proxy"},
        )

    def accept_failed(self, exc: OSError) -> None:
        """Out of descriptors or memory (the worker pauses accepting): say so once until it recovers,
        and, as failures and recoveries alternate at the limit, a few times a minute at most."""
        now = time.monotonic()
        with self._warn_lock:
            if self._exhausted_logged:
                return
            self._exhausted_logged = True
            unlogged = self._exhausted_lines.spend(now)
            if unlogged is None:
                return
        more = f" ({unlogged} more times since the last such line)" if unlogged else ""
        log.warning("cannot accept connections: %s; retrying%s", (exc.strerror or str(exc)).lower(), more)

    # -- stop -----------------------------------------------------------------

    def console_time_left(self) -> float:
        """How long exiting may still wait for the console: the rest of the drain time (S6)."""
        left = 0.0 if self._exit_by is None else self._exit_by - time.monotonic()
        return max(_CONSOLE_GRACE, left)

    def _shutdown(self) -> int:
        self._exit_by = time.monotonic() + self.config.drain_timeout
        log.info(self.texts.shutting_down, extra={"event": "shutting_down"})
        for worker in self.workers:
            worker.request_stop()
        deadline = time.monotonic() + self.config.drain_timeout + 5.0
        for worker in self.workers:  # none may be inside accept() when the listener closes
            worker.not_accepting.wait(max(0.0, deadline - time.monotonic()))
        self._listener.close()  # new clients are refused by the kernel from now on
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._warn_lock:
            unlogged = self._busy_lines.take_held_back()
            failures = self._exhausted_lines.take_held_back()
            proxy_unlogged, proxy_total = self._proxy_lines.take_held_back(), self.proxy_refusals
        if unlogged:
            log.warning(self.texts.busy_unlogged.format(count=unlogged))
        if proxy_unlogged:
            log.warning(self.texts.proxy_unlogged.format(count=proxy_unlogged, total=proxy_total))
        if failures:
            log.warning("cannot accept connections: %d more times since the last such line", failures)
        log.info(self.texts.stopped, extra={"event": "stopped"})
        return 0
