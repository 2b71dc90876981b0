"""Trusted forwarding in the environ, through the real HttpProtocol in memory."""

from __future__ import annotations

import json

import pytest

from preforkd.http import forwarded
from preforkd.protocols.proxy import ProxyProtocol

from httpkit import FakeTransport, make_server, parse_responses

KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTPS", "HTTP_HOST", "SERVER_NAME",
        "SERVER_PORT", "preforkd.peer", "HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED")


def app(environ, start_response):
    body = json.dumps({k: environ.get(k) for k in KEYS}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


class PeerTransport(FakeTransport):
    peer: object = ("127.0.0.1", 50000)

    def get_extra_info(self, name, default=None):
        if name == "peername" and name not in self.extra:
            return self.peer
        return super().get_extra_info(name, default)


def request(fields: str = "", host: str = "app.internal:8000") -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {host}\r\n{fields}\r\n".encode()


def environs(server, *requests, peer=("127.0.0.1", 50000)):
    """What the app saw for each request, all on one kept-alive connection."""
    proto = server.make_protocol()
    t = PeerTransport(proto)
    t.peer = peer
    proto.connection_made(t)
    for r in requests:
        proto.data_received(r)
    resps = parse_responses(bytes(t.out), closed=False)
    assert [r.status for r in resps] == [200] * len(requests)
    return [json.loads(r.body) for r in resps]


CHAIN = "X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"


def test_default_trusts_loopback_but_not_the_hops_behind_it():
    (env,) = environs(make_server(app), request(CHAIN))
    assert env["REMOTE_ADDR"] == "10.0.0.1" and env["REMOTE_PORT"] == ""
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert env["preforkd.peer"] == "127.0.0.1:50000"
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.7, 10.0.0.1"  # still visible
    assert env["HTTP_HOST"] == "app.internal:8000"  # forwarded_host is off


def test_trusted_inner_hops_are_skipped():
    server = make_server(app, forwarded_allow_ips=("127.0.0.1", "10.0.0.0/8"))
    (env,) = environs(server, request(CHAIN))
    assert env["REMOTE_ADDR"] == "203.0.113.7"


def test_an_untrusted_peer_changes_nothing():
    server = make_server(app, forwarded_allow_ips=("192.0.2.1",))
    (env,) = environs(server, request(CHAIN + "Forwarded: for=198.51.100.1;proto=https\r\n"))
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == "50000"
    assert env["wsgi.url_scheme"] == "http" and env["HTTPS"] is None
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.7, 10.0.0.1"
    assert env["HTTP_FORWARDED"] == "for=198.51.100.1;proto=https"
    assert env["preforkd.peer"] == "127.0.0.1:50000"


def test_keep_alive_requests_each_get_their_own_values():
    # more requests than it takes for the connection to cache its layer (served > 2)
    fields = ["X-Forwarded-For: 203.0.113.1\r\n", "X-Forwarded-For: 203.0.113.2\r\n", "",
              "X-Forwarded-For: 203.0.113.2\r\n", "X-Forwarded-For: 203.0.113.2\r\n",
              "Forwarded: for=\"[2001:db8::9]:4711\";proto=https\r\n", "",
              "X-Forwarded-For: 203.0.113.3\r\n"]
    got = environs(make_server(app), *(request(f) for f in fields))
    assert [(e["REMOTE_ADDR"], e["REMOTE_PORT"], e["wsgi.url_scheme"]) for e in got] == [
        ("203.0.113.1", "", "http"), ("203.0.113.2", "", "http"),
        ("127.0.0.1", "50000", "http"), ("203.0.113.2", "", "http"),
        ("203.0.113.2", "", "http"), ("2001:db8::9", "4711", "https"),
        ("127.0.0.1", "50000", "http"), ("203.0.113.3", "", "http")]
    assert [e["HTTPS"] for e in got] == [None] * 5 + ["on", None, None]


def test_forwarded_host_is_applied_only_when_enabled():
    fields = CHAIN + "X-Forwarded-Host: www.example.com\r\n"
    (env,) = environs(make_server(app), request(fields))
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == (
        "app.internal:8000", "127.0.0.1", "8000")
    (env,) = environs(make_server(app, forwarded_host=True), request(fields))
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == (
        "www.example.com", "www.example.com", "443")


@pytest.mark.parametrize("allow,peer,addr,shown", [
    (("127.0.0.1",), "", "", "unix:"),
    (("unix",), "", "203.0.113.7", "unix:"),
    (("unix",), "/run/lb.sock", "203.0.113.7", "unix:/run/lb.sock"),
    (("*",), ("192.0.2.50", 1234), "203.0.113.7", "192.0.2.50:1234"),
    (("::1",), ("::1", 1234, 0, 0), "203.0.113.7", "[::1]:1234"),
    (("127.0.0.1",), ("::ffff:127.0.0.1", 1234, 0, 0), "203.0.113.7",
     "[::ffff:127.0.0.1]:1234"),
])
def test_which_peers_are_trusted(allow, peer, addr, shown):
    server = make_server(app, forwarded_allow_ips=allow)
    (env,) = environs(server, request("X-Forwarded-For: 203.0.113.7\r\n"), peer=peer)
    assert env["REMOTE_ADDR"] == addr and env["preforkd.peer"] == shown


def test_the_trust_decision_is_made_once_per_connection(monkeypatch):
    calls = []
    peer = forwarded.Trust.peer
    monkeypatch.setattr(forwarded.Trust, "peer", lambda self, p: calls.append(p) or peer(self, p))
    fields = [f"X-Forwarded-For: 203.0.113.{i}\r\n" for i in range(6)]
    got = environs(make_server(app), *(request(f) for f in fields))
    assert len(calls) == 1 and got[5]["REMOTE_ADDR"] == "203.0.113.5"


def test_forwarding_on_top_of_the_proxy_protocol():
    """The PROXY header's source is the peer that forwarded_allow_ips judges."""
    def serve(allow):
        server = make_server(app, forwarded_allow_ips=allow)
        t = PeerTransport(None)
        t.protocol = ProxyProtocol(server.make_protocol, "v1", ["127.0.0.0/8"])
        t.protocol.connection_made(t)
        t.protocol.data_received(b"PROXY TCP4 10.1.2.3 192.0.2.1 4242 443\r\n"
                                 + request("X-Forwarded-For: 203.0.113.7\r\n"))
        (resp,) = parse_responses(bytes(t.out), closed=False)
        return json.loads(resp.body)

    env = serve(("127.0.0.1",))  # the balancer's client is not trusted to forward
    assert (env["REMOTE_ADDR"], env["preforkd.peer"]) == ("10.1.2.3", "10.1.2.3:4242")
    env = serve(("10.0.0.0/8",))
    assert (env["REMOTE_ADDR"], env["preforkd.peer"]) == ("203.0.113.7", "10.1.2.3:4242")
