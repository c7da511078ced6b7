"""The server: a listening socket, an acceptor (the main thread) and a fixed pool of workers.

The main thread accepts connections and hands each to a worker in turn, so the
thread count is ``1 + workers`` however many clients there are (S1).  Signals
are handled here too: the first SIGINT/SIGTERM starts a graceful shutdown
(L11), a second one exits at once.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import time

from server.config import Config
from server.logs import LOGGER_NAME
from server.messages import texts
from server.worker import Worker

log = logging.getLogger(LOGGER_NAME)

# accept() errors that mean "out of a resource": pause accepting instead of spinning.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_PAUSE = 0.1
_ACCEPT_BATCH = 64
# Descriptors the process needs besides its connections (stdio, selectors, wake-ups).
_FD_RESERVE = 64


class StartError(Exception):
    """The server cannot start (port in use, no permission, ...): one clear line."""


class Server:
    """Listen, accept, hand out; see the module docstring."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.texts = texts(config.lang)
        self._live = 0
        self._live_lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._signals = 0
        self._accept_paused_until: float | None = None
        self._exhausted_logged = False
        self.workers = [Worker(i, self) for i in range(config.workers)]
        self._next_worker = 0

    # -- start ----------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Open the listening socket; returns the address actually bound."""
        host, port = self.config.host, self.config.port
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise StartError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(min(4096, socket.SOMAXCONN * 32))
        except OSError as exc:
            sock.close()
            raise StartError(f"cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}") from None
        sock.setblocking(False)
        self._listener = sock
        bound = sock.getsockname()
        return bound[0], bound[1]

    def raise_fd_limit(self) -> None:
        """S5: lift the soft open-file limit to the hard one; warn if it is still too low."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass  # keep the soft limit we have
        needed = self.config.max_connections + _FD_RESERVE
        if soft != resource.RLIM_INFINITY and needed > soft:
            log.warning(
                "--max-connections %d needs about %d file descriptors but the limit is %d; "
                "connections beyond it will wait until others close",
                self.config.max_connections,
                needed,
                soft,
            )

    def warn_if_exposed(self, host: str) -> None:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            log.warning(
                "listening on %s, which is reachable from other machines; --max-connections is the flood guard", host
            )

    # -- run ------------------------------------------------------------------

    def serve(self) -> int:
        """Accept until a signal; drain; return the exit status."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        for worker in self.workers:
            worker.start()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        while not self._signals:
            timeout = None
            if self._accept_paused_until is not None:
                timeout = max(0.0, self._accept_paused_until - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if key.data == "listen":
                    self._accept_batch()
                else:
                    self._drain_wake()
            if self._accept_paused_until is not None and time.monotonic() >= self._accept_paused_until:
                self._accept_paused_until = None
                self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        return self._shutdown()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning(self.texts.forced)
            os._exit(128 + signum)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # the loop is awake already

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _accept_batch(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._pause_accepting(exc)
                    return
                continue  # the client gave up before we accepted (ECONNABORTED, ...)
            self._exhausted_logged = False
            self._admit(sock, peer)

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors or memory: stop polling the listener for a moment instead of spinning."""
        if not self._exhausted_logged:
            log.warning("cannot accept connections: %s; retrying", (exc.strerror or str(exc)).lower())
            self._exhausted_logged = True
        self._selector.unregister(self._listener)
        self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE

    def _admit(self, sock: socket.socket, peer: object) -> None:
        worker = self.workers[self._next_worker]
        self._next_worker = (self._next_worker + 1) % len(self.workers)
        with self._live_lock:
            admitted = self._live < self.config.max_connections
            if admitted:
                self._live += 1
        if not admitted:
            log.warning(self.texts.busy.format(peer=peer))
        worker.hand(sock, peer, admitted)

    # -- bookkeeping called by workers ----------------------------------------

    def session_ended(self) -> None:
        with self._live_lock:
            self._live -= 1

    def socket_closed(self) -> None:
        """A descriptor was freed: if accepting is paused for want of one, retry now."""
        if self._accept_paused_until is not None:
            self._accept_paused_until = 0.0
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # the acceptor is awake already

    @property
    def live_sessions(self) -> int:
        return self._live

    # -- stop -----------------------------------------------------------------

    def _shutdown(self) -> int:
        log.info(self.texts.shutting_down)
        self._selector.close()
        self._listener.close()
        for worker in self.workers:
            worker.request_stop()
        deadline = time.monotonic() + self.config.drain_timeout + 5.0
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        log.info(self.texts.stopped)
        sys.stdout.flush()
        return 0
