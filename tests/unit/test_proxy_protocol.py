"""The PROXY protocol: every valid header form in every chunking, a table of malformed
ones (each closed with nothing written), properties over random and mutated headers,
the allow list, and a v2 header over real TCP."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preforkd.loop import Loop
from preforkd.protocols.base import Protocol
from preforkd.protocols.echo import EchoProtocol
from preforkd.protocols.proxy import AllowList, ProxyProtocol, ProxyStats
from preforkd.protocols.proxy_header import MAX_V2_LENGTH, V2_SIGNATURE, ProxyInfo, crc32c, parse
from preforkd.protocols.wrapping import PrefixError
from preforkd.transport import Transport

from httpkit import FakeTransport, accepted_tcp, make_server, parse_responses

REAL_PEER = ("127.0.0.1", 50000)  # what FakeTransport says
REAL_SOCK = ("127.0.0.1", 8000)
PAYLOAD = (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" + b"PROXY TCP4 9.9.9.9 9.9.9.9 9 9\r\n"
           + V2_SIGNATURE + bytes(range(256)))  # a second header is payload


# -- building headers -------------------------------------------------------------

def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2(command: int = 1, family: int = 0x11, addresses: bytes = b"", tlvs: bytes = b"",
       length: int | None = None, version: int = 2) -> bytes:
    body = addresses + tlvs
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", size) + body


def inet(family: int, src: str, dst: str, sport: int, dport: int) -> bytes:
    return (socket.inet_pton(family, src) + socket.inet_pton(family, dst)
            + struct.pack("!HH", sport, dport))


def unix(src: bytes, dst: bytes) -> bytes:
    return src.ljust(108, b"\0") + dst.ljust(108, b"\0")


def with_crc(header: bytes) -> bytes:
    """`header` with a CRC32C TLV appended (its length field grown to cover it)."""
    grown = header[:14] + struct.pack("!H", len(header) - 16 + 7) + header[16:]
    zeroed = grown + tlv(0x03, b"\0\0\0\0")
    return grown + tlv(0x03, struct.pack("!I", crc32c(zeroed)))


V4 = inet(socket.AF_INET, "203.0.113.7", "192.0.2.1", 4242, 443)
V6 = inet(socket.AF_INET6, "2001:db8::7", "::ffff:192.0.2.1", 4242, 443)
SSL = tlv(0x20, b"\x07" + b"\0\0\0\0" + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client")
          + tlv(0x99, b"unknown sub"))

# name, header, peername, sockname, (version, command, family)
VALID = [
    ("v1 TCP4", b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 443\r\n",
     ("203.0.113.7", 4242), ("192.0.2.1", 443), (1, "PROXY", "TCP4")),
    ("v1 TCP4 extremes", b"PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n",
     ("255.255.255.255", 65535), ("0.0.0.0", 0), (1, "PROXY", "TCP4")),
    ("v1 TCP6", b"PROXY TCP6 2001:db8::7 ::ffff:192.0.2.1 4242 443\r\n",
     ("2001:db8::7", 4242, 0, 0), ("::ffff:192.0.2.1", 443, 0, 0), (1, "PROXY", "TCP6")),
    ("v1 TCP6 longest", b"PROXY TCP6 " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7
     + b"fffe 65535 65535\r\n", ("ffff:" * 7 + "ffff", 65535, 0, 0),
     ("ffff:" * 7 + "fffe", 65535, 0, 0), (1, "PROXY", "TCP6")),
    ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n", REAL_PEER, REAL_SOCK, (1, "PROXY", "UNKNOWN")),
    ("v1 UNKNOWN long", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", REAL_PEER, REAL_SOCK,
     (1, "PROXY", "UNKNOWN")),
    ("v2 TCP4", v2(1, 0x11, V4), ("203.0.113.7", 4242), ("192.0.2.1", 443),
     (2, "PROXY", "TCP4")),
    ("v2 TCP6", v2(1, 0x21, V6), ("2001:db8::7", 4242, 0, 0), ("::ffff:192.0.2.1", 443, 0, 0),
     (2, "PROXY", "TCP6")),
    ("v2 UNIX", v2(1, 0x31, unix(b"/run/client.sock", b"/run/server.sock")),
     "/run/client.sock", "/run/server.sock", (2, "PROXY", "UNIX")),
    ("v2 LOCAL", v2(0, 0x00), REAL_PEER, REAL_SOCK, (2, "LOCAL", "UNSPEC")),
    ("v2 LOCAL with a block", v2(0, 0x11, V4), REAL_PEER, REAL_SOCK, (2, "LOCAL", "TCP4")),
    ("v2 LOCAL, family ignored", v2(0, 0x77, b"junk"), REAL_PEER, REAL_SOCK,
     (2, "LOCAL", "UNSPEC")),
    ("v2 UNSPEC", v2(1, 0x00, b"whatever"), REAL_PEER, REAL_SOCK, (2, "PROXY", "UNSPEC")),
    ("v2 UDP4", v2(1, 0x12, V4), REAL_PEER, REAL_SOCK, (2, "PROXY", "UDP4")),
    ("v2 UDP6", v2(1, 0x22, V6), REAL_PEER, REAL_SOCK, (2, "PROXY", "UDP6")),
    ("v2 TCP4 with TLVs", v2(1, 0x11, V4, tlv(0x02, "exämple.org".encode()) + tlv(0x04, b"")
                             + tlv(0x05, b"id-1") + SSL + tlv(0xE0, b"\xff" * 40)
                             + tlv(0x02, b"second ignored")),
     ("203.0.113.7", 4242), ("192.0.2.1", 443), (2, "PROXY", "TCP4")),
    ("v2 TCP6 with CRC32C", with_crc(v2(1, 0x21, V6, tlv(0x01, b"h2"))),
     ("2001:db8::7", 4242, 0, 0), ("::ffff:192.0.2.1", 443, 0, 0), (2, "PROXY", "TCP6")),
]


# -- serving one connection in memory ------------------------------------------------

class Recorder(Protocol):
    made: list = []

    def connection_made(self, transport):
        super().connection_made(transport)
        self.got = b""
        self.extra = {k: transport.get_extra_info(k)
                      for k in ("peername", "sockname", "proxy_protocol")}
        Recorder.made.append(self)

    def data_received(self, data):
        self.got += data


class PeerTransport(FakeTransport):
    peer = REAL_PEER

    def get_extra_info(self, name, default=None):
        if name == "peername" and name not in self.extra:
            return self.peer
        return super().get_extra_info(name, default)


def serve(chunks, version="auto", allow=None, peer=REAL_PEER, inner=Recorder, eof=False):
    Recorder.made = []
    stats = ProxyStats()
    t = PeerTransport(None)
    t.peer = peer
    t.protocol = ProxyProtocol(inner, version, allow, stats)
    t.protocol.connection_made(t)
    for chunk in chunks:
        t.protocol.data_received(chunk)
    if eof:
        t.protocol.eof_received()
    return t, stats


def chunkings(stream: bytes):
    yield "whole", [stream]
    yield "bytewise", [stream[i:i + 1] for i in range(len(stream))]
    for seed in range(6):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(1, 8))))
        bounds = zip([0] + cuts, cuts + [len(stream)], strict=True)
        yield f"seed {seed}", [stream[a:b] for a, b in bounds]


@pytest.mark.parametrize("name,header,peer,sock,what", VALID, ids=[v[0] for v in VALID])
def test_every_valid_form_in_every_chunking(name, header, peer, sock, what):
    for how, chunks in chunkings(header + PAYLOAD):
        t, stats = serve(chunks)
        (inner,) = Recorder.made
        assert t.protocol is inner, how  # handed over, out of the way
        assert inner.got == PAYLOAD, how
        assert inner.extra["peername"] == peer and inner.extra["sockname"] == sock, how
        info = inner.extra["proxy_protocol"]
        assert (info.version, info.command, info.family) == what
        assert (stats.accepted, stats.rejected) == (1, 0) and t.out == b""


def test_the_header_alone_then_nothing():
    t, stats = serve([VALID[0][1]])
    assert Recorder.made[0].got == b"" and stats.accepted == 1


def test_tlvs_are_exposed_and_unknown_ones_kept():
    info = parse(VALID[15][1])[1]
    assert info.authority == "exämple.org" and info.unique_id == b"id-1"
    assert info.ssl == {"client": 7, "verify": 0, "version": "TLSv1.3", "cn": "client"}
    assert info.tlvs[0xE0] == b"\xff" * 40 and info.alpn is None
    crc = parse(VALID[16][1])[1]
    assert crc.alpn == b"h2" and 0x03 in crc.tlvs
    assert parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")[1].tlvs == {}


def test_versions_other_than_the_accepted_one_are_refused():
    v1, v2h = VALID[0][1], VALID[6][1]
    assert parse(v1, "v1")[0] == len(v1) and parse(v2h, "v2")[0] == len(v2h)
    for data, version in ((v1, "v2"), (v2h, "v1"), (v1[:1], "v2"), (v2h[:1], "v1")):
        with pytest.raises(PrefixError):
            parse(data, version)
    with pytest.raises(ValueError):
        ProxyProtocol(Recorder, "v3")
    with pytest.raises(ValueError):
        ProxyProtocol.factory(Recorder, "V1")


def test_rejects_as_early_as_the_bytes_allow():
    for early in (b"G", b"\x16", b"PR0", b"PROXY  ", b"PROXY X", b"PROXY TCP4 1.2.3.4x",
                  b"PROXY TCP4 1.2.3.4 ::", b"PROXY TCP6 ::1 ::1 01", b"PROXY UNKNOWNX",
                  b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", b"PROXY TCP4 1234567890123456",
                  b"\r\n\r\n\x01", V2_SIGNATURE + b"\x31", V2_SIGNATURE + b"\x22",
                  V2_SIGNATURE + b"\x21\x13", V2_SIGNATURE + b"\x21\x11\x00\x0b",
                  V2_SIGNATURE + b"\x21\x11\xff\xff"):
        with pytest.raises(PrefixError):
            parse(early)
    for pending in (b"", b"P", b"PROXY TCP", b"PROXY TCP4 1.2.3.4 5.6.7.8 0",
                    b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r", b"PROXY UNKNOWN anything",
                    V2_SIGNATURE[:5], V2_SIGNATURE + b"\x21\x11\x00\x0c" + V4[:11],
                    V2_SIGNATURE + b"\x20\x99"):  # LOCAL: the family is ignored
        assert parse(pending) is None, pending


# -- malformed headers ---------------------------------------------------------------

def bad_crc() -> bytes:
    good = with_crc(v2(1, 0x11, V4))
    return good[:-1] + bytes([good[-1] ^ 1])


SIG = V2_SIGNATURE
MALFORMED = [
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", "auto"),
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "auto"),
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "auto"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "auto"),
    (b"PROXY TCP4 ::1 ::1 1 2\r\n", "auto"),
    (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "auto"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "auto"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "auto"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "auto"),
    (b"PROXY TCP6 ::1::2 ::1 1 2\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa3\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00\r\n", "auto"),
    (b"PROXY UNKNOWNX\r\n", "auto"),
    (b"PROXY UNKNOWN a\nb\r\n", "auto"),
    (b"PROXY UNKNOWN a\rb\r\n", "auto"),
    (b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n", "auto"),  # no CRLF within 107 bytes
    (b"PROXY\r\n", "auto"),
    (b"PROXY TCP6 " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 6  # 110 bytes
     + b"255.255.255.255 65535 65535\r\n", "auto"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "v2"),
    (SIG[:-1] + b"\r" + b"\x21\x11\x00\x0c" + V4, "auto"),
    (SIG + b"\x11\x11\x00\x0c" + V4, "auto"),  # version 1 nibble
    (SIG + b"\x22\x11\x00\x0c" + V4, "auto"),  # command 2
    (v2(1, 0x13, V4), "auto"),
    (v2(1, 0x41, V4), "auto"),
    (v2(1, 0x01, V4), "auto"),
    (v2(1, 0x11, V4[:11]), "auto"),
    (v2(1, 0x21, V6[:35]), "auto"),
    (v2(1, 0x31, unix(b"/a", b"/b")[:215]), "auto"),
    (v2(1, 0x11, V4, length=MAX_V2_LENGTH + 1), "auto"),
    (v2(1, 0x11, V4, b"\x04\x00"), "auto"),  # a TLV header cut short
    (v2(1, 0x11, V4, b"\x04\x00\x05abcd"), "auto"),  # a TLV past the header's end
    (v2(1, 0x11, V4, tlv(0x04, b"") + b"\xe0\x01\x00" + b"x" * 10), "auto"),
    (bad_crc(), "auto"),
    (v2(1, 0x11, V4, tlv(0x03, b"\0\0\0")), "auto"),
    (v2(1, 0x11, V4, tlv(0x02, b"\xff\xfe")), "auto"),
    (v2(1, 0x11, V4, tlv(0x20, b"\x01\0\0\0")), "auto"),
    (v2(1, 0x11, V4, tlv(0x20, b"\x01\0\0\0\0" + b"\x21\x00\x09TLS")), "auto"),
    (v2(1, 0x11, V4, tlv(0x20, b"\x01\0\0\0\0\x21")), "auto"),
    (VALID[6][1], "v1"),
]


def assert_closed_untouched(t, stats):
    assert t.aborted and t.out == b"" and Recorder.made == []
    assert isinstance(t.protocol, ProxyProtocol) and t.protocol.buffer == b""
    assert (stats.accepted, stats.rejected) == (0, 1)


@pytest.mark.parametrize("data,version", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_headers_close_with_nothing_written(data, version):
    with pytest.raises(PrefixError):
        parse(data + PAYLOAD, version)
    for chunks in ([data + PAYLOAD], [data[i:i + 1] for i in range(len(data))] + [PAYLOAD]):
        t, stats = serve(chunks, version)
        assert_closed_untouched(t, stats)


def test_a_peer_leaving_halfway_is_rejected_and_a_silent_one_is_not():
    for cut in (b"PROXY TCP4 1.2.3.4", SIG, VALID[6][1][:-1], SIG + b"\x21\x11\x00"):
        t, stats = serve([cut], eof=True)
        assert_closed_untouched(t, stats)
    t, stats = serve([], eof=True)
    assert (stats.accepted, stats.rejected) == (0, 0) and Recorder.made == []


def test_the_wrapper_bound_is_the_v2_cap():
    big = v2(1, 0x11, V4, tlv(0xE0, b"x" * (MAX_V2_LENGTH - 12 - 3)))
    assert len(big) == ProxyProtocol.MAX_PREFIX
    for how, chunks in chunkings(big + PAYLOAD):
        t, stats = serve(chunks)
        assert Recorder.made[0].got == PAYLOAD and stats.accepted == 1, how


# -- the allow list --------------------------------------------------------------------

@pytest.mark.parametrize("allow,peer,allowed", [
    (None, REAL_PEER, True),
    ([], REAL_PEER, True),
    (["10.0.0.0/8"], REAL_PEER, False),
    (["10.0.0.0/8", "127.0.0.0/8"], REAL_PEER, True),
    ([ipaddress.ip_network("127.0.0.1/32")], REAL_PEER, True),
    (["127.0.0.1"], ("127.0.0.2", 1), False),
    (["::1"], ("::1", 5, 0, 0), True),
    (["fe80::/10"], ("fe80::1%eth0", 5, 0, 2), True),
    (["10.0.0.0/8"], ("::ffff:10.1.2.3", 5, 0, 0), True),  # a dual-stack listener
    (["::/0"], REAL_PEER, False),
    (["127.0.0.0/8"], "", False),  # a unix socket's peer
    (["unix"], "", True),
    (["unix"], "/run/lb.sock", True),
    (["unix"], REAL_PEER, False),
    (["127.0.0.0/8"], None, False),  # the peer left before we asked
    ("127.0.0.0/8", REAL_PEER, True),  # one network as a string
    ("10.0.0.1", ("1.0.0.0", 5), False),  # (not the networks "1", "0", ".")
])
def test_the_allow_list_decides_before_a_byte_is_read(allow, peer, allowed):
    stream = VALID[6][1] + PAYLOAD
    t, stats = serve([stream], allow=allow, peer=peer)
    if allowed:
        assert Recorder.made[0].got == PAYLOAD and stats.accepted == 1
    else:
        assert_closed_untouched(t, stats)


def test_a_bad_allow_list_fails_at_once():
    with pytest.raises(ValueError):
        ProxyProtocol.factory(Recorder, allow=["10.0.0.0/33"])


def test_the_real_peer_survives_a_header_that_keeps_it():
    t, _ = serve([b"PROXY UNKNOWN\r\n"], allow=["127.0.0.0/8"], peer=("127.0.0.9", 7))
    assert Recorder.made[0].extra["peername"] == ("127.0.0.9", 7)


def test_the_factory_parses_once_and_counts_in_one_place():
    stats = ProxyStats()
    make = ProxyProtocol.factory(Recorder, "v2", ["127.0.0.0/8", "unix"], stats)
    first, second = make(), make()
    assert first.allow is second.allow and first.stats is stats and first is not second
    assert isinstance(first.allow, AllowList) and first.allow.unix
    for proto in (first, second):
        t = FakeTransport(proto)
        proto.connection_made(t)
        proto.data_received(VALID[6][1])
    assert (stats.accepted, stats.rejected) == (2, 0)


def test_in_front_of_http_and_echo():
    server = make_server(lambda env, start: (start("200 OK", []), [
        f"{env['REMOTE_ADDR']}:{env['REMOTE_PORT']}".encode()])[1])
    requests = b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"
    for how, chunks in chunkings(VALID[0][1] + requests[:5]):  # the requests' own chunkings
        t, _ = serve(chunks + [requests[5:]], inner=server.make_protocol)  # are HTTP's tests
        bodies = [r.body for r in parse_responses(bytes(t.out), closed=False)]
        assert bodies == [b"203.0.113.7:4242"] * 2, how
    t, _ = serve([VALID[7][1] + PAYLOAD], inner=EchoProtocol)
    assert bytes(t.out) == PAYLOAD


# -- properties ------------------------------------------------------------------------

ports = st.integers(0, 65535)
v4s = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
v6s = st.integers(0, 2**128 - 1).map(
    lambda n: socket.inet_ntop(socket.AF_INET6, n.to_bytes(16, "big")))
unknown_tlvs = st.lists(st.tuples(st.sampled_from([0x01, 0x04, 0x05, 0x30, 0xE0, 0xEA, 0xFF]),
                                  st.binary(max_size=40)), max_size=4)


@st.composite
def headers(draw):
    """(header bytes, expected peername, expected sockname)."""
    kind = draw(st.sampled_from(["v1-4", "v1-6", "v1-unknown", "v2-4", "v2-6", "v2-unix",
                                 "v2-local"]))
    if kind == "v1-unknown":
        return b"PROXY UNKNOWN\r\n", REAL_PEER, REAL_SOCK
    if kind == "v2-local":
        return v2(0, draw(st.integers(0, 255)), draw(st.binary(max_size=60))), REAL_PEER, \
            REAL_SOCK
    if kind == "v2-unix":
        names = st.binary(min_size=1, max_size=107).map(lambda b: b"/" + b.replace(b"\0", b"")
                                                        [:106])
        src, dst = draw(names), draw(names)
        return v2(1, 0x31, unix(src, dst)), src.decode("utf-8", "surrogateescape"), \
            dst.decode("utf-8", "surrogateescape")
    six = kind.endswith("6")
    src, dst = draw(v6s if six else v4s), draw(v6s if six else v4s)
    sport, dport = draw(ports), draw(ports)
    peer = (src, sport, 0, 0) if six else (src, sport)
    sock = (dst, dport, 0, 0) if six else (dst, dport)
    if kind.startswith("v1"):
        line = f"PROXY TCP{'6' if six else '4'} {src} {dst} {sport} {dport}\r\n"
        return line.encode(), peer, sock
    family = socket.AF_INET6 if six else socket.AF_INET
    extra = b"".join(tlv(k, v) for k, v in draw(unknown_tlvs))
    header = v2(1, 0x21 if six else 0x11, inet(family, src, dst, sport, dport), extra)
    return (with_crc(header) if draw(st.booleans()) else header), peer, sock


@settings(max_examples=150, deadline=None, derandomize=True)
@given(headers(), st.binary(max_size=64), st.lists(st.integers(1, 40), max_size=30))
def test_property_any_chunking_gives_the_same_result(header, payload, sizes):
    data, peer, sock = header
    stream, chunks, pos = data + payload, [], 0
    for size in sizes + [len(data + payload)]:
        chunks.append(stream[pos:pos + size])
        pos += size
    t, stats = serve(chunks)
    (inner,) = Recorder.made
    assert inner.got == payload and stats.accepted == 1 and t.out == b""
    assert inner.extra["peername"] == peer and inner.extra["sockname"] == sock
    assert parse(stream)[0] == len(data)


def check_success(data: bytes, length: int, info: ProxyInfo) -> None:
    """A header that parsed says exactly what its bytes say, read another way."""
    assert 0 < length <= len(data)
    header = data[:length]
    assert all(parse(header[:n]) is None for n in range(len(header)))  # no earlier end
    if info.version == 1:
        assert header.startswith(b"PROXY ") and header.endswith(b"\r\n")
        assert header.count(b"\r") == 1 and header.count(b"\n") == 1
        words = header[:-2].split(b" ")
        if info.family == "UNKNOWN":
            return
        assert len(words) == 6 and words[1] == info.family.encode()
        for word, port, address in ((words[2], words[4], info.source),
                                    (words[3], words[5], info.destination)):
            assert ipaddress.ip_address(word.decode()) == ipaddress.ip_address(address[0])
            assert str(int(port)).encode() == port and int(port) == address[1]
        return
    assert header[:12] == V2_SIGNATURE and length == 16 + int.from_bytes(header[14:16], "big")
    assert header[12] in (0x20, 0x21)
    if info.command == "PROXY" and info.family in ("TCP4", "TCP6"):
        family, size = (socket.AF_INET, 4) if info.family == "TCP4" else (socket.AF_INET6, 16)
        assert header[13] == (0x11 if size == 4 else 0x21)
        block = header[16:16 + 2 * size + 4]
        assert socket.inet_pton(family, info.source[0]) == block[:size]
        assert socket.inet_pton(family, info.destination[0]) == block[size:2 * size]
        assert (info.source[1], info.destination[1]) == struct.unpack("!HH", block[-4:])


def parse_or_reject(data: bytes) -> None:
    for version in ("auto", "v1", "v2"):
        try:
            found = parse(data, version)
        except PrefixError:
            continue
        if found is not None:
            check_success(data, *found)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.binary(max_size=80),
                 st.binary(max_size=60).map(lambda b: b"PROXY " + b),
                 st.binary(max_size=60).map(lambda b: b"PROXY TCP4 " + b),
                 st.binary(max_size=80).map(lambda b: V2_SIGNATURE + b)))
def test_property_random_bytes_only_ever_raise_prefix_error(data):
    parse_or_reject(data)
    t, stats = serve([data[i:i + 7] for i in range(0, len(data), 7)], eof=True)
    assert stats.accepted + stats.rejected <= 1


@settings(max_examples=300, deadline=None, derandomize=True)
@given(headers(), st.lists(st.tuples(st.sampled_from(["set", "insert", "delete"]),
                                     st.integers(0, 300), st.integers(0, 255)),
                           min_size=1, max_size=3))
def test_property_mutated_headers_never_pass_as_other_addresses(header, edits):
    data = bytearray(header[0] + b"payload")
    for op, where, value in edits:
        i = where % (len(data) + 1)
        if op == "insert":
            data[i:i] = bytes([value])
        elif i < len(data):
            if op == "set":
                data[i] = value
            else:
                del data[i]
    parse_or_reject(bytes(data))


# -- over real TCP ---------------------------------------------------------------------

class SayPeer(Protocol):
    def connection_made(self, transport):
        super().connection_made(transport)
        transport.write(repr(transport.get_extra_info("peername")).encode() + b"|")

    def data_received(self, data):
        self.transport.write(data)


def run_until(loop, done):
    for _ in range(500):  # bounded: each turn waits at most 10 ms
        if done():
            return
        loop.call_later(0.01, loop.stop)
        loop.run()


def test_over_tcp_with_the_real_transport():
    loop = Loop()
    lsock, listener, client, fd, addr = accepted_tcp()
    closed: list = []
    stats = ProxyStats()
    proto = ProxyProtocol.factory(SayPeer, "auto", ["127.0.0.0/8"], stats)()
    t = Transport(loop, fd, proto, closed.append, addr, listener)
    t.start()
    client.sendall(VALID[7][1][:10])  # the header in two reads
    loop.call_later(0.01, loop.stop)
    loop.run()
    client.sendall(VALID[7][1][10:] + b"hello")
    client.settimeout(0.01)
    got = b""

    def arrived():
        nonlocal got
        try:
            got += client.recv(65536)
        except TimeoutError:
            pass
        return got.endswith(b"hello")

    run_until(loop, arrived)
    assert got == b"('2001:db8::7', 4242, 0, 0)|hello"
    assert type(t.get_protocol()) is SayPeer and stats.accepted == 1
    client.close()
    run_until(loop, lambda: bool(closed))
    assert closed == [t]
    lsock.close()
    loop.close()


def test_over_tcp_a_refused_peer_gets_nothing():
    loop = Loop()
    lsock, listener, client, fd, addr = accepted_tcp()
    closed: list = []
    stats = ProxyStats()
    proto = ProxyProtocol(SayPeer, allow=["10.0.0.0/8"], stats=stats)
    t = Transport(loop, fd, proto, closed.append, addr, listener)
    t.start()
    run_until(loop, lambda: bool(closed))
    client.settimeout(1)
    assert client.recv(100) == b"" and stats.rejected == 1 and closed == [t]
    client.close()
    lsock.close()
    loop.close()

