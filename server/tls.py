"""TLS (O6) on the workers' own non-blocking loops: the stdlib ``ssl`` over memory buffers.

Why ``SSLObject`` with two ``MemoryBIO``s rather than a non-blocking
``SSLSocket``: the worker keeps every system call.  The transport reads
ciphertext with one ``recv`` (the worker's one read per turn, L16), feeds it
to OpenSSL and takes out all the plaintext it yields; it encrypts replies into
a buffer and writes that with ``send``.  So the traps of TLS on an event loop
become explicit and are handled here:

* "a read needs a write": whatever OpenSSL wants to send after a read
  (handshake flights, alerts) is queued as ciphertext; the worker asks for
  write readiness while any is held (:attr:`TlsTransport.unsent`);
* "a write needs a read": cannot happen, because renegotiation is off
  (``OP_NO_RENEGOTIATION``; TLS 1.3 has none), and a write into a memory
  buffer never waits for the socket.  Should OpenSSL still ask, the
  connection fails like any other TLS error instead of spinning;
* decrypted bytes epoll cannot see: every read drains OpenSSL of all the
  plaintext the bytes just read yield (at most about one read's worth), so
  nothing is left behind.  The two cases where something would still wait
  unseen are taken care of: application data that came with the end of the
  handshake (the worker takes it at once, :meth:`TlsTransport.buffered`), and
  a ``close_notify`` read together with data, in any read or with the end of
  the handshake (the data is returned now, and the socket's receiving side is
  shut so that epoll reports the end of the stream again and the next ``recv``
  returns ``b""``);
* ``unwrap()`` without blocking: :meth:`TlsTransport.shutdown` writes our
  ``close_notify`` and does not wait for the client's; the socket's sending side
  is shut only once every byte of it has gone, so the lingering close (L13)
  follows the ``close_notify``.

The transport looks like the socket it wraps (``recv``, ``send``,
``shutdown``, ``setsockopt``, ``close``, ``fileno``) so that the worker's loop
moves its bytes unchanged.  ``send`` counts plaintext as sent only once all of
its ciphertext is in the kernel: the worker's output queue (and L12's bound)
stays in plaintext, and the transport holds at most one chunk of ciphertext.
"""

from __future__ import annotations

import socket
import ssl

# Plaintext encrypted per step of send(): the ciphertext held beyond the worker's queue.
_CHUNK = 64 * 1024
_RECORD = 16 * 1024
_HANDSHAKE_RECORD = 0x16  # the first byte of every TLS ClientHello


class TlsSetupError(Exception):
    """The certificate or key cannot be used: one clear line at start (S2)."""


class HandshakeFailed(OSError):
    """The TLS handshake failed; ``str()`` says why in a few words for the log."""


class TlsError(OSError):
    """A TLS error after the handshake (a corrupt record, an unexpected message): the connection is aborted."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for TLS 1.2 and later with ``cert`` (PEM chain) and ``key`` (PEM, unencrypted)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TlsSetupError(f"{flag} {path}: {(exc.strerror or str(exc)).lower()}") from None
    try:
        # A key protected by a passphrase would make OpenSSL prompt on the terminal: refuse it instead.
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except (ssl.SSLError, ValueError, _PassphraseNeeded) as exc:
        detail = "the key is protected by a passphrase" if isinstance(exc, _PassphraseNeeded) else _why(exc)
        raise TlsSetupError(
            f"--tls-cert {cert} / --tls-key {key}: not a usable certificate and key: {detail}"
        ) from None
    return context


class _PassphraseNeeded(Exception):
    pass


def _no_passphrase() -> str:
    raise _PassphraseNeeded


def _why(exc: BaseException) -> str:
    """An OpenSSL error in a few lower-case words (``WRONG_VERSION_NUMBER`` -> ``wrong version number``)."""
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason).replace("_", " ").lower()
    return str(exc).lower() or type(exc).__name__


class TlsServer:
    """What a worker needs to serve TLS: the context and how to wrap an accepted socket."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def wrap(self, sock: socket.socket) -> TlsTransport:
        return TlsTransport(sock, self.context)


class TlsTransport:
    """One TLS connection over one accepted non-blocking socket; see the module docstring."""

    __slots__ = ("_cipher", "_closing", "_ended", "_first", "_incoming", "_outgoing", "_owed", "_shut", "_sock", "_ssl")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._cipher = bytearray()  # ciphertext not yet in the kernel
        self._owed = 0  # plaintext whose ciphertext is in _cipher, not yet reported as sent
        self._ended = False  # the client's close_notify (or end of stream) has been read
        self._closing = False  # our close_notify is written
        self._shut = False  # shut the sending side once _cipher is empty
        self._first = -1  # the first byte the client sent, to name plain text in the log

    # -- what the worker asks -------------------------------------------------

    @property
    def unsent(self) -> bool:
        """Ciphertext waits for the socket to take it: the worker should ask for write readiness."""
        return bool(self._cipher)

    def fileno(self) -> int:
        return self._sock.fileno()

    def handshake(self, size: int) -> bool:
        """One read of the handshake: True once it is complete.

        Raises ``BlockingIOError`` when there was nothing to read, ``OSError``
        for a socket error and :class:`HandshakeFailed` for anything else that
        ends it (bad bytes, plain text, end of stream).
        """
        data = self._sock.recv(size)
        if not data:
            raise HandshakeFailed("end of stream")
        if self._first < 0:
            self._first = data[0]
        self._incoming.write(data)
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLError as exc:
            self._take_output()
            try:
                self._flush()  # the alert, if the socket takes it at once
            except OSError:
                pass
            raise HandshakeFailed(self._failure(exc)) from None
        else:
            done = True
        self._take_output()
        self._flush()
        return done

    def buffered(self) -> bytes | None:
        """Plaintext OpenSSL already holds (sent with the end of the handshake): bytes, ``b""`` at end, or None."""
        plain = self._read_plain()
        if plain:
            self._end_after(plain)
            return plain
        return b"" if self._ended else None

    def recv(self, size: int) -> bytes:
        """One read of the socket, decrypted: like ``socket.recv``, ``b""`` is the end of the stream."""
        if self._ended:
            return b""
        data = self._sock.recv(size)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
        plain = self._read_plain()
        if plain:
            self._end_after(plain)
            return plain
        if self._ended or not data:
            self._ended = True
            return b""
        raise BlockingIOError  # part of a record: nothing to give yet

    def _end_after(self, plain: bytes) -> None:
        """The end came with ``plain``: shut the receiving side, so that epoll reports it again once
        the data is taken (the socket itself may have nothing more to say: a ``close_notify`` without FIN)."""
        if self._ended:
            try:
                self._sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt and send from the start of ``data``; returns the plaintext bytes whose ciphertext is all sent.

        The worker calls again with the same unsent data, so a chunk encrypted
        but not yet fully sent is never encrypted twice.
        """
        if not self._cipher and len(data) <= _CHUNK and not self._closing:
            return self._send_small(data)
        if self._cipher:
            self._flush()
            if self._cipher:
                raise BlockingIOError
        sent, self._owed = self._owed, 0
        view = memoryview(data)
        while sent < len(view) and not self._closing:
            chunk = view[sent : sent + _CHUNK]
            self._write(chunk)
            self._owed = len(chunk)
            self._flush()
            if self._cipher:
                break
            sent += self._owed
            self._owed = 0
        if not sent and self._cipher:
            raise BlockingIOError
        return sent

    def _send_small(self, data: bytes | bytearray | memoryview) -> int:
        """The common case, a reply with nothing held: one encryption, one ``send``, no copy kept."""
        self._encrypt(data)
        cipher = self._outgoing.read()
        try:
            sent = self._sock.send(cipher)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(cipher):
            return len(data)
        self._cipher += memoryview(cipher)[sent:]
        self._owed = len(data)
        raise BlockingIOError

    def shutdown(self, how: int) -> None:
        """Send our ``close_notify``, then (once it is all out) shut the socket's sending side."""
        if not self._closing:
            self._closing = True
            try:
                self._ssl.unwrap()
            except ssl.SSLWantReadError:
                pass  # close_notify is written; the client's is not waited for
            except ssl.SSLError:
                pass  # after a protocol error there is no close_notify to send
            self._take_output()
        self._shut = True
        self._flush()

    def setsockopt(self, *args: object) -> None:
        self._sock.setsockopt(*args)

    def close(self) -> None:
        self._sock.close()

    # -- inside ---------------------------------------------------------------

    def _read_plain(self) -> bytes:
        """All the plaintext the ciphertext received so far yields (never more than about one read's worth)."""
        chunks = []
        tls, incoming = self._ssl, self._incoming
        try:
            while True:
                chunk = tls.read(_RECORD)
                if not chunk:
                    self._ended = True
                    break
                chunks.append(chunk)
                if not incoming.pending and not tls.pending():
                    break  # all input consumed: another read would only say "want read"
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self._ended = True  # close_notify, or the stream ended without one: either way the end (L7)
        except ssl.SSLError as exc:
            if not self._closing:
                raise TlsError(_why(exc)) from None
            self._ended = True  # after our close_notify, what the client sends is only waited out
        self._take_output()
        if self._cipher:
            self._flush()
        return b"".join(chunks)

    def _write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._encrypt(chunk)
        self._take_output()

    def _encrypt(self, chunk: bytes | bytearray | memoryview) -> None:
        """``chunk`` into the outgoing buffer (a write into memory never waits for the socket)."""
        try:
            done = 0
            while done < len(chunk):
                done += self._ssl.write(chunk[done:])
        except ssl.SSLError as exc:  # SSLWantReadError included: see the module docstring
            raise TlsError(_why(exc)) from None

    def _take_output(self) -> None:
        if self._outgoing.pending:
            self._cipher += self._outgoing.read()

    def _flush(self) -> None:
        """Hand the kernel what ciphertext it takes now; then the pending shutdown, if any."""
        cipher = self._cipher
        while cipher:
            try:
                sent = self._sock.send(cipher)
            except (BlockingIOError, InterruptedError):
                return
            del cipher[:sent]
        if self._shut:
            self._shut = False
            self._sock.shutdown(socket.SHUT_WR)

    def _failure(self, exc: ssl.SSLError) -> str:
        if 0 <= self._first < 0x80 and self._first != _HANDSHAKE_RECORD:
            return "plain text, not TLS"
        return _why(exc)
