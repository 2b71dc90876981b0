"""The sans-I/O HTTP connection, fed with bytes: whole, byte by byte, in random chunks."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preforkd.http.connection import CONTINUE, NEED_DATA, HttpConnection, HttpError, Limits, Request

from httpkit import feed


def events(data: bytes, splits: str = "whole", limits: Limits | None = None,
           eof: bool = False) -> list:
    if splits == "whole":
        pieces = [data]
    elif splits == "bytes":
        pieces = [data[i:i + 1] for i in range(len(data))]
    else:
        rng = random.Random(splits)
        pieces, i = [], 0
        while i < len(data):
            n = rng.randint(1, 40)
            pieces.append(data[i:i + n])
            i += n
    return feed(pieces, eof, limits)


def summary(evs: list) -> list:
    out = []
    for e in evs:
        if isinstance(e, Request):
            body = e.body if isinstance(e.body, (bytes, bytearray)) else e.body_file().read()
            out.append((e.method, e.target, e.version, tuple(e.headers), bytes(body),
                        e.keep_alive))
        elif isinstance(e, HttpError):
            out.append(("error", e.status))
        else:
            out.append(e)
    return out


SPLITS = ["whole", "bytes", "seed-1", "seed-2", "seed-3"]
_CH = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
_CH_FIELDS = ((b"Host", b"t"), (b"Transfer-Encoding", b"chunked"))

VALID = {
    "simple": (b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
               [(b"GET", b"/a/b?x=1", "1.1", ((b"Host", b"h"),), b"", True)]),
    "http10": (b"GET / HTTP/1.0\r\n\r\n", [(b"GET", b"/", "1.0", (), b"", False)]),
    "http10-keepalive": (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                         [(b"GET", b"/", "1.0", ((b"Connection", b"keep-alive"),), b"", True)]),
    "close": (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
              [(b"GET", b"/", "1.1", ((b"Host", b"t"), (b"Connection", b"close")), b"", False)]),
    "content-length": (b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
                       [(b"POST", b"/p", "1.1", ((b"Host", b"t"), (b"Content-Length", b"5")),
                         b"hello", True)]),
    "chunked": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                [(b"POST", b"/", "1.1", ((b"Host", b"t"), (b"Transfer-Encoding", b"chunked")),
                  b"hello world", True)]),
    "pipelined": (b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nPOST /2 HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Length: 2\r\n\r\nokGET /3 HTTP/1.1\r\nHost: t\r\n\r\n",
                  [(b"GET", b"/1", "1.1", ((b"Host", b"t"),), b"", True),
                   (b"POST", b"/2", "1.1", ((b"Host", b"t"), (b"Content-Length", b"2")), b"ok",
                    True),
                   (b"GET", b"/3", "1.1", ((b"Host", b"t"),), b"", True)]),
    # The target's authority is the request's host, whatever Host says (RFC 9112 §3.2.2).
    "absolute-form": (b"GET http://example.com/x HTTP/1.1\r\nHost: t\r\n\r\n",
                      [(b"GET", b"http://example.com/x", "1.1", ((b"Host", b"example.com"),),
                        b"", True)]),
    "leading-crlf": (b"\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
                     [(b"GET", b"/", "1.1", ((b"Host", b"t"),), b"", True)]),
    "leading-crlf-http10": (b"\r\nGET / HTTP/1.0\r\n\r\n", [(b"GET", b"/", "1.0", (), b"", False)]),
    # The version of a parser's first request may be read off its first line: the
    # requests after it must not be.
    "versions-11-then-10": (b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
                            [(b"GET", b"/1", "1.1", ((b"Host", b"t"),), b"", True),
                             (b"GET", b"/2", "1.0", (), b"", False)]),
    "versions-10-then-11": (b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                            b"GET /2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                            [(b"GET", b"/1", "1.0", ((b"Connection", b"keep-alive"),), b"", True),
                             (b"GET", b"/2", "1.1", ((b"Host", b"t"), (b"Connection", b"close")),
                              b"", False)]),
    "expect-then-http10": (b"POST /1 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                           b"Content-Length: 2\r\n\r\nokGET /2 HTTP/1.0\r\n\r\n",
                           [CONTINUE,
                            (b"POST", b"/1", "1.1", ((b"Host", b"t"), (b"Expect", b"100-continue"),
                                                     (b"Content-Length", b"2")), b"ok", True),
                            (b"GET", b"/2", "1.0", (), b"", False)]),
    # Chunked bodies are decoded by preforkd: BWS around ";" and "=" (RFC 9112 §7.1.1),
    # trailers checked and dropped (even framing fields), pipelines around them.
    "chunk-ext-bws": (_CH + b"5 ; a = b ;c\t;d=\"q \\\" r\"\r\nhello\r\n0\r\n\r\n",
                      [(b"POST", b"/", "1.1", _CH_FIELDS, b"hello", True)]),
    "chunked-trailers-dropped": (_CH + b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n",
                                 [(b"POST", b"/", "1.1", _CH_FIELDS, b"hello", True)]),
    "chunked-pipeline": (b"POST /l HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n\r\n\r\n"
                         + _CH + b"1\r\na\r\n0\r\n\r\n" + _CH + b"2\r\nbc\r\n0\r\n\r\n"
                         b"GET /g HTTP/1.1\r\nHost: t\r\n\r\n",
                         [(b"POST", b"/l", "1.1", ((b"Host", b"t"), (b"Content-Length", b"4")),
                           b"\r\n\r\n", True),
                          (b"POST", b"/", "1.1", _CH_FIELDS, b"a", True),
                          (b"POST", b"/", "1.1", _CH_FIELDS, b"bc", True),
                          (b"GET", b"/g", "1.1", ((b"Host", b"t"),), b"", True)]),
    # Nothing is read after a request that ends the connection (RFC 9112 §9.6).
    "close-then-more": (b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                        b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n",
                        [(b"GET", b"/", "1.1", ((b"Host", b"t"), (b"Connection", b"close")),
                          b"", False)]),
    # A refused upgrade's body is framed as usual (RFC 9112 §6.3), then the end.
    "upgrade-with-body": (b"POST / HTTP/1.1\r\nHost: t\r\nUpgrade: x\r\nConnection: upgrade\r\n"
                          b"Content-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: t\r\n\r\n",
                          [(b"POST", b"/", "1.1", ((b"Host", b"t"), (b"Upgrade", b"x"),
                                                   (b"Connection", b"upgrade"),
                                                   (b"Content-Length", b"3")), b"abc", False)]),
    "http12-served-as-11": (b"GET / HTTP/1.2\r\nHost: t\r\n\r\n",
                            [(b"GET", b"/", "1.1", ((b"Host", b"t"),), b"", True)]),
}


@pytest.mark.parametrize("splits", SPLITS)
@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_requests_parse_the_same_however_split(name, splits):
    data, expected = VALID[name]
    assert summary(events(data, splits)) == expected


INVALID = {
    "cl-and-te": (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
                  b"0\r\n\r\n", 400),
    "two-content-lengths": (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
        b"Content-Length: 4\r\n\r\n"
                            b"abcd", 400),
    "same-content-length-twice": (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                                  b"Content-Length: 3\r\n\r\nabc", 400),
    "bad-chunk-size": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
    "ctl-in-name": (b"GET / HTTP/1.1\r\nHost: t\r\nX\x01: a\r\n\r\n", 400),
    "nul-in-value": (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost: t\r\nX : a\r\n\r\n", 400),
    "bare-lf": (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    "unknown-te": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
    "te-not-chunked-last": (b"POST / HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    "negative-cl": (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\n\r\n", 400),
    "garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    "http2": (b"GET / HTTP/2.0\r\n\r\n", 505),
    "expect-other": (b"POST / HTTP/1.1\r\nHost: t\r\nExpect: magic\r\nContent-Length: 1\r\n"
        b"\r\nx", 417),    "chunk-size-trailing-space": (_CH + b"5 \r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-17-digits": (_CH + b"00000000000000005\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-hex-prefix": (_CH + b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-ext-no-value": (_CH + b"5;a=\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-data-too-long": (_CH + b"5\r\nhelloX\r\n0\r\n\r\n", 400),
    "chunk-line-bare-lf": (_CH + b"5\nhello\r\n0\r\n\r\n", 400),
    "chunk-too-large": (_CH + b"7fffffffffffffff\r\n", 413),
    "trailer-space-before-colon": (_CH + b"0\r\nX : y\r\n\r\n", 400),
    "chunked-in-http10": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                          400),
    "no-host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    "unknown-method": (b"FOO / HTTP/1.1\r\nHost: t\r\n\r\n", 501),
    "unknown-method-after-chunked": (_CH + b"0\r\n\r\nBREW / HTTP/1.1\r\nHost: t\r\n\r\n",
                                     501),
    "method-not-a-token": (b"G\x00T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "h2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "connect": (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
}


@pytest.mark.parametrize("splits", SPLITS)
@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_requests_get_their_status(name, splits):
    data, status = INVALID[name]
    evs = summary(events(data, splits))
    assert evs[-1] == ("error", status)
    assert ("error", status) not in evs[:-1]


def test_nothing_after_an_error_is_parsed():
    evs = events(b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
    assert summary(evs) == [("error", 400)]


def test_request_before_an_error_still_comes_first():
    evs = summary(events(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\nGET /bad HTTP/1.1\r\n"
        b"X\x01: y\r\n\r\n"))
    assert evs[0][1] == b"/ok" and evs[1] == ("error", 400)


@pytest.mark.parametrize("splits", ["whole", "bytes"])
def test_a_known_target_does_not_vouch_for_what_follows_it(splits):
    # The usual targets are remembered; a target that begins like one (split across
    # reads, or longer) is still looked at whole.
    ok = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
    for bad in (b"/a#f", b"/a?x#f"):
        evs = summary(events(ok + b"GET " + bad + b" HTTP/1.1\r\nHost: t\r\n\r\n", splits))
        assert evs[0][1] == b"/a" and evs[1] == ("error", 400), bad


def test_the_usual_targets_cache_stays_bounded():
    from preforkd.http import connection

    for i in range(connection._USUAL_MAX + 10):
        events(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
        assert len(connection._USUAL_TARGETS) <= connection._USUAL_MAX
    events(b"GET /" + b"x" * connection._USUAL_MAX_LEN + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert all(len(t) <= connection._USUAL_MAX_LEN for t in connection._USUAL_TARGETS)


@pytest.mark.parametrize("splits", ["whole", "bytes"])
def test_limits(splits):
    small = Limits(max_request_line_bytes=64, max_header_bytes=256, max_header_count=3,
                   max_body_bytes=10, body_buffer_bytes=4)
    long_url = b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n"
    assert summary(events(long_url, splits, small)) == [("error", 414)]
    big_header = b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"v" * 300 + b"\r\n\r\n"
    assert summary(events(big_header, splits, small)) == [("error", 431)]
    many = (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(4))
            + b"\r\n")
    assert summary(events(many, splits, small)) == [("error", 431)]
    cl = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n"
    assert summary(events(cl, splits, small)) == [("error", 413)]
    chunked = (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n"
               b"abcdef\r\n6\r\nabcdef\r\n")
    assert summary(events(chunked, splits, small)) == [("error", 413)]


def test_unterminated_header_line_is_capped():
    """A header line that never ends must not grow memory: 431 once past the limit."""
    conn = HttpConnection(Limits(max_header_bytes=1024))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: ")
    for _ in range(100):
        conn.receive_data(b"v" * 100)
    e = conn.next_event()
    assert isinstance(e, HttpError) and e.status == 431


def test_body_spills_to_a_file_past_the_buffer():
    limits = Limits(body_buffer_bytes=10)
    data = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n" + b"x" * 30
    (req,) = events(data, "bytes", limits)
    assert not isinstance(req.body, (bytes, bytearray))
    assert req.body_file().read() == b"x" * 30 and req.body_size == 30


def test_expect_continue_event_comes_before_the_body():
    conn = HttpConnection(Limits())
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: 3\r\n\r\n")
    assert conn.next_event() is CONTINUE
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"abc")
    assert conn.next_event().body == b"abc"


def test_expect_continue_with_too_large_body_is_413_without_continue():
    evs = summary(events(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: 999\r\n\r\n",
                         limits=Limits(max_body_bytes=10)))
    assert evs == [("error", 413)]


def test_eof_in_the_middle_of_a_request_is_400():
    assert summary(events(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n"
        b"abc", eof=True)) == [
        ("error", 400)]
    assert summary(events(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", eof=True))[0][0] == b"GET"


def test_upgrade_is_answered_then_closed():
    evs = events(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"\r\nxyz")
    assert len(evs) == 1 and isinstance(evs[0], Request) and evs[0].keep_alive is False


VALID_BYTES = [v[0] for v in VALID.values()]


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from(VALID_BYTES), st.integers(0, 400), st.binary(min_size=1, max_size=4))
    .map(lambda t: t[0][:t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1):]),
    st.tuples(st.sampled_from(VALID_BYTES), st.integers(0, 400))
    .map(lambda t: t[0][:t[1] % (len(t[0]) + 1)] + t[0][t[1] % (len(t[0]) + 1) + 1:]),
), st.sampled_from(["whole", "bytes", "seed-7"]))
def test_random_and_mutated_input_never_raises(data, splits):
    evs = events(data, splits, eof=True)
    errors = [i for i, e in enumerate(evs) if isinstance(e, HttpError)]
    assert all(isinstance(e, (Request, HttpError)) or e is CONTINUE for e in evs)
    assert len(errors) <= 1 and (not errors or errors[0] == len(evs) - 1)
    for e in evs:
        if isinstance(e, HttpError):
            assert 400 <= e.status < 600
