"""The PROXY protocol header parser (O2): the specification's examples, its limits and our choices."""

from __future__ import annotations

import struct

import pytest

from statemachine.proxy import (
    INET,
    INET6,
    LOCAL,
    PROXY,
    UNIX,
    UNSPEC,
    V1_MAX,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyParser,
    ProxyRejected,
)


def v2(command: int, family: int, block: bytes, length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", size) + block


def inet_block(source: bytes, destination: bytes, ports: tuple[int, int], tlvs: bytes = b"") -> bytes:
    return source + destination + struct.pack("!HH", *ports) + tlvs


def parse(data: bytes, accepts: str = "any") -> tuple[ProxyHeader | None, bytes]:
    parser = ProxyParser(accepts)
    header = parser.feed(data)
    return header, parser.leftover


def rejection(data: bytes, accepts: str = "any") -> str:
    with pytest.raises(ProxyRejected) as error:
        parser = ProxyParser(accepts)
        if parser.feed(data) is None:
            parser.finish()
    return error.value.reason


# -- version 1 -----------------------------------------------------------------------


def test_the_specification_example_and_what_follows_it():
    header, rest = parse(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n")
    assert header == ProxyHeader(1, PROXY, INET, ("192.168.0.1", 56324), ("192.168.0.11", 443))
    assert rest == b"GET / HTTP/1.1\r\n"


def test_v1_tcp6_and_unknown():
    header, _ = parse(b"PROXY TCP6 2001:DB8::7 ::1 4242 5000\r\n")
    assert header == ProxyHeader(1, PROXY, INET6, ("2001:db8::7", 4242), ("::1", 5000))
    assert parse(b"PROXY UNKNOWN\r\n") == (ProxyHeader(1, PROXY, UNSPEC), b"")
    assert parse(b"PROXY UNKNOWN whatever is here\r\nhola\n") == (ProxyHeader(1, PROXY, UNSPEC), b"hola\n")


def test_a_v1_ipv6_address_may_hold_every_character_an_address_may_hold_at_once():
    # hex digits of both cases, colons, and an embedded IPv4 address's digits and dots: one valid address
    address = "ABCD:EF01:2345:6789:abcd:ef01:123.45.67.89"
    assert set(address) == set("0123456789abcdefABCDEF:.")
    header, _ = parse(f"PROXY TCP6 {address} ::1 4242 5000\r\n".encode())
    assert header.source == ("abcd:ef01:2345:6789:abcd:ef01:7b2d:4359", 4242)


def test_the_longest_v1_line_is_107_bytes():
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    longest = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
    assert len(longest) == V1_MAX
    assert parse(longest)[0] == ProxyHeader(1, PROXY, UNSPEC)
    assert rejection(longest[:-2] + b" \r\n") == "version 1 header: no CRLF within 107 bytes"
    assert rejection(b"PROXY UNKNOWN " + b"x" * 100) == "version 1 header: no CRLF within 107 bytes"  # no waiting
    # 106 bytes may still end in CRLF at 107; 107 without LF cannot
    assert parse(b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15)) == (None, b"")
    assert rejection(b"PROXY UNKNOWN " + b"x" * (V1_MAX - 14)) == "version 1 header: no CRLF within 107 bytes"


#: the reason each is refused with, as the console line shows it (O2: one line says why)
V4 = "version 1 header: {!r} is not an IPv4 address in canonical form"
V6 = "version 1 header: {!r} is not an IPv6 address"
PORT = "version 1 header: {!r} is not a port (0-65535, no leading zeros)"
FIELDS = "version 1 header: not five fields separated by single spaces"
PROTOCOL = "version 1 header: the protocol is not TCP4, TCP6 or UNKNOWN"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "version 1 header: a line ended by LF alone, not CRLF"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", "end of stream inside the PROXY header"),  # CR alone, then the end
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx\n", "version 1 header: a CR not followed by LF"),
        (b"PROXY UNKNOWN\rx", "version 1 header: a CR not followed by LF"),  # at once: no LF needed to know
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", FIELDS),  # two spaces
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", FIELDS),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", FIELDS),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", V4.format("01.2.3.4")),  # leading zero
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", PORT.format("01")),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", PORT.format("65536")),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", V4.format("1.2.3.256")),
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", V4.format("1.2.3")),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", V4.format("::1")),  # the family says IPv4
        (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", V6.format("1.2.3.4")),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", V6.format("fe80::1%eth0")),  # a zone is not an address
        (b"PROXY TCP6 1::2::3 ::1 1 2\r\n", V6.format("1::2::3")),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", PROTOCOL),
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", PROTOCOL),
        (b"PROXY UNKNOWNX\r\n", PROTOCOL),
        (b"PROXY TCP4 \xd9\xa1.2.3.4 5.6.7.8 1 2\r\n", "version 1 header: a byte that is not printable US-ASCII"),
        (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", PROTOCOL),
        (b"PROXY\r\n", "not a PROXY protocol header"),
        (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY protocol version 1 or 2 header"),
    ],
)
def test_v1_strict_syntax(line, reason):
    assert rejection(line) == reason


def test_plain_text_is_refused_at_its_first_byte():
    assert rejection(b"h") == "not a PROXY protocol version 1 or 2 header"
    assert rejection(b"PROXI") == "not a PROXY protocol header"
    assert rejection(b"hola\n", "v1") == "not a PROXY protocol version 1 header"


@pytest.mark.parametrize("byte", [b for b in range(256) if b not in (0x0A, 0x0D)])
def test_a_v1_line_holds_only_printable_us_ascii_and_is_refused_at_the_first_other_byte(byte):
    """The line is US-ASCII text: 0x20-0x7E, and CR only right before its LF; anything else is refused when read."""
    if 0x20 <= byte <= 0x7E:
        assert parse(b"PROXY UNKNOWN " + bytes([byte]) + b"\r\n") == (ProxyHeader(1, PROXY, UNSPEC), b"")
    else:
        assert rejection(b"PROXY UNKNOWN " + bytes([byte])) == "version 1 header: a byte that is not printable US-ASCII"


@pytest.mark.parametrize("field", ["X", "8O", "+80", "-1", "1_0", "080", "65536"])
def test_a_v1_port_is_plain_decimal_digits_and_anything_else_is_refused_with_a_reason(field):
    """Only 0-65535 in ASCII digits without leading zeros: not what else Python's int() would read."""
    assert rejection(f"PROXY TCP4 192.0.2.1 192.0.2.2 {field} 80\r\n".encode()) == PORT.format(field)


@pytest.mark.parametrize("octet", ["X", "1_0", "+1", "01", "256"])
def test_a_v1_ipv4_octet_is_plain_decimal_digits(octet):
    assert rejection(f"PROXY TCP4 192.0.2.{octet} 192.0.2.2 1 80\r\n".encode()) == V4.format(f"192.0.2.{octet}")


# -- version 2 -----------------------------------------------------------------------


def test_v2_tcp4_with_tlvs_and_what_follows():
    tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x00"  # ALPN, NOOP
    data = v2(0x21, 0x11, inet_block(bytes([203, 0, 113, 7]), bytes([10, 0, 0, 1]), (4242, 5000), tlvs))
    assert parse(data + b"hola\n") == (
        ProxyHeader(2, PROXY, INET, ("203.0.113.7", 4242), ("10.0.0.1", 5000)),
        b"hola\n",
    )


def test_v2_tcp6():
    source = bytes.fromhex("20010db8000000000000000000000007")
    destination = bytes(15) + b"\x01"
    header, _ = parse(v2(0x21, 0x21, inet_block(source, destination, (1, 65535))))
    assert header == ProxyHeader(2, PROXY, INET6, ("2001:db8::7", 1), ("::1", 65535))


@pytest.mark.parametrize(
    ("family", "size", "expected"),
    [
        (0x11, 12, ProxyHeader(2, "PROXY", "INET", ("0.0.0.0", 0), ("0.0.0.0", 0))),
        (0x21, 36, ProxyHeader(2, "PROXY", "INET6", ("::", 0), ("::", 0))),
    ],
)
def test_v2_addresses_of_exactly_their_size_are_read_and_one_byte_less_is_refused(family, size, expected):
    """The header HAProxy sends most (addresses, no TLVs): the block is exactly the family's two addresses and ports."""
    assert parse(v2(0x21, family, bytes(size)) + b"hola\n") == (expected, b"hola\n")
    assert "cannot hold" in rejection(v2(0x21, family, bytes(size - 1)))


def test_a_header_names_its_command_and_family_in_the_specifications_words():
    """A library user reads a header's command and family in the PROXY protocol's own words."""
    assert [PROXY, LOCAL] == ["PROXY", "LOCAL"]
    assert [UNSPEC, INET, INET6, UNIX] == ["UNSPEC", "INET", "INET6", "UNIX"]
    assert parse(v2(0x20, 0x00, b""))[0].command == "LOCAL"


def test_v2_local_unspec_and_unix_name_no_address():
    assert parse(v2(0x20, 0x00, b""))[0] == ProxyHeader(2, LOCAL, UNSPEC)
    assert parse(v2(0x20, 0x11, b"anything at all"))[0] == ProxyHeader(2, LOCAL, INET)  # LOCAL ignores the block
    assert parse(v2(0x21, 0x00, b""))[0] == ProxyHeader(2, PROXY, UNSPEC)
    assert parse(v2(0x21, 0x31, bytes(216)))[0] == ProxyHeader(2, PROXY, UNIX)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (v2(0x11, 0x11, bytes(12)), "version 2 header: version 1, not 2"),
        (v2(0x22, 0x11, bytes(12)), "version 2 header: unknown command 2"),
        (v2(0x21, 0x41, bytes(12)), "version 2 header: unknown address family or transport 0x41"),
        (v2(0x21, 0x13, bytes(12)), "version 2 header: unknown address family or transport 0x13"),
        (v2(0x21, 0x12, bytes(12)), "version 2 header: a UDP connection, and this server serves TCP"),
        (v2(0x21, 0x11, bytes(11)), "version 2 header: 11 bytes cannot hold the INET addresses"),
        (v2(0x21, 0x11, bytes(12) + b"\x01\x00"), "version 2 header: a TLV cut short"),
        (v2(0x21, 0x11, bytes(12) + b"\x01\x00\x05abc"), "version 2 header: a TLV longer than the header"),
        (v2(0x21, 0x11, bytes(12), length=14), "end of stream inside the PROXY header"),
        (b"\r\n\r\n\x00\r\nQUIT\r", "not a PROXY protocol header (bad version 2 signature)"),
    ],
)
def test_v2_rejections(data, reason):
    """Each refusal says why in the words the console line shows (O2)."""
    assert rejection(data) == reason


@pytest.mark.parametrize(
    ("fixed", "reason"),
    [
        (bytes([0x11]), "version 2 header: version 1, not 2"),
        (bytes([0x22]), "version 2 header: unknown command 2"),
        (bytes([0x21, 0x41]), "version 2 header: unknown address family or transport 0x41"),
        (bytes([0x21, 0x13]), "version 2 header: unknown address family or transport 0x13"),
    ],
)
def test_a_v2_header_is_refused_on_the_byte_that_makes_it_wrong(fixed, reason):
    """No byte more is awaited once the version, the command or the family has shown the header is wrong."""
    with pytest.raises(ProxyRejected) as error:
        ProxyParser("any").feed(V2_SIGNATURE + fixed)  # not finished: the bytes so far suffice
    assert error.value.reason == reason


def test_an_oversized_v2_header_is_refused_from_its_length_field():
    assert parse(v2(0x21, 0x00, bytes(V2_MAX_LENGTH)))[0] == ProxyHeader(2, PROXY, UNSPEC)
    over = v2(0x21, 0x11, b"", length=V2_MAX_LENGTH + 1)
    assert len(over) == 16  # the 1,025 bytes never need to arrive
    assert rejection(over) == "version 2 header: 1025 bytes of addresses and TLVs, over the 1024 allowed"


def test_versions_are_opt_in():
    assert rejection(b"PROXY UNKNOWN\r\n", "v2") == "not a PROXY protocol version 2 header"
    assert rejection(v2(0x20, 0x00, b""), "v1") == "not a PROXY protocol version 1 header"


def test_need_more_then_the_end_of_stream():
    """The console line says which end it was (O2): before any byte of the header, or inside it."""
    parser = ProxyParser()
    assert parser.feed(b"") is None
    with pytest.raises(ProxyRejected) as before:
        parser.finish()
    assert before.value.reason == "end of stream before the PROXY header"
    parser = ProxyParser()
    assert parser.feed(b"PROXY TCP4 1.2") is None
    with pytest.raises(ProxyRejected) as inside:
        parser.finish()
    assert inside.value.reason == "end of stream inside the PROXY header"


def test_accepts_is_checked_and_the_error_names_every_choice_and_nothing_else():
    with pytest.raises(ValueError, match=r"^accepts must be one of v1, v2, any$"):
        ProxyParser("v3")
