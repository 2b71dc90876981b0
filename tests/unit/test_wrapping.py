"""A wrapping protocol consumes a prefix, then the inner protocol serves the rest with
the peer the prefix named: in memory, and over real TCP with the real transport."""

from __future__ import annotations

import sys

from preforkd import config as configmod
from preforkd.http.server import HttpServer
from preforkd.loop import Loop
from preforkd.protocols.base import Host
from preforkd.protocols.wrapping import PrefixError, WrappingProtocol
from preforkd.scoreboard import Scoreboard
from preforkd.transport import Transport

from httpkit import FakeTransport, accepted_tcp, make_server, parse_responses


class PeerLine(WrappingProtocol):
    """A toy prefix: "PEER <address> <port>\\r\\n" names the real client."""

    def consume(self, data):
        end = data.find(b"\r\n")
        if end < 0:
            return None
        word, _, rest = data[:end].partition(b" ")
        address, _, port = rest.partition(b" ")
        if word != b"PEER" or not port.isdigit():
            raise PrefixError("not a PEER line")
        return end + 2, {"peername": (address.decode(), int(port))}


def whoami(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['REMOTE_ADDR']}:{environ['REMOTE_PORT']}".encode()]


def wrapped(server):
    t = FakeTransport(None)
    proto = PeerLine(server.make_protocol)
    t.protocol = proto
    proto.connection_made(t)
    return t


def test_inner_protocol_sees_the_peer_from_the_prefix_in_every_chunking():
    server = make_server(whoami)
    stream = (b"PEER 203.0.113.7 4242\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
    for size in (len(stream), 1, 5, 23):
        t = wrapped(server)
        for i in range(0, len(stream), size):
            t.protocol.data_received(stream[i:i + size])
        resps = parse_responses(bytes(t.out), closed=False)
        assert [r.body for r in resps] == [b"203.0.113.7:4242"] * 2
        assert type(t.protocol).__name__ == "HttpProtocol"  # handed over, out of the way


def test_malformed_or_endless_prefix_closes_without_an_inner_protocol():
    server = make_server(whoami)
    t = wrapped(server)
    t.protocol.data_received(b"HELLO there\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert t.aborted and t.out == b"" and isinstance(t.protocol, PeerLine)
    t = wrapped(server)
    t.protocol.data_received(b"PEER " + b"1" * PeerLine.MAX_PREFIX)
    assert t.aborted and t.out == b""


def test_over_tcp_with_the_real_transport():
    mod = type(sys)("_wrap_app")
    mod.app = whoami
    sys.modules["_wrap_app"] = mod
    loop = Loop()
    scoreboard = Scoreboard(2)
    connections: set = set()
    host = Host(loop, scoreboard, scoreboard.view(0), 0, 1, connections)
    server = HttpServer(configmod.load("", {"app": "_wrap_app:app"}), host)
    lsock, listener, client, fd, addr = accepted_tcp()
    closed: list = []
    t = Transport(loop, fd, PeerLine(server.make_protocol), closed.append, addr, listener)
    connections.add(t)
    t.start()
    client.sendall(b"PEER 198.51.100.9 7\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
    client.settimeout(0.01)
    got = b""
    for _ in range(500):  # bounded: each turn waits at most 10 ms
        if got.endswith(b"198.51.100.9:7"):
            break
        loop.call_later(0.01, loop.stop)
        loop.run()
        try:
            got += client.recv(65536)
        except TimeoutError:
            pass
    (resp,) = parse_responses(got, closed=False)
    assert resp.status == 200 and resp.body == b"198.51.100.9:7"
    # The worker's view (sweep, state counts) finds the inner protocol, kept alive.
    assert type(t.get_protocol()).__name__ == "HttpProtocol"
    assert server.count_states() == (0, 0, 1)
    client.close()
    for _ in range(500):
        if closed:
            break
        loop.call_later(0.01, loop.stop)
        loop.run()
    assert closed == [t]  # the client's close reached the inner protocol's transport
    lsock.close()
    loop.close()
