"""``--processes N``: the supervisor, nginx's master (O1).

Theory of operation
-------------------
The supervisor binds the port once, at start, for all: one listening socket
per process, all in one ``SO_REUSEPORT`` group, so the kernel spreads new
connections evenly over the processes by a hash of their addresses.  (One
socket shared by all was tried first: whichever process woke first accepted
the whole backlog, and a burst of 20 connections all went to one process;
see docs/operations.md.)  Then it forks N server processes; process ``i``
inherits the sockets, keeps its own and closes the others, and runs today's
:class:`server.app.Server` on it (its own ``--workers`` loops).  The
supervisor keeps every socket open, so a process that is restarted finds its
socket with the connections that queued meanwhile.  Forking after the bind is
the simplest way to hand sockets over on Linux, and it keeps a process's
start-up to a fork rather than a new interpreter.  The supervisor has no
threads, so the fork is safe; it never touches a client byte.  (With
``--metrics`` it has one, the endpoint's, which holds nothing a process uses:
its own registry and lock, a silent HTTP handler; the process closes its copy
of the endpoint's socket.)

It waits for signals synchronously (``sigtimedwait`` on SIGINT, SIGTERM and
SIGCHLD, blocked for that): no handler runs in the middle of its bookkeeping.

* A process that exits while the server runs is restarted after a back-off
  (0.1 s, doubling per recent failure, at most 5 s), with one line giving its
  exit status or signal.  When one process has failed 5 times within 30 s the
  supervisor gives up: it stops the others as for SIGTERM and exits 1.
* The first SIGINT/SIGTERM is passed on as SIGTERM, so every process drains as
  L11 says; the supervisor closes its copies of the listening sockets, so new
  clients are refused once every process has closed its own, and exits 0 when
  every process has exited 0.  The processes ignore repeated signals (a
  terminal's Ctrl-C or systemd reaches them as well as the supervisor's
  SIGTERM): the second signal is the supervisor's, and it answers with SIGKILL
  to every process and exits ``128 + signal``, as a single process does.
* A drain that overruns ``--drain-timeout`` by :data:`DRAIN_MARGIN` seconds is
  cut short the same way (exit 1).
* A process whose supervisor dies gets SIGTERM from the kernel and drains.

``--max-connections`` and ``--max-per-address`` stay one total each, shared
through :mod:`server.sharing`; ``--metrics`` reports the whole server, summed
through :mod:`server.metricshare`.

The supervisor's states, and each process's, are declared below as plain lists
for one ``transitions`` machine each (``auto_transitions=False``), like the
session machine; ``python -m server.supervisor`` draws them, and
``tests/formal/test_supervisor_machine.py`` holds them to a hand-written table.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import signal
import sys
import time
from typing import Any, NoReturn

from transitions import Machine

from server.app import Server, StartError, open_listener, raise_fd_limit, warn_if_exposed
from server.config import Config
from server.logs import LOGGER_NAME, close, setup
from server.messages import Texts, texts
from server.metrics import Endpoint
from server.metricshare import SharedMetrics
from server.sharing import SharedLimit
from server.tls import TlsSetupError, server_context
from server.worker import CLOSED_LINGERING, REFUSED_LINGERING

log = logging.getLogger(LOGGER_NAME)

# -- the supervisor's machine ---------------------------------------------------

RUNNING = "RUNNING"  # serving; a process that exits is restarted
DRAINING = "DRAINING"  # a signal came; the processes drain (L11)
GIVING_UP = "GIVING_UP"  # a process failed too often; the others drain
STOPPED = "STOPPED"  # all drained: exit 0
FAILED = "FAILED"  # all stopped after giving up: exit 1
KILLED = "KILLED"  # a second signal or an overrun drain: SIGKILL to all

STATES: list[str] = [RUNNING, DRAINING, GIVING_UP, STOPPED, FAILED, KILLED]
INITIAL = RUNNING
FINAL: list[str] = [STOPPED, FAILED, KILLED]

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "stop", "source": RUNNING, "dest": DRAINING},
    {"trigger": "give_up", "source": RUNNING, "dest": GIVING_UP},
    {"trigger": "all_exited", "source": DRAINING, "dest": STOPPED},
    {"trigger": "all_exited", "source": GIVING_UP, "dest": FAILED},
    {"trigger": "force", "source": [DRAINING, GIVING_UP], "dest": KILLED},
]

MACHINE_KWARGS: dict[str, Any] = {
    "states": STATES,
    "transitions": TRANSITIONS,
    "initial": INITIAL,
    "auto_transitions": False,
}

MACHINE = Machine(model=None, **MACHINE_KWARGS)

# -- each process's machine -----------------------------------------------------

PENDING = "PENDING"  # to be started when its time comes (at once, or after a back-off)
SERVING = "SERVING"  # forked and running
EXITED = "EXITED"  # gone for good: the server is stopping

PROCESS_STATES: list[str] = [PENDING, SERVING, EXITED]
PROCESS_INITIAL = PENDING
PROCESS_FINAL = EXITED

PROCESS_TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "started", "source": PENDING, "dest": SERVING},
    {"trigger": "died", "source": SERVING, "dest": PENDING},  # exited while the server runs
    {"trigger": "exited", "source": SERVING, "dest": EXITED},  # exited while the server stops
    {"trigger": "cancelled", "source": PENDING, "dest": EXITED},  # the server stops before its restart
]

PROCESS_MACHINE_KWARGS: dict[str, Any] = {
    "states": PROCESS_STATES,
    "transitions": PROCESS_TRANSITIONS,
    "initial": PROCESS_INITIAL,
    "auto_transitions": False,
}

PROCESS_MACHINE = Machine(model=None, **PROCESS_MACHINE_KWARGS)


def fire(machine: Machine, model: Any, trigger: str) -> None:
    """Apply ``trigger`` to ``model`` (anything with a ``state``) through ``machine``.

    Raises ``transitions.MachineError`` for a pair the declaration does not hold.
    """
    machine.events[trigger].trigger(model)


def mermaid() -> list[str]:
    """Both machines as Mermaid state diagrams (the supervisor's, a process's), written from their declarations.

    Like the session's drawing, with no state styled as the current one:
    ``transitions``' own drawing marks the initial state "active".
    """
    from statemachine.diagram import mermaid_of

    return [
        mermaid_of(MACHINE, "upperecho supervisor", entries=[INITIAL], finals=FINAL),
        mermaid_of(PROCESS_MACHINE, "upperecho server process", entries=[PROCESS_INITIAL], finals=[PROCESS_FINAL]),
    ]


# -- the supervisor -------------------------------------------------------------

FAILURE_LIMIT = 5
FAILURE_WINDOW = 30.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: seconds a drain may take beyond --drain-timeout before the processes are killed
DRAIN_MARGIN = 10.0
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _drain_when_orphaned(parent: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies: a server left alone drains and exits.

    Without it a supervisor killed with SIGKILL (or by the OOM killer) would
    leave its processes serving with nobody to restart or stop them."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return  # not Linux: the supervisor's own SIGTERM is the only stop
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before we asked: the signal waits, blocked, for the handler
        os.kill(os.getpid(), signal.SIGTERM)


class Process:
    """One of the N process slots: a model of :data:`PROCESS_MACHINE`."""

    __slots__ = ("failures", "index", "pid", "start_at", "state")

    def __init__(self, index: int) -> None:
        self.index = index
        self.state = PROCESS_INITIAL
        self.pid = 0
        self.start_at = 0.0
        self.failures: collections.deque[float] = collections.deque()


# Seconds a stopping server process gives its console writer for the lines still queued.
_CONSOLE_AT_EXIT = 1.0


class Supervisor:
    """Bind once, run ``config.processes`` servers, restart, pass signals on; see the module docstring.

    It offers what ``python -m server`` calls on a :class:`Server`: ``bind``,
    ``raise_fd_limit``, ``warn_if_exposed``, ``serve`` and ``texts``.
    """

    def __init__(self, config: Config) -> None:
        if config.tls_cert is not None:  # checked here too, so bad files are one line, not N failing processes
            try:
                server_context(config.tls_cert, config.tls_key)
            except TlsSetupError as exc:
                raise StartError(str(exc)) from None
        self.config = config
        self.texts: Texts = texts(config.lang)
        self.state = INITIAL
        self.processes = [Process(i) for i in range(config.processes)]
        self.shared = SharedLimit(config.max_connections, config.processes, config.max_per_address)
        #: the processes' counts for --metrics, served by the supervisor (None when off)
        self.metrics = SharedMetrics(config.processes) if config.metrics is not None else None
        self._listeners: list = []
        self._mask: set[int] = set()
        self._deadline: float | None = None
        self._status = 0
        self._pid = 0

    def bind(self) -> tuple[str, int]:
        """One listening socket per process, all on one port in one ``SO_REUSEPORT`` group.

        A plain socket is bound first, so a port already in use (even by a group
        of ours) is the usual one-line error rather than a group joined by mistake."""
        probe = open_listener(self.config.host, self.config.port)
        host, port = probe.getsockname()[:2]
        probe.close()
        for _ in self.processes:
            self._listeners.append(open_listener(self.config.host, port, reuse_port=True))
        return host, port

    def raise_fd_limit(self) -> None:
        # per process (the limit is each process's own): every session could land in one
        raise_fd_limit(self.config.max_connections, self.config.workers * (REFUSED_LINGERING + CLOSED_LINGERING))

    def serve_metrics(self, host: str, port: int) -> Endpoint:
        """Serve ``--metrics`` here, for every process (needs ``config.metrics``).

        The endpoint's thread starts with the supervisor's signals blocked, as its
        threads inherit: a SIGCHLD or SIGTERM the kernel handed to it would be lost
        to :meth:`serve`'s ``sigtimedwait``."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            return self.metrics.serve(host, port)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def warn_if_exposed(self, host: str) -> None:
        warn_if_exposed(host, self.config.max_per_address)

    # -- the loop ---------------------------------------------------------------

    def serve(self) -> int:
        """Start the processes, watch them until the server has stopped; returns the exit status."""
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        self._pid = os.getpid()
        try:
            while self.state not in FINAL:
                now = time.monotonic()
                self._start_due(now)
                timeout = self._next_timeout(now)
                if timeout is None:
                    info = signal.sigwaitinfo(_SIGNALS)
                else:
                    info = signal.sigtimedwait(_SIGNALS, timeout)
                    if info is not None and info.si_signo not in _SIGNALS:
                        # CPython's sigtimedwait hands back an unfilled record when the wait is
                        # interrupted after its timeout has passed: a supervisor stopped with
                        # Ctrl-Z (SIGSTOP) past a deadline and then continued.  It is a timeout.
                        info = None
                if info is not None:
                    if info.si_signo == signal.SIGCHLD:
                        self._reap()
                    else:
                        self._on_signal(info.si_signo)
                self._check_stopping()
        finally:
            self._kill_all()  # only if something above failed: in a final state none is left
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
        return self._status

    def _next_timeout(self, now: float) -> float | None:
        deadlines = [p.start_at for p in self.processes if p.state == PENDING]
        if self._deadline is not None:
            deadlines.append(self._deadline)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _start_due(self, now: float) -> None:
        if self.state != RUNNING:
            return
        for process in self.processes:
            if process.state == PENDING and process.start_at <= now:
                self._start(process, now)

    def _start(self, process: Process, now: float) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            self._failed(process, now, None, (exc.strerror or str(exc)).lower())
            return
        if pid == 0:
            self._child(process.index)
        process.pid = pid
        fire(PROCESS_MACHINE, process, "started")

    def _reap(self) -> None:
        by_pid = {p.pid: p for p in self.processes if p.state == SERVING}
        while by_pid:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            process = by_pid.pop(pid, None)
            if process is None:
                continue
            self.shared.forget(process.index)
            if self.metrics is not None:  # its counters join the running total before the slot is reused
                self.metrics.retire(process.index)
            code = os.waitstatus_to_exitcode(status)
            if self.state == RUNNING:
                fire(PROCESS_MACHINE, process, "died")
                self._failed(process, time.monotonic(), process.pid, self._describe(code))
            else:
                fire(PROCESS_MACHINE, process, "exited")
                if code != 0:
                    line = self.texts.process_died.format(index=process.index + 1, pid=pid, status=self._describe(code))
                    log.warning(line + self.texts.while_stopping)
                    self._status = 1

    def _describe(self, code: int) -> str:
        if code >= 0:
            return self.texts.exit_status.format(code=code)
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "?"
        return self.texts.exit_signal.format(signum=-code, name=name)

    def _failed(self, process: Process, now: float, pid: int | None, why: str) -> None:
        """``process`` exited, or could not be started: restart it later, or give up."""
        failures = process.failures
        failures.append(now)
        while failures and failures[0] < now - FAILURE_WINDOW:
            failures.popleft()
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (len(failures) - 1))
        process.start_at = now + delay
        index = process.index + 1
        if pid is None:
            line = self.texts.process_not_started.format(index=index, reason=why)
        else:
            line = self.texts.process_died.format(index=index, pid=pid, status=why)
        giving_up = len(failures) >= FAILURE_LIMIT
        log.warning(line if giving_up else line + self.texts.restarting.format(delay=delay))
        if giving_up:
            log.error(self.texts.gave_up.format(index=index, failures=len(failures), window=FAILURE_WINDOW))
            fire(MACHINE, self, "give_up")
            self._stop_all(now)

    def _on_signal(self, signum: int) -> None:
        if self.state == RUNNING:
            fire(MACHINE, self, "stop")
            self._stop_all(time.monotonic())
        else:
            log.warning(self.texts.forced)
            self._force(128 + signum)

    def _stop_all(self, now: float) -> None:
        """Pass SIGTERM on, cancel pending restarts, let go of the listening socket."""
        for process in self.processes:
            if process.state == SERVING:
                self._send(process, signal.SIGTERM)
            elif process.state == PENDING:
                fire(PROCESS_MACHINE, process, "cancelled")
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        self._deadline = now + self.config.drain_timeout + DRAIN_MARGIN

    def _check_stopping(self) -> None:
        if self.state not in (DRAINING, GIVING_UP):
            return
        if all(p.state == EXITED for p in self.processes):
            fire(MACHINE, self, "all_exited")
            if self.state == FAILED:
                self._status = 1
        elif self._deadline is not None and time.monotonic() >= self._deadline:
            log.error(self.texts.drain_overdue.format(seconds=self.config.drain_timeout + DRAIN_MARGIN))
            self._force(1)

    def _force(self, status: int) -> None:
        self._kill_all()
        fire(MACHINE, self, "force")
        self._status = status

    def _kill_all(self) -> None:
        """SIGKILL every running process and wait for each."""
        for process in self.processes:
            if process.state == SERVING:
                self._send(process, signal.SIGKILL)
        for process in self.processes:
            if process.state == SERVING:
                try:
                    os.waitpid(process.pid, 0)
                except ChildProcessError:
                    pass
                fire(PROCESS_MACHINE, process, "exited")
            elif process.state == PENDING:
                fire(PROCESS_MACHINE, process, "cancelled")

    @staticmethod
    def _send(process: Process, signum: int) -> None:
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass  # already gone; SIGCHLD will tell

    # -- in the forked process --------------------------------------------------

    def _child(self, index: int) -> NoReturn:
        """Serve as process ``index`` until stopped; never returns into the supervisor's loop."""
        status = 1
        try:
            setup(self.config.log_level, self.config.log_format)  # this process's own handlers
            server = Server(self.config, self.shared.for_slot(index))
            server.second_signal_exits = False
            publisher = None if self.metrics is None else self.metrics.in_child(index, server)
            for other, listener in enumerate(self._listeners):
                if other != index:  # a stopped process must not keep another's socket open
                    listener.close()
            server.adopt(self._listeners[index])
            # Handlers in place before the signals are let through, so a SIGTERM that
            # came during the fork is a drain, not the default death.
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, server._on_signal)
            _drain_when_orphaned(self._pid)
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            log.info(self.texts.process_started.format(index=index + 1, count=len(self.processes), pid=os.getpid()))
            if publisher is not None:
                publisher.start()
            status = server.serve()
            if publisher is not None:
                publisher.finish()
        except Exception as exc:
            log.error("process %d failed: %s", index + 1, exc)
        finally:
            try:
                close(_CONSOLE_AT_EXIT)  # what the console writer still holds (S6), for a bounded time
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)


__all__ = ["MACHINE", "PROCESS_MACHINE", "Supervisor", "fire", "mermaid"]

if __name__ == "__main__":
    print("\n\n".join(mermaid()))
