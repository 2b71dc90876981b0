"""HttpProtocol + WSGI in memory: real protocol, fake transport, strict response parsing."""

from __future__ import annotations

import sys
from wsgiref.validate import validator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preforkd.http.driver import PHASE_NAMES, TRANSITIONS

from httpkit import PhaseMoves, connect, drain, exchange, make_server, parse_responses


@pytest.fixture(autouse=True)
def _only_listed_phase_moves():
    """Every test here also checks that each change of phase is in TRANSITIONS."""
    with PhaseMoves() as recorded:
        yield
    unlisted = {(PHASE_NAMES[a], PHASE_NAMES[b]) for a, b in recorded.moves - TRANSITIONS.keys()}
    assert not unlisted, f"phase moves missing from TRANSITIONS: {unlisted}"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


def echo_env(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    text = "\n".join(f"{k}={environ[k]}" for k in sorted(environ)
                     if isinstance(environ[k], str)).encode("latin-1") + b"\n--\n" + body
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text]


def env_of(resp) -> dict[str, str]:
    head = resp.body.split(b"\n--\n")[0].decode("latin-1")
    return dict(line.split("=", 1) for line in head.splitlines())


def test_hello_keep_alive_with_content_length():
    srv = make_server(validator(hello))
    out, closed = exchange(srv, [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"] * 3)
    resps = parse_responses(out, closed=closed)
    assert [r.status for r in resps] == [200, 200, 200]
    assert resps[0].headers["content-length"] == "13" and resps[0].body == b"Hello, World!"
    assert "date" in resps[0].headers and not closed


def test_http10_closes_and_10_keepalive_stays():
    srv = make_server(validator(hello))
    out, closed = exchange(srv, [b"GET / HTTP/1.0\r\n\r\n"])
    assert closed and parse_responses(out)[0].headers["connection"] == "close"
    out, closed = exchange(srv, [b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"] * 2)
    assert not closed
    resps = parse_responses(out, closed=False)  # (an HTTP/1.0 client must be told, §9.3)
    assert [r.headers.get("connection") for r in resps] == ["keep-alive"] * 2


def test_http10_keepalive_stream_says_keep_alive_and_gets_no_100_continue():
    def gen(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        yield b"o"
        yield b"k"

    srv = make_server(gen)
    out, closed = exchange(srv, [b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"])
    (r,) = parse_responses(out, closed=False)
    assert r.headers["connection"] == "keep-alive" and r.body == b"ok" and not closed
    out, _ = exchange(make_server(hello), [b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n"
                                           b"Content-Length: 2\r\n\r\n", b"hi"])
    assert b"100 Continue" not in out and parse_responses(out)[0].status == 200


def test_connection_close_honoured():
    srv = make_server(hello)
    out, closed = exchange(srv, [b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"])
    assert closed and parse_responses(out)[0].headers["connection"] == "close"


def test_pipelined_responses_in_order():
    def path_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    srv = make_server(validator(path_app))
    reqs = b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(20))
    for chunks in ([reqs], [reqs[i:i + 7] for i in range(0, len(reqs), 7)]):
        out, _ = exchange(srv, chunks)
        assert [r.body for r in parse_responses(out)] == [b"/%d" % i for i in range(20)]


def test_many_pipelined_requests_do_not_recurse():
    srv = make_server(hello)
    out, _ = exchange(srv, [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 3000])
    assert len(parse_responses(out)) == 3000


def test_head_has_headers_no_body():
    srv = make_server(validator(hello))
    out, _ = exchange(srv, [b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    head, get = parse_responses(out, methods=[b"HEAD", b"GET"])
    assert head.headers["content-length"] == "13" and head.body == b""
    assert get.body == b"Hello, World!"


def test_generator_is_chunked_on_11_and_close_delimited_on_10():
    def gen(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        yield b""
        yield b"bc"

    srv = make_server(validator(gen))
    out, closed = exchange(srv, [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    (r,) = parse_responses(out, closed=closed)
    assert r.headers["transfer-encoding"] == "chunked" and r.body == b"abc" and not closed
    out, closed = exchange(srv, [b"GET / HTTP/1.0\r\n\r\n"])
    (r,) = parse_responses(out, closed=closed)
    assert closed and r.body == b"abc" and "content-length" not in r.headers


def test_single_chunk_generator_gets_content_length():
    def gen(environ, start_response):
        start_response("200 OK", [])
        yield b"only"

    out, _ = exchange(make_server(gen), [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert parse_responses(out)[0].headers["content-length"] == "4"


def test_write_callable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one ")
        return [b"two"]

    out, _ = exchange(make_server(validator(app)), [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert parse_responses(out)[0].body == b"one two"


class Closing:
    closed = 0

    def __init__(self, chunks, fail_at=None):
        self.chunks, self.fail_at = chunks, fail_at

    def __iter__(self):
        for i, c in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("iteration failed")
            yield c

    def close(self):
        Closing.closed += 1


@pytest.mark.parametrize("fail_at,status", [(None, 200), (0, 500)])
def test_iterable_close_is_called(fail_at, status, caplog):
    Closing.closed = 0

    def app(environ, start_response):
        start_response("200 OK", [])
        return Closing([b"a", b"b"], fail_at)

    out, _ = exchange(make_server(app), [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert parse_responses(out)[0].status == status
    assert Closing.closed == 1


def test_close_called_when_failing_mid_body_and_connection_aborted():
    Closing.closed = 0

    def app(environ, start_response):
        start_response("200 OK", [])
        return Closing([b"a", b"b", b"c"], fail_at=2)

    srv = make_server(app)
    proto, t = connect(srv)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert t.aborted and Closing.closed == 1


def test_close_called_when_client_disconnects_mid_stream():
    Closing.closed = 0

    def app(environ, start_response):
        start_response("200 OK", [])
        return Closing([b"x" * 1000] * 100)

    srv = make_server(app)
    proto, t = connect(srv, write_limit=2000)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert t.paused and Closing.closed == 0  # backpressure stopped the pull
    sent_so_far = len(t.out)
    assert sent_so_far < 10000
    proto.connection_lost(None)
    assert Closing.closed == 1


def test_backpressure_pulls_the_stream_as_the_client_reads():
    pulled = []

    def app(environ, start_response):
        start_response("200 OK", [])
        for i in range(50):
            pulled.append(i)
            yield b"y" * 1000

    srv = make_server(app)
    proto, t = connect(srv, write_limit=4000)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert len(pulled) < 10
    data = b""
    for _ in range(200):
        data += t.drain()
        if len(pulled) == 100 and not t.paused:
            break
    data += t.drain()
    resps = parse_responses(data, closed=False)
    assert [len(r.body) for r in resps] == [50000, 50000]


@pytest.mark.parametrize("headers,why", [
    ([("X-Bad", "a\r\nInjected: yes")], "CRLF in value"),
    ([("X-Bad", "a\nb")], "LF in value"),
    ([("X-Bad", "a\x00b")], "NUL in value"),
    ([("X Bad", "v")], "space in name"),
    ([("X-Bad", "snowman \u2603")], "not latin-1"),
    ([("Content-Length", "abc")], "bad content-length"),
])
def test_bad_headers_from_the_app_give_500_never_injection(headers, why):
    def app(environ, start_response):
        start_response("200 OK", headers)
        return [b"body"]

    out, closed = exchange(make_server(app), [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    (r,) = parse_responses(out)
    assert r.status == 500, why
    assert b"Injected" not in out and closed


@pytest.mark.parametrize("status", ["200", "2000 OK", "OK 200", "200 OK\r\nX: y", 200])
def test_bad_status_gives_500(status):
    def app(environ, start_response):
        start_response(status, [])
        return [b""]

    out, _ = exchange(make_server(app), [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert parse_responses(out)[0].status == 500


@pytest.mark.parametrize("declared,body", [(10, [b"short"]), (3, [b"toolong"]),
                                           (10, iter([b"sh", b"ort"])),
                                           (3, iter([b"to", b"olong"]))])
def test_body_disagreeing_with_content_length_closes_the_connection(declared, body):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(declared))])
        return body

    out, closed = exchange(make_server(app),
                           [b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /never HTTP/1.1\r\n\r\n"])
    assert closed
    assert out.count(b"HTTP/1.1 ") == 1  # the pipelined request is not answered after it
    assert b"toolong" not in out  # never more than the declared frame


def test_exception_before_start_response_is_500_then_service_continues():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise ValueError("boom")
        return hello(environ, start_response)

    srv = make_server(app)
    out, closed = exchange(srv, [b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert parse_responses(out)[0].status == 500 and closed
    out, _ = exchange(srv, [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert parse_responses(out)[0].status == 200


def test_exc_info_replaces_headers_before_they_are_sent():
    def app(environ, start_response):
        start_response("200 OK", [("X-First", "1"), ("Content-Type", "text/plain")])
        try:
            raise KeyError("x")
        except KeyError:
            start_response("503 Service Unavailable",
                           [("X-Second", "2"), ("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    out, _ = exchange(make_server(validator(app)), [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    (r,) = parse_responses(out)
    assert r.status == 503 and "x-second" in r.headers and "x-first" not in r.headers


def test_start_response_twice_without_exc_info_is_an_error():
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b""]

    out, _ = exchange(make_server(app), [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert parse_responses(out)[0].status == 500


def test_environ_per_pep3333():
    srv = make_server(validator(echo_env))
    raw = (b"POST /caf%C3%A9/x%2Fy?q=1&r=%20 HTTP/1.1\r\nHost: example.com\r\n"
           b"Content-Type: text/plain\r\nContent-Length: 4\r\nX-Dup: a\r\nX-Dup: b\r\n"
           b"Cookie: a=1\r\nCookie: b=2\r\nX_Under: spoof\r\n\r\nbody")
    out, _ = exchange(srv, [raw])
    (r,) = parse_responses(out)
    env = env_of(r)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/x/y"  # unquoted bytes, decoded latin-1
    assert env["QUERY_STRING"] == "q=1&r=%20"
    assert env["RAW_URI"] == "/caf%C3%A9/x%2Fy?q=1&r=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["SCRIPT_NAME"] == ""
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == "8000"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == "50000"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "4"
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env
    assert env["HTTP_X_DUP"] == "a, b" and env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_UNDER" not in env  # underscores would let X_Under spoof X-Under
    assert env["wsgi.url_scheme"] == "http"
    assert r.body.endswith(b"\n--\nbody")


def test_chunked_upload_gets_content_length_and_body():
    srv = make_server(validator(echo_env))
    out, _ = exchange(srv, [b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"])
    (r,) = parse_responses(out)
    assert env_of(r)["CONTENT_LENGTH"] == "5" and r.body.endswith(b"abcde")


def test_expect_100_continue():
    srv = make_server(echo_env)
    proto, t = connect(srv)
    proto.data_received(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Length: 3\r\n\r\n")
    assert bytes(t.out) == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.data_received(b"abc")
    interim, final = parse_responses(bytes(t.out), closed=False)
    assert interim.status == 100 and final.status == 200 and final.body.endswith(b"abc")
    srv = make_server(echo_env, max_body_bytes="2")
    out, closed = exchange(srv, [b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                                 b"Content-Length: 3\r\n\r\n"])
    assert b"100 Continue" not in out and parse_responses(out)[0].status == 413 and closed


@pytest.mark.parametrize("raw,status", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"H%d: v\r\n"
        b"" % i for i in range(101)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"v" * 70000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
])
def test_client_errors_answer_with_status_and_close(raw, status):
    out, closed = exchange(make_server(hello), [raw])
    (r,) = parse_responses(out)
    assert r.status == status and r.headers["connection"] == "close" and closed


def test_health_path_and_draining():
    """A worker retired (reload, recycling) drains with its health at 200: a reload never
    looks like a stop. When the server stops, health is 503 at once."""
    srv = make_server(hello)
    out, closed = exchange(srv, [b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert parse_responses(out)[0].status == 200 and not closed
    drain(srv)
    out, closed = exchange(srv, [b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"])
    r = parse_responses(out)[0]
    assert r.status == 200 and r.headers["connection"] == "close" and closed
    srv = make_server(hello)
    for hook in srv.host.stop_hooks:
        hook()
    out, closed = exchange(srv, [b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"])
    r = parse_responses(out)[0]
    assert r.status == 503 and "connection" not in r.headers and not closed


def test_status_path_lists_workers():
    import json

    srv = make_server(hello, status_path="/status")
    srv.host.scoreboard.claim(0, 1234, 0, 1, 0.0)
    out, _ = exchange(srv, [b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n"])
    doc = json.loads(parse_responses(out)[0].body)
    assert doc["workers"][0]["pid"] == 1234


def test_requests_are_counted_in_the_scoreboard():
    srv = make_server(hello)
    exchange(srv, [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 5])
    assert srv.host.slot.requests == 5


def test_timeouts_by_phase():
    srv = make_server(hello)
    # header never completed: 408 and close
    proto, t = connect(srv)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
    proto.deadline_passed()
    assert parse_responses(bytes(t.out))[0].status == 408 and t.closed
    # body stalled: 408
    proto, t = connect(srv)
    proto.data_received(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    assert proto.deadline == srv.host.loop.now + srv.config.body_timeout
    proto.deadline_passed()
    assert parse_responses(bytes(t.out))[0].status == 408 and t.closed
    # idle keep-alive: quiet close
    proto, t = connect(srv)
    proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert proto.deadline == srv.host.loop.now + srv.config.keepalive_timeout
    t.out.clear()
    proto.deadline_passed()
    assert t.closed and t.out == b""
    # a connection that never sends a byte: quiet close
    proto, t = connect(srv)
    assert proto.deadline == srv.host.loop.now + srv.config.header_timeout
    proto.deadline_passed()
    assert t.closed and t.out == b""


def test_slowloris_header_deadline_is_not_extended_by_trickling():
    srv = make_server(hello)
    proto, t = connect(srv)
    proto.data_received(b"G")
    first = proto.deadline
    srv.host.loop.now += 5
    proto.data_received(b"ET / HTTP/1.1\r\nHost: t\r\nX: ")
    assert proto.deadline == first


def test_a_drain_closes_no_connection_a_request_may_be_on_its_way_to():
    srv = make_server(hello)
    idle, t_idle = connect(srv)
    idle.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    partial, t_partial = connect(srv)
    partial.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n")
    drain(srv)
    idle.close_when_idle()
    partial.close_when_idle()
    assert not t_idle.closed and not t_partial.closed
    partial.data_received(b"\r\n")  # its response says close, then it closes
    r = parse_responses(bytes(t_partial.out))[0]
    assert r.status == 200 and r.headers["connection"] == "close" and t_partial.closed
    t_idle.drain()
    idle.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
        b"")  # the idle one's next request: the same
    r = parse_responses(bytes(t_idle.out))[0]
    assert r.status == 200 and r.headers["connection"] == "close" and t_idle.closed


@pytest.mark.parametrize("blocks", [100, 10])  # past bodies.SMALL_FILE (sendfile), and not
def test_file_wrapper_uses_sendfile(tmp_path, blocks):
    f = tmp_path / "f.bin"
    f.write_bytes(bytes(range(256)) * blocks)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        fh = open(f, "rb")  # noqa: SIM115
        fh.seek(6)
        return environ["wsgi.file_wrapper"](fh)

    out, _ = exchange(make_server(validator(app)), [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 2])
    r1, r2 = parse_responses(out)
    assert r1.body == f.read_bytes()[6:] == r2.body
    assert r1.headers["content-length"] == str(256 * blocks - 6)


def test_file_wrapper_over_non_file_iterates():
    import io

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"abc" * 10000), 1000)

    out, _ = exchange(make_server(validator(app)), [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert parse_responses(out)[0].body == b"abc" * 10000


def test_welcome_app_by_default():
    out, _ = exchange(make_server(None), [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"])
    r = parse_responses(out)[0]
    assert r.status == 200 and b"Welcome to preforkd" in r.body and b"generation 1" in r.body


VALID = [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
         b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
         b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
         b"HEAD / HTTP/1.0\r\n\r\n", b"GET /s HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n"]


def _mutate(t):
    base, pos, junk, mode = t
    pos %= len(base) + 1
    if mode == 0:
        return base[:pos] + junk + base[pos:]
    if mode == 1:
        return base[:pos] + base[pos + 1:]
    return base[:pos] + junk + base[pos + len(junk):]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(VALID),
    st.binary(max_size=80),
    st.tuples(st.sampled_from(VALID), st.integers(0, 200), st.binary(min_size=1, max_size=3),
              st.integers(0, 2)).map(_mutate)), min_size=1, max_size=4),
    st.integers(1, 50), st.booleans())
def test_random_and_mutated_requests_get_well_framed_answers(parts, chunk, eof):
    """Never an exception; the output always parses as well-framed responses, and a
    4xx/5xx always comes with a close."""
    methods = []

    def app(environ, start_response):
        methods.append(environ["REQUEST_METHOD"].encode())
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        if environ["PATH_INFO"] == "/s":
            return iter([b"a", b"b"])
        return [b"ok"]

    data = b"".join(parts)
    srv = make_server(app)
    out, closed = exchange(srv, [data[i:i + chunk] for i in range(0, len(data), chunk)], eof=eof)
    resps = parse_responses(out, methods=methods, closed=closed)
    finals = [r for r in resps if r.status != 100]
    for r in finals[:-1]:
        assert r.status < 400
    if finals and finals[-1].status >= 400:
        assert closed and finals[-1].headers.get("connection") == "close"


def test_every_answer_restarts_the_keepalive_deadline():
    srv = make_server(hello)
    proto, t = connect(srv)
    for target in (b"/", b"/healthz", b"/"):
        srv.host.loop.now += 10
        proto.data_received(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert proto.deadline == srv.host.loop.now + srv.config.keepalive_timeout


def test_a_stuck_request_is_found_on_the_stack():
    """What the worker's timeout handler stamps: the request the interrupted code serves."""
    seen = []
    def app(environ, start_response):
        seen.append(srv.busy_request(sys._getframe()))
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]
    srv = make_server(app)
    exchange(srv, [b"GET /stuck/here?x=1 HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert seen == [(b"GET", b"/stuck/here?x=1")]
    assert srv.busy_request(sys._getframe()) is None  # not inside a request


@pytest.mark.parametrize("cut", [1, 2, 3, 4])
def test_next_request_begun_in_the_same_read_survives_the_parser_release(cut):
    """A young connection gives back its parser after a response, but not while llhttp
    holds the first bytes of the next request's method (no callback reports them)."""
    srv = make_server(hello)
    req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    out, closed = exchange(srv, [req + req[:cut], req[cut:], req])
    assert [r.status for r in parse_responses(out)] == [200, 200, 200] and not closed
