"""Model-based test of a live TLS server: Hypothesis drives handshakes and sessions, the reference model predicts.

The server runs with ``--tls-cert``/``--tls-key`` (a throwaway certificate),
``--max-line 64`` and a short ``--tls-handshake-timeout``.  Each example runs
a bounded sequence of steps over up to three TLS sessions and any number of
handshakes that fail: honest handshakes (HANDSHAKE -> CONNECTED) followed by
arbitrary byte streams, the disconnect word and half-closes (``close_notify``
with or without FIN), and every way a handshake can fail (plain text, bytes
that are no handshake, silence, half a ClientHello, the client's end of
stream).  The reference model predicts every reply byte and every close from
the bytes sent (``reference.line_replies``) and every handshake's outcome
(``reference.after_handshake``).  After every step the console agrees with the
model: established sessions, closes by reason, messages, and one "TLS
handshake failed" line per failure with its reason.  At the end SIGTERM: every
open session gets its notice and ``close_notify``, a handshake under way fails
with "server shutting down", and the server exits 0.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from server.messages import ENGLISH
from tests.formal import reference
from tests.formal.strategies import deterministic, disconnect_variants, line_streams
from tests.serverproc import ServerProcess
from tests.tlskit import Cert, RecordClient, make_cert, needs_openssl
from tests.wire import connect, read_until_closed

pytestmark = [needs_openssl, pytest.mark.timeout(300)]

MAX_LINE = 64
MAX_SESSIONS = 3
DEADLINE = 20.0
HANDSHAKE_TIMEOUT = "0.3"
_CLOSED_LINE = re.compile(r"^Connection closed with client \(.*?\): (.+)$")
_DISCONNECT_LINE = re.compile(r"^Client \(.*\) asks to disconnect\.$")
_REASON = {words: reason for reason, words in ENGLISH.reasons.items()}
_FAILED = re.compile(r"^TLS handshake failed with client .*?\): (.+)$")

# How a client can fail a handshake, and what the server's log line says (None: OpenSSL's own words).
FAILURES: dict[str, tuple[str, str | None]] = {
    "plain text": ("bad", "plain text, not TLS"),
    "not a handshake": ("bad", None),
    "silence": ("timeout", "timeout"),
    "half a ClientHello": ("timeout", "timeout"),
    "end of stream": (reference.EOF, "end of stream"),
}
SHUTTING_DOWN = "server shutting down"
#: What this model covers, for the walk of the declaration (test_every_check.py counts it with the live model):
#: sessions start in HANDSHAKE and leave it both ways; after it, plain sessions end as the steps above end them.
COVERS_TRIGGERS = frozenset({"handshake_done", "handshake_failed", "message", "disconnect", "end_of_stream", "flushed"})
COVERS_STATES = frozenset({"HANDSHAKE", "CONNECTED", "ECHOING", "CLOSING", "CLOSED"})
NAMED = {words for _, words in FAILURES.values() if words} | {SHUTTING_DOWN}


def _closed_reasons(lines: list[str]) -> Counter[str]:
    """Sessions' ends by reason: one closed line each, the disconnect as the seed logs it (S4)."""
    closed = Counter(_REASON[m.group(1)] for line in lines if (m := _CLOSED_LINE.match(line)))
    closed["disconnect"] += sum(bool(_DISCONNECT_LINE.match(line)) for line in lines)
    return +closed


@dataclass
class Tls:
    """One TLS session past its handshake, as the model sees it."""

    client: RecordClient
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    end: str | None = None

    def expected(self, end: str | None = None) -> reference.Expected:
        return reference.line_replies(bytes(self.sent), MAX_LINE, end)


def _half_a_client_hello(context: ssl.SSLContext) -> bytes:
    hello = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost")
    try:
        hello.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = outgoing.read()
    return data[: len(data) // 2]


def _until_closed(sock: socket.socket) -> bytes:
    try:
        return read_until_closed(sock, timeout=DEADLINE)
    except ConnectionResetError:
        return b""


def _wait_until(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


class LiveTlsModel(RuleBasedStateMachine):
    cert: Cert  # set by the test, made once

    def __init__(self) -> None:
        super().__init__()
        self.server = ServerProcess(
            "--lang",
            "en",
            "--max-line",
            str(MAX_LINE),
            "--max-connections",
            str(MAX_SESSIONS + 2),
            "--idle-timeout",
            "0",
            "--tls-handshake-timeout",
            HANDSHAKE_TIMEOUT,
            *self.cert.server_args(),
        )
        self.context = self.cert.client_context()
        self.open: list[Tls] = []
        self.finished: list[Tls] = []
        self.established = 0
        self.reasons: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # the log's reason words
        self.unnamed_failures = 0  # failures whose words are OpenSSL's
        self.healthy = True

    def _finish(self, session: Tls, reason: str, end: str | None = None) -> None:
        session.end = end
        self.open.remove(session)
        self.finished.append(session)
        self.reasons[reason] += 1
        session.client.close()

    def _pick(self, index: int) -> Tls:
        return self.open[index % len(self.open)]

    def _check(self, session: Tls) -> None:
        expected = session.expected()
        due = expected.replies[len(session.received) :]
        got = session.client.read(len(due))
        session.received += got
        assert got == due, f"sent {bytes(session.sent)[-120:]!r}"
        if expected.closed:
            assert session.client.read_to_end() == b"", "bytes after the last reply"
            assert session.client.close_notify, "closed without close_notify"
            self._finish(session, expected.reason)

    # -- rules ----------------------------------------------------------------------

    @precondition(lambda self: len(self.open) < MAX_SESSIONS)
    @rule()
    def handshake(self) -> None:
        """HANDSHAKE -> CONNECTED: a client that completes the handshake starts a session."""
        self.healthy = False
        self.open.append(Tls(RecordClient(self.server.address, self.context, timeout=DEADLINE)))
        self.established += 1
        self.healthy = True

    @rule(how=st.sampled_from(sorted(FAILURES)))
    def failed_handshake(self, how: str) -> None:
        """HANDSHAKE -> CLOSED: nothing is sent back but at most a TLS alert; the close comes."""
        self.healthy = False
        outcome, words = FAILURES[how]
        assert reference.after_handshake(outcome) == reference.Expected(b"", 0, "handshake_failed")
        with connect(self.server.address, timeout=DEADLINE) as sock:
            if how == "plain text":
                sock.sendall(b"hola\n")
            elif how == "not a handshake":
                sock.sendall(b"\x16\x03\x01\x00\x08" + b"\x00" * 8)
            elif how == "half a ClientHello":
                sock.sendall(_half_a_client_hello(self.context))
            elif how == "end of stream":
                sock.shutdown(socket.SHUT_WR)
            got = _until_closed(sock)
        assert got == b"" or got[0] == 0x15, f"more than an alert: {got[:40]!r}"
        if words is None:
            self.unnamed_failures += 1
        else:
            self.failures[words] += 1
        self.healthy = True

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(0, 99), data=st.data())
    def write(self, pick: int, data: st.DataObject) -> None:
        self.healthy = False
        session = self._pick(pick)
        payload = data.draw(line_streams(MAX_LINE), label="payload")
        session.client.send(payload)
        session.sent += payload
        self._check(session)
        self.healthy = True

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(0, 99), word=disconnect_variants(), after=st.binary(max_size=12))
    def disconnect(self, pick: int, word: str, after: bytes) -> None:
        self.healthy = False
        session = self._pick(pick)
        payload = word.encode() + b"\n" + after
        session.client.send(payload)
        session.sent += payload
        self._check(session)
        self.healthy = True

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(0, 99), tail=st.binary(max_size=8), fin=st.booleans(), together=st.booleans())
    def half_close(self, pick: int, tail: bytes, fin: bool, together: bool) -> None:
        """L7 over TLS: close_notify (with or without FIN) ends the input; the tail is answered."""
        self.healthy = False
        session = self._pick(pick)
        if together:
            session.client.send_and_close_notify(tail, fin)
        else:
            session.client.send(tail)
            session.client.send_close_notify(fin)
        session.sent += tail
        expected = session.expected(reference.EOF)
        rest = session.client.read_to_end()
        assert bytes(session.received) + rest == expected.replies
        assert session.client.close_notify
        self._finish(session, expected.reason, reference.EOF)
        self.healthy = True

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def console_agrees_with_the_model(self) -> None:
        if not self.healthy:
            return
        self.healthy = False
        self._console_matches()
        assert self.server.proc.poll() is None, f"server exited: {self.server.stderr[-10:]!r}"
        self.healthy = True

    def _console_matches(self) -> None:
        messages = sum(s.expected().messages for s in self.open)
        messages += sum(s.expected(s.end).messages for s in self.finished)

        def observed() -> tuple:
            lines = list(self.server.stdout)
            failed = [m.group(1) for line in lines if (m := _FAILED.match(line))]
            named = Counter(words for words in failed if words in NAMED)
            return (
                sum(line.startswith("Connection established with client") for line in lines),
                _closed_reasons(lines),
                sum(line.startswith("Message received: ") for line in lines),
                named,
                len(failed) - sum(named.values()),
            )

        wanted = (self.established, self.reasons, messages, self.failures, self.unnamed_failures)
        _wait_until(lambda: observed() == wanted)
        assert observed() == wanted, "(established, closes, messages, named failures, other failures) vs the model"

    # -- the end: SIGTERM (L11), with a handshake under way ---------------------------

    def teardown(self) -> None:
        try:
            if self.healthy and self.server.proc.poll() is None:
                with connect(self.server.address, timeout=DEADLINE) as stalled:
                    # A handshake completed after this connect shows the server has accepted it.
                    self.open.append(Tls(RecordClient(self.server.address, self.context, timeout=DEADLINE)))
                    self.established += 1
                    self.server.signal()
                    for session in list(self.open):
                        rest = session.client.read_to_end()
                        expected = session.expected(reference.SHUTDOWN)
                        assert bytes(session.received) + rest == expected.replies
                        assert session.client.close_notify
                        self._finish(session, "shutdown", reference.SHUTDOWN)
                    assert _until_closed(stalled) == b""
                assert self.server.wait(timeout=DEADLINE) == 0
                self.failures[SHUTTING_DOWN] += 1
                self._console_matches()
        finally:
            for session in self.open:
                session.client.close()
            self.server.kill()


def test_live_tls_server_follows_the_reference_model(tmp_path: Path):
    LiveTlsModel.cert = make_cert(tmp_path)
    run_state_machine_as_test(LiveTlsModel, settings=settings(deterministic(8, shrink=False), stateful_step_count=25))
