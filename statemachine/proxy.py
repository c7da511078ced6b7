"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), without I/O.

A load balancer in front of the server (O2, O3) opens each connection with one
header naming the client it relays.  :class:`ProxyParser` is fed what the
socket read, read by read, and answers one of three ways:

* ``None``: the header is not complete yet (feed more);
* a :class:`ProxyHeader`: the header is complete and valid; the bytes after it
  (:attr:`ProxyParser.leftover`) are the client's first input;
* :class:`ProxyRejected`, with the reason in words: the bytes are not a valid
  header of an accepted version, or cannot become one.

A wrong byte is refused as soon as it is read, so a client that speaks first
without a header is turned away at once rather than at the deadline.  What the
parser holds is bounded: at most :data:`V1_MAX` bytes of a version 1 line, at
most ``16 +`` :data:`V2_MAX_LENGTH` of a version 2 header.

Choices where the specification leaves the receiver free:

* version 1: the line is US-ASCII text ending in CRLF within 107 bytes;
  ``TCP4``/``TCP6`` need exactly two addresses of that family (IPv4 dotted
  decimal without leading zeros; IPv6 as ``inet_pton`` reads it, no zone) and
  two decimal ports 0-65535 without leading zeros, each separated by exactly
  one space; ``UNKNOWN`` may be followed by anything printable, which is
  ignored;
* version 2: the command is LOCAL (the proxy's own connection, a health
  check: the addresses are ignored) or PROXY; TCP over IPv4 or IPv6 gives the
  addresses; UNSPEC (family or transport) and AF_UNIX give no address (the
  socket's own is kept, the specification's fall-back); UDP is refused, since
  a datagram relay cannot be what stands in front of a TCP service; the
  length field may not exceed :data:`V2_MAX_LENGTH`; the TLVs after the
  addresses must be well formed and are skipped (none is interpreted, so a
  CRC32C TLV is not checked).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1 = "v1"
V2 = "v2"
ANY = "any"
ACCEPTS = (V1, V2, ANY)

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest version 1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version and command, family and transport, length
#: The largest version 2 length field accepted: the addresses (216 bytes at most)
#: and TLVs such as ALPN, authority and unique id fit with room to spare.
V2_MAX_LENGTH = 1024

LOCAL = "LOCAL"
PROXY = "PROXY"
INET = "INET"
INET6 = "INET6"
UNSPEC = "UNSPEC"
UNIX = "UNIX"

_V2_FAMILIES = {0x0: UNSPEC, 0x1: INET, 0x2: INET6, 0x3: UNIX}
_STREAM, _DGRAM = 0x1, 0x2
_V2_ADDRESS_LENGTH = {INET: 12, INET6: 36}
_PRINTABLE = frozenset(range(0x20, 0x7F))
_DIGITS = frozenset("0123456789")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")

Address = tuple[str, int]


class ProxyRejected(Exception):
    """The bytes are not a PROXY header this server accepts; ``reason`` says why in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A valid header.  ``source`` and ``destination`` are None when it names no address
    (v2 LOCAL, v1 UNKNOWN, UNSPEC, AF_UNIX): the connection's own addresses then stand."""

    version: int
    command: str
    family: str
    source: Address | None = None
    destination: Address | None = None


class ProxyParser:
    """Reads one header from the start of a connection; see the module docstring."""

    __slots__ = ("_held", "accepts", "leftover")

    def __init__(self, accepts: str = ANY) -> None:
        if accepts not in ACCEPTS:
            raise ValueError(f"accepts must be one of {', '.join(ACCEPTS)}")
        self.accepts = accepts
        self._held = b""
        #: the bytes after the header, once :meth:`feed` has returned it
        self.leftover = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        """The next bytes read; returns the header once complete, else None.  Raises ProxyRejected."""
        held = self._held + data if self._held else data
        first = held[:1]
        if not first:
            return None
        if first == b"\r" and self.accepts != V1:
            header, end = _v2(held)
        elif first == b"P" and self.accepts != V2:
            header, end = _v1(held)
        else:
            expected = {V1: "version 1", V2: "version 2", ANY: "version 1 or 2"}[self.accepts]
            raise ProxyRejected(f"not a PROXY protocol {expected} header")
        if header is None:
            self._held = held
            return None
        self._held = b""
        self.leftover = held[end:]
        return header

    def finish(self) -> None:
        """The client ended its stream before a complete header: always a rejection."""
        if self._held:
            raise ProxyRejected("end of stream inside the PROXY header")
        raise ProxyRejected("end of stream before the PROXY header")


# -- version 1: one text line -------------------------------------------------------


def _v1(held: bytes) -> tuple[ProxyHeader | None, int]:
    head = held[: len(V1_PREFIX)]
    if head != V1_PREFIX[: len(head)]:
        raise ProxyRejected("not a PROXY protocol header")
    end = held.find(b"\n", 0, V1_MAX)
    line = held[:V1_MAX] if end < 0 else held[: end + 1]
    for i, byte in enumerate(line):
        if byte == 0x0D:
            if i + 1 < len(line) and line[i + 1] != 0x0A:
                raise ProxyRejected("version 1 header: a CR not followed by LF")
        elif byte == 0x0A:
            if i == 0 or line[i - 1] != 0x0D:
                raise ProxyRejected("version 1 header: a line ended by LF alone, not CRLF")
        elif byte not in _PRINTABLE:
            raise ProxyRejected("version 1 header: a byte that is not printable US-ASCII")
    if end < 0:
        if len(held) >= V1_MAX:
            raise ProxyRejected(f"version 1 header: no CRLF within {V1_MAX} bytes")
        return None, 0
    return _v1_line(line[len(V1_PREFIX) : -2].decode("ascii")), end + 1


def _v1_line(body: str) -> ProxyHeader:
    if body == "UNKNOWN" or body.startswith("UNKNOWN "):
        return ProxyHeader(1, PROXY, UNSPEC)
    fields = body.split(" ")
    if fields[0] not in ("TCP4", "TCP6"):
        raise ProxyRejected("version 1 header: the protocol is not TCP4, TCP6 or UNKNOWN")
    if len(fields) != 5:
        raise ProxyRejected("version 1 header: not five fields separated by single spaces")
    family = INET if fields[0] == "TCP4" else INET6
    parse = _ipv4 if family == INET else _ipv6
    source, destination = parse(fields[1]), parse(fields[2])
    return ProxyHeader(1, PROXY, family, (source, _port(fields[3])), (destination, _port(fields[4])))


def _ipv4(text: str) -> str:
    parts = text.split(".")
    if len(parts) != 4 or not all(_decimal(part, 255) for part in parts):
        raise ProxyRejected(f"version 1 header: {text!r} is not an IPv4 address in canonical form")
    return text


def _ipv6(text: str) -> str:
    if not text or not set(text) <= _IPV6_CHARS:
        raise ProxyRejected(f"version 1 header: {text!r} is not an IPv6 address")
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise ProxyRejected(f"version 1 header: {text!r} is not an IPv6 address") from None


def _port(text: str) -> int:
    if not _decimal(text, 65535):
        raise ProxyRejected(f"version 1 header: {text!r} is not a port (0-65535, no leading zeros)")
    return int(text)


def _decimal(text: str, high: int) -> bool:
    """A decimal number up to ``high`` written without leading zeros."""
    return (
        0 < len(text) <= len(str(high))
        and set(text) <= _DIGITS
        and (text == "0" or text[0] != "0")
        and int(text) <= high
    )


# -- version 2: a binary block --------------------------------------------------------


def _v2(held: bytes) -> tuple[ProxyHeader | None, int]:
    head = held[: len(V2_SIGNATURE)]
    if head != V2_SIGNATURE[: len(head)]:
        raise ProxyRejected("not a PROXY protocol header (bad version 2 signature)")
    if len(held) > 12:
        if held[12] >> 4 != 2:
            raise ProxyRejected(f"version 2 header: version {held[12] >> 4}, not 2")
        if held[12] & 0xF not in (0x0, 0x1):
            raise ProxyRejected(f"version 2 header: unknown command {held[12] & 0xF}")
    if len(held) > 13:
        family, transport = _V2_FAMILIES.get(held[13] >> 4), held[13] & 0xF
        if family is None or transport > _DGRAM:
            raise ProxyRejected(f"version 2 header: unknown address family or transport 0x{held[13]:02x}")
    if len(held) < V2_FIXED:
        return None, 0
    local = held[12] & 0xF == 0x0
    length = int.from_bytes(held[14:16], "big")
    if length > V2_MAX_LENGTH:
        raise ProxyRejected(f"version 2 header: {length} bytes of addresses and TLVs, over the {V2_MAX_LENGTH} allowed")
    if not local and transport == _DGRAM and family in _V2_ADDRESS_LENGTH:
        raise ProxyRejected("version 2 header: a UDP connection, and this server serves TCP")
    addressed = not local and transport == _STREAM and family in _V2_ADDRESS_LENGTH
    if addressed and length < _V2_ADDRESS_LENGTH[family]:
        raise ProxyRejected(f"version 2 header: {length} bytes cannot hold the {family} addresses")
    end = V2_FIXED + length
    if len(held) < end:
        return None, 0
    if local:
        return ProxyHeader(2, LOCAL, family), end
    if not addressed:
        return ProxyHeader(2, PROXY, family), end
    block = held[V2_FIXED:end]
    size = 4 if family == INET else 16
    make = ipaddress.IPv4Address if family == INET else ipaddress.IPv6Address
    source = str(make(block[:size]))
    destination = str(make(block[size : 2 * size]))
    ports = block[2 * size : 2 * size + 4]
    _check_tlvs(block[2 * size + 4 :])
    source_port, destination_port = int.from_bytes(ports[:2], "big"), int.from_bytes(ports[2:], "big")
    return ProxyHeader(2, PROXY, family, (source, source_port), (destination, destination_port)), end


def _check_tlvs(tlvs: bytes) -> None:
    """Each TLV is a type byte, a two-byte length and that many bytes, ending exactly at the header's end."""
    at = 0
    while at < len(tlvs):
        if at + 3 > len(tlvs):
            raise ProxyRejected("version 2 header: a TLV cut short")
        at += 3 + int.from_bytes(tlvs[at + 1 : at + 3], "big")
        if at > len(tlvs):
            raise ProxyRejected("version 2 header: a TLV longer than the header")


__all__ = [
    "ACCEPTS",
    "ANY",
    "INET",
    "INET6",
    "LOCAL",
    "PROXY",
    "ProxyHeader",
    "ProxyParser",
    "ProxyRejected",
    "UNIX",
    "UNSPEC",
    "V1",
    "V1_MAX",
    "V2",
    "V2_MAX_LENGTH",
    "V2_SIGNATURE",
]
