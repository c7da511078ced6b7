"""A Locust user for upperecho: ``locust -f loadtest/locustfile.py --host tcp://127.0.0.1:5000``.

``--host tls://HOST:PORT`` speaks TLS (O6), checking the server's certificate
against the system's CAs or ``--tls-cafile``; ``--tls-insecure`` checks nothing.

Each user is one client session over the shared client class: it connects,
echoes messages of varied size and content (ASCII and Unicode), checks every
reply against the upper-cased message, and now and then says DESCONEXION and
comes back with a new connection.  Every step is a Locust request
(``connect``, ``echo``, ``echo unicode``, ``DESCONEXION``) with its response
time and length; a wrong reply or a lost connection is a failure that says
what went wrong.

The options below are Locust custom arguments, so they show in the web UI and
reach the workers of a distributed run.  A value out of range stops the run
before any user starts, with one line and exit status 2; in the web UI the
swarm is refused with the same words.
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import time

import gevent
from locust import User, events, task
from locust.env import Environment

from client.connection import ClientError, Connection, tls_context
from loadtest.traffic import (
    ASCII,
    DEFAULT_HOST,
    DISCONNECT_SPELLINGS,
    UNICODE,
    USER_OPTIONS,
    flag,
    message,
    message_size,
    mismatch,
    option_problems,
    parse_host,
    uses_tls,
)

REQUEST_TYPE = "upperecho"
CONNECT_BACKOFF = 0.5  # seconds a user waits after a failed connect, so a dead server is not hammered

log = logging.getLogger(__name__)


class WrongReply(ClientError):
    """The server answered, but not with the upper-cased message."""


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    # parser.add_argument itself, not an argument group: only it marks an option for the web UI.
    for name, option in USER_OPTIONS.items():
        parser.add_argument(flag(name), type=option.kind, default=option.default, help=option.help)
    parser.add_argument(
        "--tls-cafile", default="", help="with --host tls://...: trust the CA certificates in this PEM file"
    )
    parser.add_argument(
        "--tls-insecure", action="store_true", default=False, help="with --host tls://...: check no certificate"
    )


@events.init.add_listener
def _check_options(environment: Environment, runner=None, web_ui=None, **_kwargs) -> None:
    """Refuse bad options before any user starts.

    A run that starts by itself (headless, ``--autostart``) stops at once
    with status 2; the web UI stays up and refuses each swarm whose values
    are bad, saying why, so the field can be corrected there.
    """
    problems = option_problems(vars(environment.parsed_options)) if environment.parsed_options else []
    for problem in problems:
        log.error(problem)
    if web_ui is not None:
        web_ui.app.before_request(functools.partial(_refuse_bad_swarm, environment))
    options = environment.parsed_options
    if problems and (web_ui is None or getattr(options, "headless", False) or getattr(options, "autostart", False)):
        environment.process_exit_code = 2
        if runner is not None:
            runner.quit()


def _refuse_bad_swarm(environment: Environment):
    """Answer the web UI's swarm request with the problem instead of starting users that cannot run."""
    from flask import jsonify, request

    if request.method != "POST" or request.path != "/swarm":
        return None
    values = {**vars(environment.parsed_options), **request.form} if environment.parsed_options else request.form
    problems = option_problems(values)
    if not problems:
        return None
    log.error("swarm refused: %s", "; ".join(problems))
    return jsonify({"success": False, "message": "; ".join(problems)})


def _option(environment: Environment, name: str) -> float:
    options = environment.parsed_options
    return getattr(options, name, USER_OPTIONS[name].default) if options else USER_OPTIONS[name].default


def _tls_context(environment: Environment) -> ssl.SSLContext:
    """One client context for every user of this process (loading CA files is not free)."""
    options = environment.parsed_options
    cafile = (getattr(options, "tls_cafile", "") if options else "") or None
    insecure = bool(getattr(options, "tls_insecure", False)) if options else False
    key = (cafile, insecure)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = tls_context(cafile, insecure)
    return _CONTEXTS[key]


_CONTEXTS: dict[tuple[str | None, bool], ssl.SSLContext] = {}


class UpperechoUser(User):
    """One client session: echo and check, sometimes leave and come back."""

    host = DEFAULT_HOST

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.address = parse_host(self.host)
        self.largest = int(_option(environment, "message_size"))
        self.disconnect_rate = _option(environment, "disconnect_rate")
        self.think_time = _option(environment, "think_time")
        self.timeout = _option(environment, "reply_timeout")
        self.rng = random.Random()
        self.conn: Connection | None = None
        self.ssl_context = _tls_context(environment) if uses_tls(self.host) else None

    def wait_time(self) -> float:
        return self.rng.expovariate(1 / self.think_time) if self.think_time else 0.0

    def on_stop(self) -> None:
        self._drop()  # a stopped user may be mid-request: just close

    @task(3)
    def echo(self) -> None:
        self._echo("echo", message(self.rng, ASCII, message_size(self.rng, self.largest)))

    @task(1)
    def echo_unicode(self) -> None:
        self._echo("echo unicode", message(self.rng, UNICODE, message_size(self.rng, self.largest)))

    # -- the steps, each one Locust request -----------------------------------

    def _connected(self) -> Connection | None:
        if self.conn is None:
            conn = Connection(*self.address, timeout=self.timeout, ssl_context=self.ssl_context)
            started = time.perf_counter()
            try:
                conn.connect()
            except ClientError as exc:
                self._fire("connect", _since(started), 0, exc)
                gevent.sleep(CONNECT_BACKOFF)
                return None
            self._fire("connect", _since(started), 0)
            self.conn = conn
        return self.conn

    def _echo(self, name: str, text: str) -> None:
        conn = self._connected()
        if conn is None:
            return
        started = time.perf_counter()
        try:
            reply = conn.request(text)
        except ClientError as exc:
            self._fire(name, _since(started), 0, exc)
            self._drop()
            return
        elapsed = _since(started)
        self._fire(name, elapsed, len(reply.encode()) + 1, self._check(text.upper(), reply, name))
        if self.conn is not None and self.rng.random() < self.disconnect_rate:
            self._leave()

    def _leave(self) -> None:
        word = self.rng.choice(DISCONNECT_SPELLINGS)
        started = time.perf_counter()
        try:
            reply = self.conn.disconnect(word)
        except ClientError as exc:
            self._fire("DESCONEXION", _since(started), 0, exc)
            self._drop()
            return
        elapsed = _since(started)
        self.conn = None
        self._fire("DESCONEXION", elapsed, len(reply.encode()) + 1, self._check(word.upper(), reply, "DESCONEXION"))

    def _check(self, expected: str, reply: str, name: str) -> WrongReply | None:
        """None for the right reply; otherwise the fault, and the session is dropped (replies may be out of step)."""
        fault = mismatch(expected, reply)
        if fault is None:
            return None
        log.debug("%s: expected %r, got %r", name, expected[:200], reply[:200])
        self._drop()
        return WrongReply(fault)

    def _fire(self, name: str, milliseconds: float, length: int, exception: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=milliseconds,
            response_length=length,
            exception=exception,
            context={},
        )

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _since(started: float) -> float:
    """Milliseconds since ``started`` (a ``perf_counter`` reading)."""
    return (time.perf_counter() - started) * 1000
