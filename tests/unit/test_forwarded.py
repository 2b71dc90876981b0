"""Trusted forwarding, sans-I/O: parsing Forwarded and X-Forwarded-For, picking the client."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from preforkd.http.forwarded import (
    Trust,
    paired,
    parse_forwarded,
    parse_x_forwarded_for,
    peer_text,
    pick,
    resolve,
)

LOOPBACK = Trust(["127.0.0.1", "::1"])
INNER = Trust(["127.0.0.1", "::1", "10.0.0.0/8"])

# (Forwarded value, [(node, port, proto, host), ...] or None for malformed)
FORWARDED = [
    ("for=192.0.2.43", [("192.0.2.43", "", "", "")]),
    ('for="_gazonk"', [("_gazonk", "", "", "")]),
    ("For=192.0.2.43, for=198.51.100.17", [("192.0.2.43", "", "", ""),
                                          ("198.51.100.17", "", "", "")]),
    ('for="[2001:db8:cafe::17]:4711"', [("2001:db8:cafe::17", "4711", "", "")]),
    ('for="[2001:DB8::1]"', [("2001:db8::1", "", "", "")]),
    ("for=192.0.2.60;proto=http;by=203.0.113.43", [("192.0.2.60", "", "http", "")]),
    ('for="192.0.2.60:8080";PROTO=HTTPS', [("192.0.2.60", "8080", "https", "")]),
    ("for=unknown", [("unknown", "", "", "")]),
    ("for=UNKNOWN;proto=https", [("unknown", "", "https", "")]),
    ('for="_hidden:_port"', [("_hidden", "", "", "")]),
    ('for="unknown:443"', [("unknown", "443", "", "")]),
    ("proto=https;host=example.com", [(None, "", "https", "example.com")]),
    ('host="example.com:8443";for=192.0.2.1', [("192.0.2.1", "", "", "example.com:8443")]),
    ('for="\\1\\9\\2.0.2.1"', [("192.0.2.1", "", "", "")]),  # quoted-pairs
    ("for=192.0.2.1 ; proto=https", [("192.0.2.1", "", "https", "")]),  # OWS around ";"
    ("for=192.0.2.1,,  ,for=192.0.2.2", [("192.0.2.1", "", "", ""),
                                          ("192.0.2.2", "", "", "")]),  # empty elements
    ("for=192.0.2.1;;proto=http;", [("192.0.2.1", "", "http", "")]),
    ('for=192.0.2.1;ext="any, thing; here"', [("192.0.2.1", "", "", "")]),  # extension
    ("proto=ftp;for=192.0.2.1", [("192.0.2.1", "", "ftp", "")]),  # valid, not applied
    ("", []),
    # malformed: the whole value is ignored
    ("for=192.0.2.43:80", None),  # ":" needs quoting
    ("for=[2001:db8::1]", None),  # "[" needs quoting
    ('for="2001:db8::1"', None),  # IPv6 without brackets
    ('for="[2001:db8::1"', None),
    ('for="[2001:db8::1]x"', None),
    ('for="[192.0.2.1]"', None),  # brackets are for IPv6
    ('for="[fe80::1%eth0]"', None),  # zone id
    ("for=192.0.2.256", None),
    ("for=192.0.2.01", None),  # leading zero
    ("for=example.com", None),
    ('for="192.0.2.1:99999"', None),
    ('for="192.0.2.1:"', None),
    ('for="_"', None),
    ('for=""', None),
    ("for=192.0.2.1;for=192.0.2.2", None),  # twice in one element
    ("for=192.0.2.1 for=192.0.2.2", None),
    ("for=192.0.2.1;proto", None),
    ("for = 192.0.2.1", None),
    ('for="192.0.2.1', None),  # unterminated quoted-string
    ('for="192.0.2.1"x', None),
    ("for=192.0.2.1;by=nonsense", None),
    ("for=192.0.2.1;proto=ht^tp", None),
    ("for=192.0.2.1;proto=1http", None),
    ('for=192.0.2.1;host="exa mple.com"', None),
    ('for=192.0.2.1;host="example.com:http"', None),
    ("for=192.0.2.1,garbage", None),
    ("for=192.0.2.1\x00", None),
    ('for="\x01"', None),
]

XFF = [
    ("203.0.113.7", ["203.0.113.7"]),
    ("203.0.113.7, 10.0.0.1", ["203.0.113.7", "10.0.0.1"]),
    ("203.0.113.7,10.0.0.1 ,\t127.0.0.1", ["203.0.113.7", "10.0.0.1", "127.0.0.1"]),
    ("2001:db8::1, ::1", ["2001:db8::1", "::1"]),
    ("[2001:db8::1]:4711", ["2001:db8::1"]),
    ("203.0.113.7:5000", ["203.0.113.7"]),
    ("unknown, 10.0.0.1", ["unknown", "10.0.0.1"]),
    ("_hidden", ["_hidden"]),
    ("203.0.113.7, , 10.0.0.1", ["203.0.113.7", "10.0.0.1"]),
    ("", []),
    ("not-an-ip, 10.0.0.1", None),
    ("203.0.113.7 10.0.0.1", None),
    ("203.0.113.700", None),
    ("fe80::1%eth0", None),
    ('"203.0.113.7"', None),
    ("203.0.113.7:port", None),
    ("[203.0.113.7]", None),
]


def shape(hops):
    return None if hops is None else [(h.node, h.port, h.proto, h.host) for h in hops]


@pytest.mark.parametrize("value,expected", FORWARDED)
def test_forwarded(value, expected):
    assert shape(parse_forwarded(value)) == expected


@pytest.mark.parametrize("value,expected", XFF)
def test_x_forwarded_for(value, expected):
    hops = parse_x_forwarded_for(value)
    assert (None if hops is None else [h.node for h in hops]) == expected


def test_the_tables_hold_enough_cases():
    assert len(FORWARDED) + len(XFF) >= 30
    assert sum(e is None for _, e in FORWARDED + XFF) >= 20


@pytest.mark.parametrize("chain,trust,client", [
    ("203.0.113.7, 10.0.0.1", LOOPBACK, "10.0.0.1"),
    ("203.0.113.7, 10.0.0.1", INNER, "203.0.113.7"),
    ("198.51.100.1, 203.0.113.7, 10.0.0.1, 127.0.0.1", INNER, "203.0.113.7"),
    ("10.0.0.2, 10.0.0.1", INNER, "10.0.0.2"),  # all trusted: the left-most
    ("203.0.113.7, 10.0.0.1", Trust(["*"]), "203.0.113.7"),
    ("unknown, 10.0.0.1", INNER, "unknown"),
    ("10.0.0.5, _hidden, 10.0.0.1", INNER, "_hidden"),
    ("::ffff:10.0.0.9, 203.0.113.7, ::ffff:10.0.0.1", INNER, "203.0.113.7"),
])
def test_pick_takes_the_right_most_untrusted_hop(chain, trust, client):
    hops = parse_x_forwarded_for(chain)
    assert hops[pick(hops, trust.hop)].node == client


def test_trust_decides_peers():
    assert LOOPBACK.peer(("127.0.0.1", 5000))
    assert LOOPBACK.peer(("::1", 5000, 0, 0))
    assert LOOPBACK.peer(("::ffff:127.0.0.1", 5000, 0, 0))  # a dual-stack listener
    assert not LOOPBACK.peer(("127.0.0.2", 5000))
    assert Trust(["127.0.0.0/8"]).peer(("127.0.0.2", 5000))
    assert not LOOPBACK.peer("")  # a unix socket needs "unix"
    assert Trust(["unix"]).peer("") and Trust(["unix"]).peer("/run/x.sock")
    assert not Trust(["unix"]).peer(("127.0.0.1", 1))
    assert Trust(["*"]).peer(("192.0.2.1", 1)) and Trust(["*"]).peer("")
    assert not Trust([]).peer(("127.0.0.1", 1)) and not Trust([])
    v6 = Trust(["2001:db8::/32", "192.0.2.0/24"])
    assert v6.peer(("2001:db8:1::5", 1, 0, 0)) and not v6.peer(("2001:db9::5", 1, 0, 0))
    assert v6.peer(("::ffff:192.0.2.9", 1, 0, 0)) and not v6.peer(("::ffff:192.0.3.9", 1, 0, 0))
    assert v6.peer(("fe80::1%eth0", 1, 0, 2)) is False
    assert not LOOPBACK.peer(None) and not LOOPBACK.peer(("not an address", 1))


def test_paired_lists_line_up_from_the_right():
    assert paired(None, 2, 0) == ""
    assert paired("https", 2, 0) == "https"  # one value: the nearest proxy set it
    assert paired("https, http", 2, 0) == "https"
    assert paired("https, http", 2, 1) == "http"
    assert paired("a, b, c", 2, 0) == "b"
    assert paired("https", 0, 0) == "https"
    assert paired("http, https", 0, 0) == "https"


def env(**headers):
    e = {"wsgi.url_scheme": "http", "HTTP_HOST": "internal:8000",
         "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000"}
    e.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    return e


def test_resolve_x_forwarded():
    e = env(x_forwarded_for="203.0.113.7, 10.0.0.1", x_forwarded_proto="https")
    assert resolve(e, INNER, False) == {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "",
                                        "wsgi.url_scheme": "https", "HTTPS": "on"}
    assert resolve(e, LOOPBACK, False)["REMOTE_ADDR"] == "10.0.0.1"
    e = env(x_forwarded_for="[2001:db8::1]:4711")
    assert resolve(e, LOOPBACK, False) == {"REMOTE_ADDR": "2001:db8::1", "REMOTE_PORT": "4711"}
    assert resolve(env(x_forwarded_proto="HTTP"), LOOPBACK, False) == {"wsgi.url_scheme": "http"}
    assert resolve(env(x_forwarded_proto="gopher"), LOOPBACK, False) == {}
    # a malformed X-Forwarded-For is ignored on its own; the proto still applies
    e = env(x_forwarded_for="bogus", x_forwarded_proto="https")
    assert resolve(e, LOOPBACK, False) == {"wsgi.url_scheme": "https", "HTTPS": "on"}
    # What a client wrote left of the hops the proxies appended is never read: garbage
    # there cannot hide the client (and make the proxy's own address the client's).
    e = env(x_forwarded_for="bogus, 198.51.100.9")
    assert resolve(e, LOOPBACK, False)["REMOTE_ADDR"] == "198.51.100.9"
    e = env(x_forwarded_for="bogus, 10.0.0.1")  # every hop it reached trusted: the peer
    assert "REMOTE_ADDR" not in resolve(e, INNER, False)


def test_resolve_forwarded_wins_and_takes_the_chosen_elements_proto():
    e = env(forwarded="for=198.51.100.1;proto=http, for=203.0.113.7;proto=https, "
                      "for=10.0.0.1;proto=http",
            x_forwarded_for="192.0.2.99", x_forwarded_proto="http")
    assert resolve(e, INNER, False) == {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "",
                                        "wsgi.url_scheme": "https", "HTTPS": "on"}
    # malformed Forwarded: nothing applies, and X-Forwarded-* are not read instead
    e = env(forwarded="for=nonsense", x_forwarded_for="192.0.2.99")
    assert resolve(e, INNER, False) == {}
    # ... but a client's garbage left of what the proxies appended cannot hide the client
    for junk in ('for="', "for=nonsense", 'x=";,"', ";;"):
        e = env(forwarded=junk + ', for=198.51.100.9;proto=https, for=10.0.0.1')
        got = resolve(e, INNER, False)
        assert got["REMOTE_ADDR"] == "198.51.100.9" and got["HTTPS"] == "on", (junk, got)


def test_resolve_host_only_when_asked():
    e = env(x_forwarded_for="203.0.113.7", x_forwarded_proto="https",
            x_forwarded_host="example.com")
    assert "HTTP_HOST" not in resolve(e, LOOPBACK, False)
    got = resolve(e, LOOPBACK, True)
    assert (got["HTTP_HOST"], got["SERVER_NAME"], got["SERVER_PORT"]) == (
        "example.com", "example.com", "443")
    e = env(x_forwarded_host="example.com", x_forwarded_port="8443")
    got = resolve(e, LOOPBACK, True)
    assert (got["HTTP_HOST"], got["SERVER_NAME"], got["SERVER_PORT"]) == (
        "example.com:8443", "example.com", "8443")
    got = resolve(env(x_forwarded_port="9000"), LOOPBACK, True)
    assert (got["HTTP_HOST"], got["SERVER_NAME"], got["SERVER_PORT"]) == (
        "internal:9000", "internal", "9000")
    got = resolve(env(forwarded='for=192.0.2.1;host="[2001:db8::5]:81"'), LOOPBACK, True)
    assert (got["HTTP_HOST"], got["SERVER_NAME"], got["SERVER_PORT"]) == (
        "[2001:db8::5]:81", "2001:db8::5", "81")
    for bad in ("exa mple.com", "example.com:99999", "<script>", "a/b"):
        assert "HTTP_HOST" not in resolve(env(x_forwarded_host=bad), LOOPBACK, True)
    assert resolve(env(x_forwarded_port="http"), LOOPBACK, True) == {}


def test_peer_text():
    assert peer_text(("192.0.2.1", 5000)) == "192.0.2.1:5000"
    assert peer_text(("::1", 5000, 0, 0)) == "[::1]:5000"
    assert peer_text("") == "unix:"
    assert peer_text("/run/app.sock") == "unix:/run/app.sock"
    assert peer_text(None) == ""


text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=80)
pieces = st.lists(st.sampled_from(
    ["for=", "by=", "proto=", "host=", '"', "\\", ";", ",", " ", "[", "]", ":", "_",
     "unknown", "192.0.2.1", "2001:db8::1", "https", "80", "%", "\x00", "\xff"]), max_size=20)


@given(st.one_of(text, pieces.map("".join)))
def test_random_values_never_raise(value):
    for parse in (parse_forwarded, parse_x_forwarded_for):
        hops = parse(value)
        assert hops is None or isinstance(hops, list)
    e = env(forwarded=value)
    resolve(e, INNER, True)
    e = env(x_forwarded_for=value, x_forwarded_proto=value, x_forwarded_host=value,
            x_forwarded_port=value)
    resolve(e, INNER, True)
    resolve(e, Trust(["*"]), True)


@given(st.binary(max_size=80))
def test_random_bytes_never_raise(raw):
    value = raw.decode("latin-1")  # as the environ holds header values
    parse_forwarded(value)
    parse_x_forwarded_for(value)
    resolve(env(forwarded=value), LOOPBACK, True)
    resolve(env(x_forwarded_for=value, x_forwarded_host=value), LOOPBACK, True)
