"""The server: a listening socket, a fixed pool of workers, and the main thread for signals.

Each worker polls the listening socket beside its connections and accepts for
itself, as nginx's workers do: a new connection costs no hand-over between
threads and no extra wake-up.  With several workers the listener is
registered with ``EPOLLEXCLUSIVE``, so one connection wakes one worker.  The
thread count is ``1 + workers`` however many clients there are (S1).  The main
thread only waits for signals: the first SIGINT/SIGTERM starts a graceful
shutdown (L11), a second one exits at once.

What is shared between workers lives here, under locks: the count of live
sessions (L10) and the rate of the console's busy and out-of-descriptor
warnings.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time

from server.config import Config
from server.logs import LOGGER_NAME
from server.messages import texts
from server.sharing import SharedLimit
from server.tls import TlsServer, TlsSetupError, server_context
from server.worker import Worker

log = logging.getLogger(LOGGER_NAME)

# Busy warnings: a burst of this many lines, then one more per second at most;
# the refusals not logged are counted in the next line (a flood must not make
# the workers wait on a console nobody reads).
_BUSY_BURST = 10
_BUSY_PER_SECOND = 1.0
# Descriptors the process needs besides its connections (stdio, selectors, wake-ups).
_FD_RESERVE = 64


def dual_stack(sock: socket.socket) -> None:
    """O7: an IPv6 socket also serves IPv4 clients (as ``::ffff:a.b.c.d``) where the OS allows it."""
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except (OSError, AttributeError):
        pass  # IPv6 only here: IPv4 clients need a server of their own


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


def raise_fd_limit(max_connections: int) -> None:
    """S5: lift the soft open-file limit to the hard one; warn if it is still too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have
    needed = max_connections + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and needed > soft:
        log.warning(
            "--max-connections %d needs about %d file descriptors but the limit is %d; "
            "connections beyond it will wait until others close",
            max_connections,
            needed,
            soft,
        )


def warn_if_exposed(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning(
            "listening on %s, which is reachable from other machines; --max-connections is the flood guard", host
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
        self._live_lock = threading.Lock()
        self._listener: socket.socket | None = None
        # The signal handler writes to _wake_w; the main thread sleeps in a read of _wake_r.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._signals = 0
        self._warn_lock = threading.Lock()
        self._exhausted_logged = False
        self._busy_tokens = float(_BUSY_BURST)
        self._busy_refilled = time.monotonic()
        self._busy_unlogged = 0
        #: refusals so far by reason ("tls": failed handshakes); plain integers, read at scrape time
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
        raise_fd_limit(self.config.max_connections)

    def warn_if_exposed(self, host: str) -> None:
        warn_if_exposed(host)

    # -- run ------------------------------------------------------------------

    def serve(self) -> int:
        """Run the workers until a signal; drain; return the exit status."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        # A signal the kernel hands to a worker thread must still wake the main
        # thread out of its recv(): the C-level handler writes to this socket too.
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        exclusive = len(self.workers) > 1
        for worker in self.workers:
            worker.listen(self._listener, exclusive)
            worker.start()
        while not self._signals:
            self._wake_r.recv(64)
        return self._shutdown()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        if self._signals > 1:
            if not self.second_signal_exits:
                return
            log.warning(self.texts.forced)
            os._exit(128 + signum)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # a wake-up is already waiting

    # -- bookkeeping called by workers ----------------------------------------

    def admit(self, peer: object) -> bool:
        """A connection was accepted: True makes it a session, False refuses it as busy (L10)."""
        if self._exhausted_logged:  # accepting works again: a later failure is news
            self._exhausted_logged = False
        with self._live_lock:
            if self._live < self.config.max_connections and (self.shared is None or self.shared.take()):
                self._live += 1
                admitted = True
            else:
                admitted = False
        if not admitted:
            self._warn_busy(peer)
        return admitted

    def session_ended(self) -> None:
        with self._live_lock:
            self._live -= 1
            if self.shared is not None:
                self.shared.release()

    def refused(self, reason: str) -> None:
        """Count one refusal (a connection closed before it became a session of the protocol)."""
        with self._count_lock:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def _warn_busy(self, peer: object) -> None:
        now = time.monotonic()
        with self._warn_lock:
            self._busy_tokens = min(_BUSY_BURST, self._busy_tokens + (now - self._busy_refilled) * _BUSY_PER_SECOND)
            self._busy_refilled = now
            if self._busy_tokens < 1.0:
                self._busy_unlogged += 1
                return
            self._busy_tokens -= 1.0
            unlogged, self._busy_unlogged = self._busy_unlogged, 0
        if unlogged:
            log.warning(self.texts.busy_unlogged.format(count=unlogged))
        log.warning(self.texts.busy.format(peer=peer), extra={"event": "refused", "peer": peer, "reason": "busy"})

    def proxy_refused(self, peer: object, reason: str) -> None:
        """O2: a connection closed with nothing sent, for its source or its header: one line, counted."""
        with self._warn_lock:
            self.proxy_refusals += 1
            count = self.proxy_refusals
        log.warning(self.texts.proxy_refused.format(peer=peer, reason=reason, count=count))

    def accept_failed(self, exc: OSError) -> None:
        """Out of descriptors or memory (the worker pauses accepting): say so once until it recovers."""
        with self._warn_lock:
            if self._exhausted_logged:
                return
            self._exhausted_logged = True
        log.warning("cannot accept connections: %s; retrying", (exc.strerror or str(exc)).lower())

    # -- stop -----------------------------------------------------------------

    def _shutdown(self) -> int:
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
            unlogged, self._busy_unlogged = self._busy_unlogged, 0
        if unlogged:
            log.warning(self.texts.busy_unlogged.format(count=unlogged))
        log.info(self.texts.stopped, extra={"event": "stopped"})
        sys.stdout.flush()
        return 0
