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
the console's busy and out-of-descriptor warnings.  Admission is one call,
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
from server.worker import REFUSED_LINGERING, Worker
from statemachine.session import ERROR_BUSY

log = logging.getLogger(LOGGER_NAME)

# Busy warnings: a burst of this many lines, then one more per second at most;
# the refusals not logged are counted in the next line (a flood must not make
# the workers wait on a console nobody reads).
_BUSY_BURST = 10
_BUSY_PER_SECOND = 1.0
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


class StartError(Exception):
    """The server cannot start (port in use, no permission, ...): one clear line."""


class Server:
    """Listen, accept, hand out; see the module docstring."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.texts = texts(config.lang)
        self._live = 0
        self._per_address: dict[object, int] = {}
        self._live_lock = threading.Lock()
        self._listener: socket.socket | None = None
        # The signal handler writes to _wake_w; the main thread sleeps in a read of _wake_r.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._signals = 0
        self._failed = False
        self._exit_by: float | None = None
        self._warn_lock = threading.Lock()
        self._exhausted_logged = False
        self._exhausted_tokens = float(_EXHAUSTED_BURST)
        self._exhausted_refilled = time.monotonic()
        self._exhausted_unlogged = 0
        self._busy_tokens = float(_BUSY_BURST)
        self._busy_refilled = time.monotonic()
        self._busy_unlogged = 0
        self.workers = [Worker(i, self) for i in range(config.workers)]

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
        needed = self.config.max_connections + _FD_RESERVE + len(self.workers) * REFUSED_LINGERING
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
            unlimited = (
                "" if self.config.max_per_address else ", and --max-per-address is off (one address may take it all)"
            )
            log.warning(
                "listening on %s, which is reachable from other machines; --max-connections is the flood guard%s",
                host,
                unlimited,
            )

    # -- run ------------------------------------------------------------------

    def serve(self) -> int:
        """Run the workers until a signal; drain; return the exit status."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        exclusive = len(self.workers) > 1
        for worker in self.workers:
            worker.listen(self._listener, exclusive)
            worker.start()
        while not self._signals and not self._failed:
            self._wake_r.recv(64)
        status = self._shutdown()
        return 1 if self._failed else status

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        if self._signals > 1:
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

    def admit(self, peer: object) -> bytes | None:
        """A connection was accepted: None makes it a session; otherwise the line that refuses it (L10, L15)."""
        if self._exhausted_logged:  # accepting works again: a later failure is news
            self._exhausted_logged = False
        per_address = self.config.max_per_address
        with self._live_lock:
            if self._live >= self.config.max_connections:
                refusal = BUSY_LINE
            elif per_address and self._per_address.get(key := address_key(peer), 0) >= per_address:
                refusal = TOO_MANY_LINE
            else:
                self._live += 1
                if per_address:
                    self._per_address[key] = self._per_address.get(key, 0) + 1
                return None
        self._warn_refused(peer, refusal)
        return refusal

    def session_ended(self, peer: object) -> None:
        """The session admitted for ``peer`` has ended: its slots are free."""
        with self._live_lock:
            self._live -= 1
            if self.config.max_per_address:
                key = address_key(peer)
                left = self._per_address[key] - 1
                if left:
                    self._per_address[key] = left
                else:
                    del self._per_address[key]

    def _warn_refused(self, peer: object, refusal: bytes) -> None:
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
        text = self.texts.busy if refusal == BUSY_LINE else self.texts.too_many
        log.warning(text.format(peer=peer))

    def accept_failed(self, exc: OSError) -> None:
        """Out of descriptors or memory (the worker pauses accepting): say so once until it recovers,
        and, as failures and recoveries alternate at the limit, a few times a minute at most."""
        now = time.monotonic()
        with self._warn_lock:
            if self._exhausted_logged:
                return
            self._exhausted_logged = True
            self._exhausted_tokens = min(
                _EXHAUSTED_BURST, self._exhausted_tokens + (now - self._exhausted_refilled) * _EXHAUSTED_PER_SECOND
            )
            self._exhausted_refilled = now
            if self._exhausted_tokens < 1.0:
                self._exhausted_unlogged += 1
                return
            self._exhausted_tokens -= 1.0
            unlogged, self._exhausted_unlogged = self._exhausted_unlogged, 0
        more = f" ({unlogged} more times since the last such line)" if unlogged else ""
        log.warning("cannot accept connections: %s; retrying%s", (exc.strerror or str(exc)).lower(), more)

    # -- stop -----------------------------------------------------------------

    def console_time_left(self) -> float:
        """How long exiting may still wait for the console: the rest of the drain time (S6)."""
        left = 0.0 if self._exit_by is None else self._exit_by - time.monotonic()
        return max(_CONSOLE_GRACE, left)

    def _shutdown(self) -> int:
        self._exit_by = time.monotonic() + self.config.drain_timeout
        log.info(self.texts.shutting_down)
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
            failures, self._exhausted_unlogged = self._exhausted_unlogged, 0
        if unlogged:
            log.warning(self.texts.busy_unlogged.format(count=unlogged))
        if failures:
            log.warning("cannot accept connections: %d more times since the last such line", failures)
        log.info(self.texts.stopped)
        return 0
