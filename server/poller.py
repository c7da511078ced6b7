"""The readiness poller a worker waits on: ``epoll`` where there is one, ``poll`` elsewhere.

``selectors`` would do, but its per-call bookkeeping (a key object per
descriptor, a list of (key, events) per wake-up) costs a few microseconds on
every message; a worker keeps its own ``fd -> connection`` map instead.
"""

from __future__ import annotations

import select

READ = select.POLLIN
WRITE = select.POLLOUT
# Errors and hang-ups are reported whether asked for or not: treat them as both
# readable and writable, so the next recv() or send() reports what happened.
ERROR = select.POLLERR | select.POLLHUP | select.POLLNVAL


class Poller:
    """``register``/``modify``/``unregister`` a descriptor; ``poll(seconds)`` -> [(fd, events)].

    ``forget(fd)`` before closing a registered descriptor: with epoll it costs
    no system call.
    """

    def __init__(self) -> None:
        if hasattr(select, "epoll"):
            self._poller = select.epoll()
            self._scale = 1.0
            self._infinite = -1.0
            #: OR it into a shared descriptor's events so that one event wakes one poller
            self.EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)
            # Closing a socket's only descriptor takes it out of the epoll set.
            self.forget = _nothing
        else:
            self._poller = select.poll()
            self._scale = 1000.0
            self._infinite = None
            self.EXCLUSIVE = 0
            self.forget = self._poller.unregister
        self.register = self._poller.register
        self.modify = self._poller.modify
        self.unregister = self._poller.unregister

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        if timeout is None:
            return self._poller.poll(self._infinite)
        return self._poller.poll(timeout * self._scale)

    def close(self) -> None:
        close = getattr(self._poller, "close", None)
        if close is not None:
            close()


def _nothing(fd: int) -> None:
    pass
