"""Model-based test of the live server: Hypothesis drives several connections, the reference model predicts.

Each example starts a server (``--port 0``, ``--max-line 64``, ``--max-connections 3``,
idle timeout and L14 off) and runs a bounded sequence of steps over up to
three sessions at once: requests and pipelines through the shared client class, and
over raw sockets arbitrary byte payloads (Unicode, empty lines, CRLF, lone CR,
invalid UTF-8, over-long lines), fragments that cut lines and characters
anywhere, the disconnect word in its variants, half-close and reset; a fourth
connection meets the busy limit (L10).  The reference model predicts every
reply byte and every close from the bytes sent so far.  After every step:

* the server process is alive;
* every session's console lines agree with the model: as many "Connection
  established" lines as sessions admitted, one "Connection closed" per closed
  session with the reason the model predicts, one "Message received" per
  message answered, one busy warning per refused connection (so the server's
  session count is the model's);
* a raw connection has received no byte the model does not expect.

At the end the server is sent SIGTERM: every open session must get exactly
its shutdown notice (L11) and a close, and the server must exit 0.

A second variant runs the server with ``--proxy-protocol any`` (O2): every
connection opens with a PROXY header (v1 or v2) naming a made-up client, and
the "Connection established" lines must name exactly those clients; another
rule opens connections whose header the reference rejects (no header, a broken
or cut one), which must get no byte at all, and one refusal line each.

A second, smaller model (``LineDeadlineModel``) turns the message deadline (L14)
on: complete lines sent in fragments are answered as the reference says, and a
client that starts a message and trickles its bytes, one at a time, for longer
than the deadline is closed with exactly the reference's replies, ``error: line
timeout`` and a clean close.  No step asserts when the notice came: a trickle
keeps going until it comes (or the line would grow past ``--max-line``, which
the trickle never reaches).
"""

from __future__ import annotations

import functools
import re
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from client.connection import Connection, ServerError
from server.messages import ENGLISH
from tests.formal import reference, test_live_tls_model
from tests.formal.strategies import any_char, cuts, deterministic, disconnect_variants, line_streams, proxy_headers
from tests.proxywire import v1, v2
from tests.serverproc import ServerProcess
from tests.wire import connect, read_exactly, read_until_closed

pytestmark = pytest.mark.timeout(300)

MAX_LINE = 64
MAX_SESSIONS = 3
READ_DEADLINE = 20.0  # generous: the machine may be busy; only reached when something is wrong
SERVER_ARGS = (
    "--lang",
    "en",
    "--max-line",
    str(MAX_LINE),
    "--max-connections",
    str(MAX_SESSIONS),
    "--idle-timeout",
    "0",
    "--line-timeout",
    "0",
    "--drain-timeout",
    "5",
)
RAW, CLIENT = "raw", "client"
_CLOSED_LINE = re.compile(r"^Connection closed with client \(.*?\): (.+)$")
_DISCONNECT_LINE = re.compile(r"^Client \(.*\) asks to disconnect\.$")
_REASON = {words: reason for reason, words in ENGLISH.reasons.items()}
_ESTABLISHED = "Connection established with client "
_REFUSED = "(PROXY protocol): "

#: What this check covers (tests/formal/test_every_check.py walks the declaration against it): every answered
#: message, the reasons its steps close sessions for, and the flush that precedes every close but a reset.
#: The run itself shows each reason was produced (``REASONS_SEEN``, asserted at the end of the test).
#: With the PROXY protocol on (``ProxiedLiveServerModel``) its sessions start in PROXY_HEADER and leave it by a
#: valid header or a refused one; the message deadline (L14) has its own model (``LineDeadlineModel``); the TLS
#: handshake has its own live model (test_live_tls_model.py), which the walk counts with this one.
COVERS_TRIGGERS = frozenset(
    {
        "message",
        "flushed",
        "disconnect",
        "end_of_stream",
        "line_too_long",
        "shutdown",
        "abort",
        "proxy_header",
        "proxy_rejected",
        "line_timeout",
        *test_live_tls_model.COVERS_TRIGGERS,
    }
)
COVERS_STATES = frozenset(
    {"CONNECTED", "ECHOING", "CLOSING", "CLOSED", "PROXY_HEADER", *test_live_tls_model.COVERS_STATES}
)
NOT_COVERED = {
    "idle_timeout": (
        "timed core model",
        "the server runs with --idle-timeout 0: on a busy machine a step's duration is unknown, so an idle close "
        "could not be predicted; the timed core model drives L9 with a simulated clock",
    ),
}
REASONS_SEEN: Counter[str] = Counter()  # over every example of the run
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


@dataclass
class Link:
    """One admitted connection (one server session) as the model sees it."""

    kind: str
    sock: socket.socket | None = None  # RAW
    client: Connection | None = None  # CLIENT
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    pending: bytearray = field(default_factory=bytearray)  # RAW: planned bytes not yet sent
    end: str | None = None  # how its input ended: None, EOF (half-close) or SHUTDOWN

    def expected(self, end: str | None = None) -> reference.Expected:
        return reference.line_replies(bytes(self.sent), MAX_LINE, end)

    def close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.client is not None:
            self.client.close()


_texts = st.text(any_char, max_size=24).filter(
    lambda t: "\n" not in t and not t.endswith("\r") and not reference.disconnects(t)
)


def _has(kind: str, used: bool = False) -> Callable[[LiveServerModel], bool]:
    """Precondition: an open session of ``kind`` (that has sent something, if ``used``)."""
    return lambda model: bool(model.sessions(kind, used))


def step(method: Callable[..., None]) -> Callable[..., None]:
    """Mark the model unhealthy while a step runs, so that teardown after a failure only cleans up."""

    @functools.wraps(method)
    def run(self: LiveServerModel, *args: object, **kwargs: object) -> None:
        self.healthy = False
        method(self, *args, **kwargs)
        self.healthy = True

    return run


def _wait_until(condition: Callable[[], bool], timeout: float = READ_DEADLINE) -> None:
    """Poll ``condition`` until it holds or the deadline passes (the caller then asserts it)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


_clients = st.tuples(st.ip_addresses(v=4).map(str), st.integers(1, 65535))


class LiveServerModel(RuleBasedStateMachine):
    proxy = False  # O2: the variant below runs the server with --proxy-protocol any

    def __init__(self) -> None:
        super().__init__()
        self.server = ServerProcess(*SERVER_ARGS, *(("--proxy-protocol", "any") if self.proxy else ()))
        self.named: Counter[str] = Counter()  # O2: the clients the headers named
        self.refused = 0  # O2: connections refused for their header
        self.open: list[Link] = []
        self.finished: list[Link] = []  # closed, kept for the message count
        self.admitted = 0
        self.busy = 0
        self.reasons: Counter[str] = Counter()
        self.healthy = True

    # -- helpers ----------------------------------------------------------------

    def sessions(self, kind: str, used: bool = False) -> list[Link]:
        return [s for s in self.open if s.kind == kind and (s.sent or not used)]

    def _pick(self, kind: str, index: int, used: bool = False) -> Link:
        """Closing steps pick sessions that have sent something, so that sessions carry traffic."""
        candidates = self.sessions(kind, used)
        return candidates[index % len(candidates)]

    def _finish(self, session: Link, reason: str, end: str | None = None) -> None:
        session.end = end
        self.open.remove(session)
        self.finished.append(session)
        self.reasons[reason] += 1
        REASONS_SEEN[reason] += 1
        session.close_socket()

    def _check_raw(self, session: Link) -> None:
        """Read what the model expects for the bytes sent so far, and the close if one is due."""
        expected = session.expected()
        due = expected.replies[len(session.received) :]
        got = read_exactly(session.sock, len(due), timeout=READ_DEADLINE)
        session.received += got
        assert got == due, f"sent {bytes(session.sent)[-120:]!r}"
        if expected.closed:
            rest = read_until_closed(session.sock, timeout=READ_DEADLINE)
            assert rest == b"", f"bytes after the last reply: {rest[:200]!r}"
            self._finish(session, expected.reason)

    def _send_raw(self, session: Link, data: bytes) -> None:
        session.sock.sendall(data)
        session.sent += data
        self._check_raw(session)

    # -- rules --------------------------------------------------------------------

    @precondition(lambda self: len(self.open) < MAX_SESSIONS)
    @rule(kind=st.sampled_from([RAW, CLIENT]), client=_clients, version=st.sampled_from([v1, v2]))
    @step
    def open_connection(self, kind: str, client: tuple[str, int], version: Callable[..., bytes]) -> None:
        if kind == RAW:
            session = Link(RAW, sock=connect(self.server.address, timeout=READ_DEADLINE))
        else:
            connection = Connection(self.server.host, self.server.port, timeout=READ_DEADLINE).connect()
            session = Link(CLIENT, client=connection)
        if self.proxy:  # O2: the header first, as a load balancer sends it
            sock = session.sock if kind == RAW else session.client._socket()
            sock.sendall(version(client, ("127.0.0.1", self.server.port)))
            self.named[str(client)] += 1
        self.open.append(session)
        self.admitted += 1

    @precondition(lambda self: self.proxy and len(self.open) < MAX_SESSIONS and self.refused < 4)
    @rule(
        payload=st.one_of(
            line_streams(MAX_LINE),
            proxy_headers().flatmap(lambda h: st.integers(0, len(h) - 1).map(lambda n: h[:n])),
            proxy_headers().flatmap(lambda h: st.binary(min_size=1, max_size=3).map(lambda b: b + h)),
        )
    )
    @step
    def open_with_a_bad_header(self, payload: bytes) -> None:
        """O2: a header the reference rejects (none, cut, preceded by junk), then the end of stream: nothing back."""
        if reference.proxy_header(payload, "any") != reference.REJECTED:
            return  # the bytes happened to make a valid header
        with connect(self.server.address, timeout=READ_DEADLINE) as sock:
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                assert read_until_closed(sock, timeout=READ_DEADLINE) == b""
            except (ConnectionResetError, BrokenPipeError):
                pass  # closed with our bytes unread: a reset, and still nothing was sent
        self.refused += 1

    @precondition(lambda self: len(self.open) == MAX_SESSIONS and self.busy < 2)
    @rule()
    @step
    def open_one_too_many(self) -> None:
        """L10: with every session slot taken, a new connection is refused and no session is made."""
        with connect(self.server.address, timeout=READ_DEADLINE) as sock:
            assert read_until_closed(sock, timeout=READ_DEADLINE) == b"error: server busy\n"
        self.busy += 1

    @precondition(_has(CLIENT))
    @rule(pick=st.integers(0, 99), text=_texts)
    @step
    def client_request(self, pick: int, text: str) -> None:
        session = self._pick(CLIENT, pick)
        session.sent += text.encode() + b"\n"
        expected = session.expected()
        due = expected.replies[len(session.received) :]
        session.received += due
        if expected.reason == "line_too_long":
            with pytest.raises(ServerError) as error:
                session.client.request(text)
            assert error.value.line == f"error: line too long (max {MAX_LINE} bytes)"
            session.client.wait_closed()
            self._finish(session, expected.reason)
            return
        assert session.client.request(text) == due.decode().removesuffix("\n")

    @precondition(_has(CLIENT))
    @rule(pick=st.integers(0, 99), texts=st.lists(_texts.filter(lambda t: len(t.encode()) <= MAX_LINE), max_size=6))
    @step
    def client_pipeline(self, pick: int, texts: list[str]) -> None:
        session = self._pick(CLIENT, pick)
        session.sent += b"".join(text.encode() + b"\n" for text in texts)
        due = session.expected().replies[len(session.received) :]
        session.received += due
        assert list(session.client.pipeline(texts)) == [line.decode() for line in due.split(b"\n")[:-1]]

    @precondition(_has(CLIENT, used=True))
    @rule(
        pick=st.integers(0, 99),
        word=disconnect_variants().filter(
            lambda w: "\n" not in w and not w.endswith("\r") and len(w.encode()) <= MAX_LINE  # else L6, not L4
        ),
    )
    @step
    def client_disconnect(self, pick: int, word: str) -> None:
        session = self._pick(CLIENT, pick, used=True)
        session.sent += word.encode() + b"\n"
        expected = session.expected()
        assert expected.reason == "disconnect"
        assert session.client.disconnect(word) == word.upper()
        self._finish(session, expected.reason)

    @precondition(_has(RAW))
    @rule(pick=st.integers(0, 99), data=st.data())
    @step
    def raw_write(self, pick: int, data: st.DataObject) -> None:
        """Bytes of any kind in one write: lines, CRLF, lone CR, invalid UTF-8, long lines, the word."""
        self._send_raw(self._pick(RAW, pick), data.draw(line_streams(MAX_LINE), label="payload"))

    @precondition(_has(RAW))
    @rule(pick=st.integers(0, 99), data=st.data())
    @step
    def raw_write_fragment(self, pick: int, data: st.DataObject) -> None:
        """Plan more bytes and send an arbitrary prefix of what is planned: cuts fall mid-line, mid-character."""
        session = self._pick(RAW, pick)
        session.pending += data.draw(line_streams(MAX_LINE), label="planned")
        if not session.pending:
            return
        cut = data.draw(st.integers(1, len(session.pending)), label="cut")
        fragment = bytes(session.pending[:cut])
        del session.pending[:cut]
        self._send_raw(session, fragment)

    @precondition(_has(RAW, used=True))
    @rule(pick=st.integers(0, 99), word=disconnect_variants(), crlf=st.booleans(), after=st.binary(max_size=12))
    @step
    def raw_disconnect(self, pick: int, word: str, crlf: bool, after: bytes) -> None:
        """The word in a variant, possibly with bytes after it in the same write (discarded, L4)."""
        session = self._pick(RAW, pick, used=True)
        self._send_raw(session, word.encode() + (b"\r\n" if crlf else b"\n") + after)

    @precondition(_has(RAW, used=True))
    @rule(pick=st.integers(0, 99))
    @step
    def raw_half_close(self, pick: int) -> None:
        """L7: complete messages answered, the unterminated tail answered with no terminator, then the close."""
        session = self._pick(RAW, pick, used=True)
        session.sock.shutdown(socket.SHUT_WR)
        expected = session.expected(reference.EOF)
        rest = read_until_closed(session.sock, timeout=READ_DEADLINE)
        assert bytes(session.received) + rest == expected.replies
        self._finish(session, expected.reason, reference.EOF)

    @precondition(_has(RAW, used=True))
    @rule(pick=st.integers(0, 99))
    @step
    def raw_reset(self, pick: int) -> None:
        session = self._pick(RAW, pick, used=True)
        session.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self._finish(session, "abort")

    # -- invariants -----------------------------------------------------------------

    @invariant()
    @step
    def server_alive(self) -> None:
        assert self.server.proc.poll() is None, f"server exited: {self.server.stderr[-10:]!r}"

    @invariant()
    @step
    def console_agrees_with_the_model(self) -> None:
        messages = sum(s.expected().messages for s in self.open) + self._finished_messages()

        def observed() -> tuple[int, Counter[str], int, int, Counter[str], int]:
            lines = list(self.server.stdout)
            errors = list(self.server.stderr)
            closed = Counter(_REASON[m.group(1)] for line in lines if (m := _CLOSED_LINE.match(line)))
            closed["disconnect"] += sum(bool(_DISCONNECT_LINE.match(line)) for line in lines)  # the seed's line (S4)
            established = [line.removeprefix(_ESTABLISHED) for line in lines if line.startswith(_ESTABLISHED)]
            return (
                len(established),
                closed,
                sum(line.startswith("Message received: ") for line in lines),
                sum("Server busy: connection refused" in line for line in errors),
                Counter(established) if self.proxy else Counter(),
                sum(_REFUSED in line for line in errors),
            )

        wanted = (self.admitted, self.reasons, messages, self.busy, self.named, self.refused)
        _wait_until(lambda: observed() == wanted)
        assert observed() == wanted, (
            "(established, closed reasons, messages, busy, named clients, PROXY refusals) on the console vs the model"
        )

    @invariant()
    @step
    def no_unexpected_bytes(self) -> None:
        for session in self.open:
            if session.kind != RAW:
                continue
            session.sock.setblocking(False)
            try:
                extra = session.sock.recv(4096, socket.MSG_PEEK)
            except BlockingIOError:
                continue
            finally:
                session.sock.settimeout(READ_DEADLINE)
            raise AssertionError(
                f"unexpected bytes from the server: {extra[:200]!r}" if extra else "the server closed an open session"
            )

    def _finished_messages(self) -> int:
        return sum(s.expected(s.end).messages for s in self.finished)

    # -- the end: SIGTERM (L11) -----------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.healthy and self.server.proc.poll() is None:
                self._shutdown_and_check()
        finally:
            for session in self.open:
                session.close_socket()
            self.server.kill()

    def _shutdown_and_check(self) -> None:
        self.server.signal()
        for session in list(self.open):
            expected = session.expected(reference.SHUTDOWN)
            if session.kind == RAW:
                rest = read_until_closed(session.sock, timeout=READ_DEADLINE)
                assert bytes(session.received) + rest == expected.replies
            else:
                assert session.client.receive_line() == "error: server shutting down"
                session.client.wait_closed()
            self._finish(session, "shutdown", reference.SHUTDOWN)
        assert self.server.wait(timeout=READ_DEADLINE) == 0
        self.console_agrees_with_the_model()


def test_live_server_follows_the_reference_model():
    REASONS_SEEN.clear()
    run_state_machine_as_test(
        LiveServerModel,
        settings=settings(deterministic(20, shrink=False), stateful_step_count=40),
    )
    assert set(REASONS_SEEN) >= {"disconnect", "end_of_stream", "line_too_long", "shutdown", "abort"}


class ProxiedLiveServerModel(LiveServerModel):
    proxy = True


def test_live_server_behind_the_proxy_protocol_follows_the_reference_model():
    run_state_machine_as_test(
        ProxiedLiveServerModel,
        settings=settings(deterministic(10, shrink=False), stateful_step_count=40),
    )


LINE_TIMEOUT = 2  # seconds: short, so that an example waits little for it
DEADLINE_ARGS = (
    "--lang",
    "en",
    "--max-line",
    str(MAX_LINE),
    "--idle-timeout",
    "0",
    "--line-timeout",
    str(LINE_TIMEOUT),
)
TRICKLE_PAUSE = 0.25  # between trickled bytes; what matters is that they keep coming past the deadline
_partial = st.text(any_char, min_size=1, max_size=8).map(str.encode).filter(lambda b: b"\n" not in b)


class LineDeadlineModel(RuleBasedStateMachine):
    """L14 against the live server: one raw connection at a time, the reference model predicting."""

    def __init__(self) -> None:
        super().__init__()
        self.server = ServerProcess(*DEADLINE_ARGS)
        self.session: Link | None = None
        self.reasons: Counter[str] = Counter()

    def _open(self) -> Link:
        if self.session is None:
            self.session = Link(RAW, sock=connect(self.server.address, timeout=READ_DEADLINE))
        return self.session

    def _close(self, reason: str) -> None:
        self.reasons[reason] += 1
        self.session.close_socket()
        self.session = None

    @rule(data=st.data())
    def complete_lines_in_fragments(self, data: st.DataObject) -> None:
        """Lines cut anywhere, sent back to back: each message is finished long before its deadline."""
        session = self._open()
        payload = data.draw(line_streams(MAX_LINE), label="payload") + b"\n"
        for fragment in data.draw(cuts(payload), label="fragments"):
            session.sock.sendall(fragment)
        session.sent += payload
        expected = reference.line_replies(bytes(session.sent), MAX_LINE)
        due = expected.replies[len(session.received) :]
        got = read_exactly(session.sock, len(due), timeout=READ_DEADLINE)
        session.received += got
        assert got == due
        if expected.closed:
            assert read_until_closed(session.sock, timeout=READ_DEADLINE) == b""
            self._close(expected.reason)

    @rule(start=_partial)
    def trickle_past_the_deadline(self, start: bytes) -> None:
        """Start a message and keep sending one byte of it at a time: the deadline closes it all the same."""
        session = self._open()
        session.sock.sendall(start)
        session.sent += start
        sock = session.sock
        while len(session.sent) - session.sent.rfind(b"\n") - 1 < MAX_LINE:  # never a too-long line
            if select.select([sock], [], [], TRICKLE_PAUSE)[0]:
                break  # the notice (or the close) is here
            sock.sendall(b"z")
            session.sent += b"z"
        expected = reference.line_replies(bytes(session.sent), MAX_LINE, reference.LINE_TIMEOUT)
        assert expected.reason == "line_timeout"
        rest = read_until_closed(sock, timeout=READ_DEADLINE)
        assert bytes(session.received) + rest == expected.replies
        self._close("line_timeout")

    @invariant()
    def console_agrees(self) -> None:
        def closed() -> Counter[str]:
            lines = list(self.server.stdout)
            ended = Counter(_REASON[m.group(1)] for line in lines if (m := _CLOSED_LINE.match(line)))
            ended["disconnect"] += sum(bool(_DISCONNECT_LINE.match(line)) for line in lines)  # the seed's line (S4)
            return +ended

        _wait_until(lambda: closed() == self.reasons)
        assert closed() == self.reasons
        assert self.server.proc.poll() is None

    def teardown(self) -> None:
        try:
            if self.session is not None and self.server.proc.poll() is None:
                self.server.signal()
                expected = reference.line_replies(bytes(self.session.sent), MAX_LINE, reference.SHUTDOWN)
                rest = read_until_closed(self.session.sock, timeout=READ_DEADLINE)
                assert bytes(self.session.received) + rest == expected.replies
                assert self.server.wait(timeout=READ_DEADLINE) == 0
        finally:
            if self.session is not None:
                self.session.close_socket()
            self.server.kill()


def test_live_server_closes_a_trickled_message_at_its_deadline():
    run_state_machine_as_test(
        LineDeadlineModel,
        settings=settings(deterministic(6, shrink=False), stateful_step_count=6),
    )
