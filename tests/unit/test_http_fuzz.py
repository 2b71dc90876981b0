"""Fuzz properties of the request side: valid requests, built by hypothesis, then mutated.

A valid request is kept as tokens (request line, field lines, line ends, chunk sizes,
extensions, chunk data, trailers), so a mutation can aim at a structure (a chunk size,
the chunked coding, a line end) as well as at a random byte. The properties:

- no crash: any mutated input gives only Requests, HttpErrors (4xx/5xx) and CONTINUE;
- chunking invariance: the same bytes fed whole, byte by byte and in hypothesis-drawn
  pieces give the same events (a disagreement is a request-smuggling class of bug);
- round trip: a valid pipeline gives exactly the requests that were built;
- nothing after an error: once an HttpError comes, no event follows, whatever follows;
- driver: HttpProtocol (in memory, httpkit) answers at most the requests the parser saw
  plus one error, frames every response, closes after an error response (lingering),
  and ends closed or idle after EOF.

CI runs a small derandomized profile ("http-fuzz"); scripts/fuzz runs the same
properties (PROPERTIES below) for as long as asked, randomised.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preforkd.http.connection import CONTINUE, NEED_DATA, HttpConnection, HttpError, Limits, Request
from preforkd.http.driver import IDLE

from httpkit import connect, feed, make_server, parse_responses

settings.register_profile(
    "http-fuzz", derandomize=True, max_examples=200, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CI = settings.get_profile("http-fuzz")

# Valid forms the generator of valid requests includes.
# RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ).
EXT_BWS = True
# RFC 9110 §5.5: a field value's trailing OWS may hold HTAB, also Transfer-Encoding's.
TE_TRAILING_HTAB = True

# The one status allowed to depend on where reads end: a method llhttp does not know is
# 501 or 400 (see rules.MethodRun); either way it is refused and the connection closes,
# and the requests before it are the same. scripts/fuzz --strict holds even that.
TOLERATE_KNOWN = True

CRLF = b"\r\n"


# -- valid requests ------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A valid pipeline: its bytes and the summary of the events it must give."""

    data: bytes
    expected: tuple
    tokens: tuple = ()

    def __repr__(self) -> str:
        return f"Built(data={self.data!r})"


def _flip_case(draw, name: bytes) -> bytes:
    mask = draw(st.integers(0, (1 << len(name)) - 1))
    return bytes(c ^ 32 if (mask >> i) & 1 and chr(c).isalpha() else c
                 for i, c in enumerate(name))


def _ows(draw, htab: bool = True) -> bytes:
    return draw(st.sampled_from([b"", b"", b" ", b"  ", b"\t", b" \t"] if htab
                                else [b"", b"", b" ", b"  "]))


_PCHARS = [bytes([c]) for c in b"abcxyzABZ0189-._~!$&'()*+,;=:@"] + [b"%41", b"%2F", b"%e2"]
_QCHARS = _PCHARS + [b"/", b"?"]
_TCHARS = b"abcdefghijklmnopqrstuvwxyzABCXYZ0123456789!#$%&'*+.^_`|~-"
_VCHARS = bytes(range(0x21, 0x7F)) + b"\x80\xa0\xe9\xff"

_paths = st.lists(st.lists(st.sampled_from(_PCHARS), max_size=6).map(b"".join), max_size=4)
_queries = st.none() | st.lists(st.sampled_from(_QCHARS), max_size=8).map(b"".join)
_tokens = st.text(alphabet=_TCHARS.decode(), min_size=1, max_size=8).map(str.encode)
_words = st.binary(min_size=1, max_size=6).map(
    lambda b: bytes(_VCHARS[c % len(_VCHARS)] for c in b))
_field_values = st.lists(st.tuples(st.sampled_from([b" ", b"\t", b"  "]), _words),
                         max_size=3).map(lambda ws: b"".join(s + w for s, w in ws).lstrip(b" \t"))
_hosts = st.sampled_from([b"t", b"example.com", b"example.com:8080", b"127.0.0.1:80",
                          b"[::1]", b"[2001:db8::1]:443", b"a-b.c_d~", b"%41.test"])
# Names the parser or the server watches are left to the builder below.
_WATCHED = {b"host", b"content-length", b"transfer-encoding", b"expect", b"connection",
            b"upgrade", b"content-type", b"proxy-connection", b"keep-alive", b"te",
            b"trailer"}
_extra_names = _tokens.filter(lambda n: n.lower() not in _WATCHED)
_EXT_VALUES = [b"1", b"tok", b'"q"', b'"a b;c"', b'"\\""', b'""', b'"\x80"']


@st.composite
def _extensions(draw) -> bytes:
    if draw(st.booleans()):
        return b""
    out = b""
    for _ in range(draw(st.integers(1, 2))):
        bws = (lambda: _ows(draw)) if EXT_BWS else (lambda: b"")
        # (BWS goes before each ";", after it, and around "="; never before the CRLF)
        out += (_ows(draw, htab=True) if draw(st.booleans()) else b"") + b";" + bws()
        out += draw(_tokens)
        value = draw(st.none() | st.sampled_from(_EXT_VALUES) | _tokens)
        if value is not None:
            out += bws() + b"=" + bws() + value
    return out


def _hex(draw, n: int) -> bytes:
    text = b"%x" % n if draw(st.booleans()) else b"%X" % n
    return b"0" * draw(st.integers(0, 2)) + text


@st.composite
def request(draw, last: bool = True) -> tuple[list, list]:
    """One valid request: (tokens, expected events). Not the last of a pipeline: kept alive."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS"]))
    target = b"/" + b"/".join(draw(_paths))
    query = draw(_queries)
    if query is not None:
        target += b"?" + query
    version = draw(st.sampled_from(["1.0", "1.1"]))
    fields: list[tuple[str, bytes, bytes]] = []  # (kind, name, value)

    def field(kind: str, name: bytes, value: bytes, htab: bool = True) -> None:
        fields.append((kind, _flip_case(draw, name), value, _ows(draw), _ows(draw, htab)))

    field("field", b"Host", draw(_hosts))
    for _ in range(draw(st.integers(0, 3))):
        field("field", b"X-" + draw(_extra_names), draw(_field_values))
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == "1.1"
                                   else ["none", "length"]))
    body = b""
    body_tokens: list[tuple[str, bytes]] = []
    if framing == "length":
        body = draw(st.binary(max_size=40))
        field("cl", b"Content-Length", b"%d" % len(body))
        if body:
            body_tokens.append(("body", body))
    elif framing == "chunked":
        field("te", b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"Chunked"])),
              htab=TE_TRAILING_HTAB)
        for chunk in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4)):
            body += chunk
            body_tokens += [("size", _hex(draw, len(chunk))), ("ext", draw(_extensions())),
                            ("eol", CRLF), ("chunk", chunk), ("eol", CRLF)]
        body_tokens += [("size", b"0" * draw(st.integers(1, 3))), ("ext", draw(_extensions())),
                        ("eol", CRLF)]
        for _ in range(draw(st.integers(0, 2))):
            body_tokens += [("trailer", b"X-T" + draw(_tokens) + b": " + draw(_words)),
                            ("eol", CRLF)]
        body_tokens.append(("eol", CRLF))
    continues = False
    if framing != "none" and draw(st.booleans()):
        field("field", b"Expect", b"100-continue")
        continues = version == "1.1" and (framing == "chunked" or len(body) > 0)
    keep_alive = version == "1.1"
    if version == "1.0" and (not last or draw(st.booleans())):
        field("field", b"Connection", b"keep-alive")
        keep_alive = True
    elif version == "1.1" and last and draw(st.booleans()):
        field("field", b"Connection", b"close")
        keep_alive = False
    fields = draw(st.permutations(fields))

    tokens = [("start", b"%s %s HTTP/%s" % (method, target, version.encode())), ("eol", CRLF)]
    for kind, name, value, before, after in fields:
        tokens += [(kind, name + b":" + before + value + after), ("eol", CRLF)]
    tokens += [("eol", CRLF)] + body_tokens
    headers = tuple((name, value) for _, name, value, _, _ in fields)
    expected = [(method, target, version, headers, body, keep_alive)]
    return tokens, ([CONTINUE_MARK] + expected if continues else expected)


@st.composite
def pipelines(draw) -> Built:
    n = draw(st.integers(1, 5))
    tokens, expected = [], []
    for i in range(n):
        t, e = draw(request(last=i == n - 1))
        tokens += t
        expected += e
    return Built(b"".join(v for _, v in tokens), tuple(expected), tuple(tokens))


# -- mutations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A mutated pipeline: its bytes, and the mutations that made it (for the report)."""

    data: bytes
    ops: tuple[str, ...] = ()
    starts: tuple[int, ...] = ()  # where each request line begins (cuts just after them)

    def __repr__(self) -> str:
        return f"Case(data={self.data!r}, ops={self.ops!r})"


INTERESTING = [b"\x00", b"\r", b"\n", b"\r\n", b"\x0b", b"\x0c", b"\x85", b"\xa0", b" ", b"\t",
               b",", b";", b'"', b"0x", b"+", b"-", b"_", b"\xd9\xa1", b"\xef\xbc\x91",
               b"9" * 25, b"f" * 20, b"0" * 20, b"=", b":", b"\x7f", b"\xff", b"\r\n\r\n"]
FRAMING_FIELDS = [b"Content-Length: 0", b"Content-Length: 3", b"Content-Length: 1, 1",
                  b"Content-Length: +3", b"Transfer-Encoding: chunked",
                  b"Transfer-Encoding: identity", b"Transfer-Encoding: gzip, chunked",
                  b"Transfer-Encoding: chunked, chunked", b"Transfer-Encoding:\x0bchunked",
                  b"Transfer-Encoding : chunked", b" Transfer-Encoding: chunked",
                  b"Content-Length\x00: 3", b"Connection: close", b"Connection: upgrade",
                  b"Upgrade: websocket", b"Expect: 100-continue", b"Host: other",
                  b"Upgrade: websocket\r\nConnection: upgrade",
                  b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c"]
CHUNKED_VARIANTS = [b"Chunked", b"CHUNKED", b" chunked", b"chunked ", b"\tchunked",
                    b"chunked\t", b"chunked,", b",chunked", b"chunked, chunked", b"chunk",
                    b"chunked\x00", b'"chunked"', b"chunked;q=1", b"x-chunked", b"chunke d",
                    b"identity, chunked", b"chunked\x0b", b"\xa0chunked", b"chunked\x85"]
EOL_VARIANTS = [b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n\r\n", b"", b" \r\n", b"\r\n "]


def _number_variants(text: bytes, base: int) -> list[bytes]:
    """Off by one, a hex prefix, signs, padding, whitespace, foreign digits."""
    try:
        n = int(text, base)
    except ValueError:
        n = 0
    fmt = b"%x" if base == 16 else b"%d"
    return [fmt % (n + 1), fmt % abs(n - 1), b"-" + fmt % abs(n - 1), b"0x" + text,
            b"+" + text, b"-" + text, b"0" * 30 + text, text + b" ", b" " + text,
            text + b"\t", text.upper(), b"f" * 17, b"9" * 25, text + b"_", b"1_0",
            b"\xd9\xa1", text + b"\xd9\xa1", text + b"," + text, text + b";", b"",
            text + b"\x00", b"0" + text]


def _locate(tokens: list, pos: int) -> tuple[int, int]:
    for i, (_, value) in enumerate(tokens):
        if pos <= len(value):
            return i, pos
        pos -= len(value)
    return len(tokens) - 1, len(tokens[-1][1])


@st.composite
def mutated(draw) -> Case:
    built = draw(pipelines())
    tokens = list(built.tokens)
    ops: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        size = sum(len(v) for _, v in tokens)
        op = draw(st.sampled_from(["insert", "replace", "delete", "dup-field", "add-field",
                                   "chunked", "number", "eol", "all-lf", "truncate"]))

        def pick(*kinds: str, tokens=tokens) -> int | None:
            where = [i for i, (k, _) in enumerate(tokens) if k in kinds]
            return draw(st.sampled_from(where)) if where else None

        if op in ("insert", "replace", "delete", "truncate"):
            pos = draw(st.integers(0, size))
            i, at = _locate(tokens, pos)
            kind, value = tokens[i]
            if op == "truncate":
                tokens = tokens[:i] + [(kind, value[:at])]
                ops.append(f"truncate@{pos}")
                continue
            if op == "delete":
                n = draw(st.integers(1, 4))
                tokens[i] = (kind, value[:at] + value[at + n:])
                ops.append(f"delete {n}@{pos}")
                continue
            new = draw(st.sampled_from(INTERESTING))
            n = 0 if op == "insert" else draw(st.integers(1, 2))
            tokens[i] = (kind, value[:at] + new + value[at + n:])
            ops.append(f"{op} {new!r}@{pos}")
        elif op in ("dup-field", "add-field"):
            i = pick("field", "cl", "te", "trailer")
            if i is None:
                continue
            line = tokens[i] if op == "dup-field" else ("field", draw(st.sampled_from(
                FRAMING_FIELDS)))
            tokens[i + 2:i + 2] = [line, ("eol", CRLF)]
            ops.append(f"{op} {line[1]!r} after {tokens[i][1]!r}")
        elif op == "chunked":
            i = pick("te")
            if i is None:
                continue
            name, _, _ = tokens[i][1].partition(b":")
            new = draw(st.sampled_from(CHUNKED_VARIANTS))
            tokens[i] = ("te", name + b":" + new)
            ops.append(f"chunked -> {new!r}")
        elif op == "number":
            i = pick("size", "cl")
            if i is None:
                continue
            kind, value = tokens[i]
            if kind == "cl":
                name, _, text = value.partition(b":")
                new = draw(st.sampled_from(_number_variants(text.strip(b" \t"), 10)))
                tokens[i] = (kind, name + b": " + new)
            else:
                new = draw(st.sampled_from(_number_variants(value, 16)))
                tokens[i] = (kind, new)
            ops.append(f"{kind} {value!r} -> {new!r}")
        elif op == "eol":
            i = pick("eol")
            if i is None:
                continue
            new = draw(st.sampled_from(EOL_VARIANTS))
            tokens[i] = ("eol", new)
            ops.append(f"eol#{i} -> {new!r}")
        elif tokens:  # all-lf: every CRLF a bare LF, from some token on
            start = draw(st.integers(0, len(tokens) - 1))
            tokens[start:] = [(k, b"\n") if k == "eol" else (k, v) for k, v in tokens[start:]]
            ops.append(f"all-lf from token {start}")
    starts, at = [], 0
    for kind, value in tokens:
        if kind == "start":
            starts.append(at)
        at += len(value)
    return Case(b"".join(v for _, v in tokens), tuple(ops), tuple(starts))


# Split points for one input: positions modulo its length (they shrink towards "whole").
cuts = st.lists(st.integers(0, 1 << 16), max_size=12)


def split(data: bytes, points: list[int]) -> list[bytes]:
    at = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(at, at[1:], strict=False) if b > a] or [data]


def split_case(case: Case, points: list[int], near: bool) -> list[bytes]:
    """`near`: also cut one byte into each request line (a read ends inside a method)."""
    return split(case.data, points + [s + 1 for s in case.starts] if near else points)


# -- running the parser -----------------------------------------------------------------

CONTINUE_MARK = "100-continue"


def body_of(req: Request) -> bytes:
    body = req.body
    return bytes(body) if isinstance(body, (bytes, bytearray)) else req.body_file().read()


def summary(events: list) -> list:
    out: list = []
    for e in events:
        if isinstance(e, Request):
            # (values as used: trailing OWS is removed where a value is read, RFC 9110 §5.5)
            fields = tuple((n, v.rstrip(b" \t")) for n, v in e.headers)
            out.append((e.method, e.target, e.version, fields, body_of(e), e.keep_alive))
        elif isinstance(e, HttpError):
            out.append(("error", e.status))
        elif e is CONTINUE:
            out.append(CONTINUE_MARK)
        else:
            out.append(("unexpected", repr(e)))
    return out


# -- the properties (plain functions: the tests below and scripts/fuzz wrap them) ---------


def prop_no_crash(case: Case) -> None:
    for e in feed([case.data]):
        assert (isinstance(e, Request) or e is CONTINUE
                or (isinstance(e, HttpError) and 400 <= e.status <= 599)), e


def same_events(a: list, b: list) -> bool:
    if a == b:
        return True
    # An unknown method's status (501, else 400) may depend on where reads end.
    errors = {a[-1], b[-1]} if a and b else set()
    return TOLERATE_KNOWN and a[:-1] == b[:-1] and errors == {("error", 400), ("error", 501)}


def prop_chunking_invariance(case: Case, points: list[int], near: bool) -> None:
    whole = summary(feed([case.data]))
    by_byte = summary(feed([case.data[i:i + 1] for i in range(len(case.data))]))
    assert same_events(by_byte, whole), f"byte by byte differs from whole: {by_byte} {whole}"
    pieces = summary(feed(split_case(case, points, near)))
    assert same_events(pieces, whole), f"pieces differ from whole: {pieces} {whole}"


def prop_valid_round_trip(built: Built, points: list[int]) -> None:
    assert summary(feed([built.data])) == list(built.expected)
    assert summary(feed(split(built.data, points))) == list(built.expected)


def prop_nothing_after_error(case: Case, tail: bytes, points: list[int]) -> None:
    conn = HttpConnection(Limits())
    events: list = []
    for piece in split(case.data + tail, points) + [b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"]:
        conn.receive_data(piece)
        while (e := conn.next_event()) is not NEED_DATA:
            events.append(e)
    conn.receive_eof()
    while (e := conn.next_event()) is not NEED_DATA:
        events.append(e)
    errors = [i for i, e in enumerate(events) if isinstance(e, HttpError)]
    assert not errors or errors[0] == len(events) - 1, summary(events)


def _app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % len(body)]


_servers: list = []


def prop_driver(case: Case, points: list[int], near: bool) -> None:
    if not _servers:
        _servers.append(make_server(_app))
    proto, t = connect(_servers[0])
    pieces = split_case(case, points, near)
    for piece in pieces:
        if t.closed:
            break
        assert t.reading, "reading paused with no response in flight"
        proto.data_received(piece)
    if not t.closed:
        proto.eof_received()
    requests = [e for e in feed(pieces) if isinstance(e, Request)]
    resps = [r for r in parse_responses(bytes(t.out), [r.method for r in requests], t.closed)
             if r.status != 100]
    assert len(resps) <= len(requests) + 1, (len(resps), len(requests))
    for i, r in enumerate(resps):
        if r.status >= 400:
            assert i == len(resps) - 1, "a response after an error response"
            assert t.closed and getattr(t, "lingering", False), "no lingering close after error"
        elif requests[i].method != b"HEAD":
            assert r.body == b"%d" % len(body_of(requests[i])), "answered the wrong request"
    conn = proto.conn
    assert t.closed or (proto.phase == IDLE and conn.request is None and not conn.events), \
        "left waiting after EOF"


_tails = st.sampled_from([b"", b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n", b"\r\n", b"0\r\n\r\n"]
                         ) | st.binary(max_size=20)

PROPERTIES = {
    "no_crash": (prop_no_crash, {"case": mutated()}),
    "chunking_invariance": (prop_chunking_invariance,
                            {"case": mutated(), "points": cuts, "near": st.booleans()}),
    "valid_round_trip": (prop_valid_round_trip, {"built": pipelines(), "points": cuts}),
    "nothing_after_error": (prop_nothing_after_error,
                            {"case": mutated(), "tail": _tails, "points": cuts}),
    "driver": (prop_driver, {"case": mutated(), "points": cuts, "near": st.booleans()}),
}


def property_test(name: str, config: settings, body=None):
    """The property `name` as a hypothesis test under `config` (body: a wrapper of its own)."""
    func, strategies = PROPERTIES[name]
    return config(given(**strategies)(body or func))


test_no_crash = property_test("no_crash", CI)
test_chunking_invariance = property_test("chunking_invariance", CI)
test_valid_round_trip = property_test("valid_round_trip", CI)
test_nothing_after_error = property_test("nothing_after_error", CI)
test_driver = property_test("driver", CI)


# -- findings of earlier fuzz runs, fixed: their minimal reproducers ------------------


def test_an_unknown_method_is_refused_however_split():
    # "T" is the start of TRACE to llhttp: split after it, the run starts at " " (400).
    data = b"T / HTTP/1.0\r\n\r\n"
    assert summary(feed([data])) == [("error", 501)]
    assert summary(feed([data[i:i + 1] for i in range(len(data))])) == [("error", 400)]
    data = b"FOO / HTTP/1.1\r\nHost: t\r\n\r\n"  # (a token llhttp refuses at its first byte)
    assert summary(feed([data[i:i + 1] for i in range(len(data))])) == [("error", 501)]


def test_chunk_ext_bws_is_accepted():
    # RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    data = (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1; a = b\r\nx\r\n0\r\n\r\n")
    events = summary(feed([data]))
    assert len(events) == 1 and events[0][::4] == (b"POST", b"x"), events


def test_te_trailing_htab_is_accepted():
    # RFC 9110 §5.5: OWS (SP or HTAB) around a field value is not part of it; SP passes.
    data = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\t\r\n\r\n1\r\nx\r\n0\r\n\r\n"
    events = summary(feed([data]))
    assert len(events) == 1 and events[0][::4] == (b"POST", b"x"), events


def test_nothing_is_read_after_connection_close():
    data = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
    assert [e[0] for e in summary(feed([data]))] == [b"GET"]


def _method_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["REQUEST_METHOD"].encode()]


def test_a_split_method_after_a_response_survives():
    # The first response of a young connection calls conn.release(): it must not drop a
    # parser holding "PROP" (the app would be called with PATCH).
    proto, t = connect(make_server(_method_app))
    proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nPROP")
    proto.data_received(b"PATCH / HTTP/1.1\r\nHost: t\r\n\r\n")
    bodies = [r.body for r in parse_responses(bytes(t.out), closed=t.closed)]
    assert bodies == [b"GET", b"PROPPATCH"], bodies
