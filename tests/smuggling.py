"""A request-smuggling corpus: raw requests and what a strict HTTP/1.1 server must do.

Each Case is one connection's bytes and the expectation, taken from RFC 9112 and
RFC 9110 on their strict side (preforkd's decisions, not whatever it happens to do):

- REJECT: the requests listed in `served` are answered first, in order; then the
  response to the first invalid request has one of the `reject` statuses and
  `Connection: close`, and the server closes the connection: nothing after it
  (by default a well-formed second request) is answered.
- SERVE: exactly the requests in `served` reach the app (tests/apps/reflect.py
  echoes them), with the method, target, header fields and body the RFC reading
  gives. Most of these cases end with SECOND, a plain request that must be
  answered on its own: a server that read the case differently (a body too long
  or too short, a request hidden in a body) answers it wrongly or not at all.
  With `closes`, the server closes after the last of them, and a SECOND appended
  after that is not answered.

tests/integration/test_smuggling.py sends every case to a real server.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

CLASSES = ("chunk-size", "chunk-ext", "chunk-data", "transfer-encoding", "content-length",
           "fields", "request-line", "target", "host", "pipeline", "expect", "upgrade",
           "control")

SECOND = b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass(frozen=True)
class Echo:
    """One request as the app must see it. `headers` pairs an environ key (HTTP_*,
    CONTENT_TYPE, CONTENT_LENGTH) with its value, or with None where the key must be
    absent; keys not named are not checked. path, query and protocol (PATH_INFO,
    QUERY_STRING, SERVER_PROTOCOL) are checked when given. `interim`: a
    `100 Continue` comes before the response."""

    method: str = "GET"
    target: str = "/"
    body: bytes = b""
    headers: tuple[tuple[str, str | None], ...] = ()
    path: str | None = None
    query: str | None = None
    protocol: str | None = None
    interim: bool = False


SECOND_ECHO = Echo(target="/second", headers=(("HTTP_HOST", "x"),))


@dataclass(frozen=True)
class Case:
    name: str
    klass: str
    raw: bytes
    rule: str
    served: tuple[Echo, ...] = ()  # answered (200) in this order
    reject: tuple[int, ...] = ()  # REJECT: the statuses allowed for the last response
    closes: bool = False  # SERVE: the server closes after the last served request
    eof: bool = False  # the client half-closes once raw is sent (the case needs EOF)
    pad: int = 0  # this many bytes b"a" follow raw, sent while the response is read

    @property
    def expect(self) -> str:
        return "REJECT" if self.reject else "SERVE"

    @property
    def responses(self) -> int:
        """Final responses to read."""
        return len(self.served) + (1 if self.reject else 0)


def echo(method: str = "GET", target: str = "/", body: bytes = b"", *,
         path: str | None = None, query: str | None = None, protocol: str | None = None,
         interim: bool = False, **headers: str | None) -> Echo:
    return Echo(method, target, body, tuple(headers.items()), path, query, protocol, interim)


def http(*lines: bytes, body: bytes = b"") -> bytes:
    """A request head from its lines (request line first), then `body`."""
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def get(*fields: bytes, target: bytes = b"/") -> bytes:
    return http(b"GET " + target + b" HTTP/1.1", b"Host: x", *fields)


def chunked(body: bytes, *fields: bytes) -> bytes:
    """POST /c with Transfer-Encoding: chunked and `body` as it goes on the wire."""
    return http(b"POST /c HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked", *fields,
                body=body)


def with_length(value: bytes, body: bytes, *fields: bytes) -> bytes:
    """POST /l with `Content-Length: value` and then `body`."""
    return http(b"POST /l HTTP/1.1", b"Host: x", b"Content-Length: " + value, *fields,
                body=body)


def with_field(field: bytes) -> bytes:
    return get(b"X-A: b", field)


CASES: list[Case] = []


def serve(name: str, klass: str, raw: bytes, rule: str, *served: Echo,
          after: str = "second", closes: bool = False, eof: bool = False) -> None:
    """A SERVE case. `after`: "second" appends SECOND, answered as a request of its own;
    "ignored" appends it and expects the server to close before it (as `closes` does);
    "none" appends nothing."""
    closes = closes or after == "ignored"
    if after != "none":
        raw += SECOND
    if after == "second":
        served += (SECOND_ECHO,)
    CASES.append(Case(name, klass, raw, rule, served, closes=closes, eof=eof))


def reject(name: str, klass: str, raw: bytes, rule: str, status: int | tuple[int, ...],
           *served: Echo, after: bool = True, eof: bool = False, pad: int = 0) -> None:
    """A REJECT case: `served` first, then `status` and a close. `after` appends SECOND,
    which must not be answered."""
    if after and not eof and not pad:
        raw += SECOND
    statuses = status if isinstance(status, tuple) else (status,)
    CASES.append(Case(name, klass, raw, rule, served, reject=statuses, eof=eof, pad=pad))


# Request bodies used below, and the Echo of the usual chunked POST.
HELLO = b"5\r\nhello\r\n0\r\n\r\n"


def got_chunked(body: bytes = b"hello", **headers: str | None) -> Echo:
    return echo("POST", "/c", body, CONTENT_LENGTH=str(len(body)), **headers)


def got_length(body: bytes, **headers: str | None) -> Echo:
    return echo("POST", "/l", body, CONTENT_LENGTH=str(len(body)), **headers)


MAX_BODY = 100 * 1024 * 1024  # max_body_bytes' default (src/preforkd/config.py)


# -- control: valid requests, so that a server refusing everything fails -------------
K = "control"
serve("control-get", K, get(), "RFC 9112 §3", echo(HTTP_HOST="x", CONTENT_LENGTH=None))
serve("control-chunked-post", K, chunked(HELLO), "RFC 9112 §7.1", got_chunked())
serve("control-pipelined-pair", K, get(target=b"/a") + get(target=b"/b"), "RFC 9112 §9.3.2",
      echo(target="/a"), echo(target="/b"))
serve("control-content-length-post", K, with_length(b"5", b"hello"), "RFC 9112 §6.2",
      got_length(b"hello"))
serve("control-http10-get", K, http(b"GET /old HTTP/1.0"), "RFC 9112 §9.3",
      echo(target="/old", protocol="HTTP/1.0", HTTP_HOST=None), after="ignored")
serve("control-http10-keep-alive", K, http(b"GET /old HTTP/1.0", b"Connection: keep-alive"),
      "RFC 9112 §9.3", echo(target="/old", protocol="HTTP/1.0"))
serve("control-query-and-percent", K, get(target=b"/a%20b?x=1&y=%2F"), "RFC 9112 §3.2.1",
      echo(target="/a%20b?x=1&y=%2F", path="/a b", query="x=1&y=%2F"))
serve("control-binary-body", K, with_length(b"256", bytes(range(256))), "RFC 9112 §6.2",
      got_length(bytes(range(256))))
reject("control-response-intact-while-client-sends", K, http(b"GET / HTTP/1.1", b"Host: a b"),
       "RFC 9112 §9.6", 400, pad=4 << 20)
reject("control-cl-413-intact-while-client-sends", K,
       with_length(str(MAX_BODY + 1).encode(), b""), "RFC 9110 §15.5.14", 413, pad=4 << 20)

# -- request-line ----------------------------------------------------------------------
K = "request-line"
R3 = "RFC 9112 §3"
reject("request-line-unknown-method", K, http(b"FOO / HTTP/1.1", b"Host: x"), "RFC 9110 §9.1",
       501)
reject("request-line-lowercase-method", K, http(b"get / HTTP/1.1", b"Host: x"),
       "RFC 9110 §9.1", 501)
reject("request-line-dash-method", K, http(b"-BLARGH / HTTP/1.1", b"Host: x"), "RFC 9110 §9.1",
       501)
reject("request-line-method-not-a-token", K, http(b"G(T / HTTP/1.1", b"Host: x"),
       "RFC 9110 §5.6.2", 400)
reject("request-line-method-with-nul", K, http(b"G\x00T / HTTP/1.1", b"Host: x"),
       "RFC 9110 §5.6.2", 400)
reject("request-line-method-with-high-byte", K, http(b"G\xc9T / HTTP/1.1", b"Host: x"),
       "RFC 9110 §5.6.2", 400)
reject("request-line-very-long-method", K, http(b"A" * 10000 + b" / HTTP/1.1", b"Host: x"),
       "RFC 9112 §3", (400, 501))
serve("request-line-mkcalendar", K, http(b"MKCALENDAR /cal HTTP/1.1", b"Host: x"),
      "RFC 9110 §9.1", echo("MKCALENDAR", "/cal"))
serve("request-line-propfind", K, http(b"PROPFIND /dav HTTP/1.1", b"Host: x"),
      "RFC 9110 §9.1", echo("PROPFIND", "/dav"))
serve("request-line-http10", K, http(b"GET /v HTTP/1.0", b"Host: x"), "RFC 9112 §2.3",
      echo(target="/v", protocol="HTTP/1.0"), after="ignored")
serve("request-line-http12-as-11", K, http(b"GET /v HTTP/1.2", b"Host: x"), "RFC 9110 §2.5",
      echo(target="/v", protocol="HTTP/1.1"))
serve("request-line-http19-as-11", K, http(b"GET /v HTTP/1.9", b"Host: x"), "RFC 9110 §2.5",
      echo(target="/v", protocol="HTTP/1.1"))
reject("request-line-http20", K, http(b"GET / HTTP/2.0", b"Host: x"), "RFC 9110 §15.6.6", 505)
reject("request-line-http30", K, http(b"GET / HTTP/3.0", b"Host: x"), "RFC 9110 §15.6.6", 505)
reject("request-line-http09-no-version", K, b"GET /\r\n\r\n", "RFC 9112 §3", 400)
reject("request-line-lowercase-http", K, http(b"GET / http/1.1", b"Host: x"), "RFC 9112 §2.3",
       400)
reject("request-line-missing-minor", K, http(b"GET / HTTP/1.", b"Host: x"), "RFC 9112 §2.3",
       400)
reject("request-line-missing-digits", K, http(b"GET / HTTP/", b"Host: x"), "RFC 9112 §2.3",
       400)
reject("request-line-two-digit-major", K, http(b"GET / HTTP/11.1", b"Host: x"),
       "RFC 9112 §2.3", 400)
reject("request-line-two-digit-minor", K, http(b"GET / HTTP/1.10", b"Host: x"),
       "RFC 9112 §2.3", 400)
reject("request-line-trailing-space", K, http(b"GET / HTTP/1.1 ", b"Host: x"), R3, 400)
reject("request-line-tab-after-method", K, http(b"GET\t/ HTTP/1.1", b"Host: x"), R3, 400)
reject("request-line-tab-before-version", K, http(b"GET /\tHTTP/1.1", b"Host: x"), R3, 400)
# Whitespace-delimited parsing is the RFC's one allowed leniency here (RFC 9112 §3: a
# recipient MAY parse on word boundaries); llhttp takes it, and SP cannot be part of a
# method, target or version, so no two readings differ.
serve("request-line-two-spaces", K, http(b"GET  / HTTP/1.1", b"Host: x"), R3,
      echo(HTTP_HOST="x"))
reject("request-line-leading-space", K, http(b" GET / HTTP/1.1", b"Host: x"), R3, 400)
reject("request-line-extra-word", K, http(b"GET / HTTP/1.1 x", b"Host: x"), R3, 400)
reject("request-line-bare-lf", K, b"GET / HTTP/1.1\nHost: x\r\n\r\n", "RFC 9112 §2.2", 400)
reject("request-line-bare-cr", K, b"GET / HTTP/1.1\rHost: x\r\n\r\n", "RFC 9112 §2.2", 400)
reject("request-line-nul-in-version", K, http(b"GET / HTTP/1.1\x00", b"Host: x"), R3, 400)

# -- target ----------------------------------------------------------------------------
K = "target"
reject("target-fragment", K, get(target=b"/a#b"), "RFC 9112 §3.2.1", 400)
reject("target-fragment-after-query", K, get(target=b"/a?b#c"), "RFC 9112 §3.2.1", 400)
reject("target-empty-fragment", K, get(target=b"/#"), "RFC 9112 §3.2.1", 400)
serve("target-asterisk-options", K, http(b"OPTIONS * HTTP/1.1", b"Host: x"), "RFC 9112 §3.2.4",
      echo("OPTIONS", "*"))
reject("target-asterisk-get", K, get(target=b"*"), "RFC 9112 §3.2.4", 400)
reject("target-asterisk-post", K, http(b"POST * HTTP/1.1", b"Host: x", b"Content-Length: 0"),
       "RFC 9112 §3.2.4", 400)
serve("target-absolute-form", K, get(target=b"http://example.com/p?q=1"), "RFC 9112 §3.2.2",
      echo(target="http://example.com/p?q=1", path="/p", query="q=1",
           HTTP_HOST="example.com"))
serve("target-absolute-form-port", K,
      http(b"GET http://example.com:8080/p HTTP/1.1", b"Host: other"), "RFC 9112 §3.2.2",
      echo(target="http://example.com:8080/p", path="/p", HTTP_HOST="example.com:8080"))
serve("target-absolute-form-https", K, get(target=b"https://example.com/s"), "RFC 9112 §3.2.2",
      echo(target="https://example.com/s", path="/s", HTTP_HOST="example.com"))
serve("target-absolute-form-upper-scheme", K, get(target=b"HTTP://example.com/u"),
      "RFC 3986 §3.1", echo(target="HTTP://example.com/u", path="/u", HTTP_HOST="example.com"))
serve("target-absolute-form-no-path", K, get(target=b"http://example.com"), "RFC 9112 §3.2.2",
      echo(target="http://example.com", path="/", HTTP_HOST="example.com"))
serve("target-absolute-form-ipv6", K, get(target=b"http://[::1]:8080/6"), "RFC 3986 §3.2.2",
      echo(target="http://[::1]:8080/6", path="/6", HTTP_HOST="[::1]:8080"))
reject("target-absolute-empty-host", K, get(target=b"http:///x"), "RFC 9110 §4.2.1", 400)
reject("target-absolute-port-too-big", K, get(target=b"http://a:65536/"), "RFC 9110 §4.2.1",
       400)
reject("target-absolute-port-not-digits", K, get(target=b"http://a:b/"), "RFC 9110 §4.2.1",
       400)
reject("target-absolute-invalid-authority", K, get(target=b"s://]x/:"), "RFC 9112 §3.2.2",
       400)
reject("target-absolute-bracket-authority", K, get(target=b"http://]x/"), "RFC 3986 §3.2.2",
       400)
reject("target-absolute-userinfo", K, get(target=b"http://u@a/"), "RFC 9110 §4.2.4", 400)
reject("target-absolute-ftp-scheme", K, get(target=b"ftp://a/"), "RFC 9112 §3.2.2", 400)
reject("target-absolute-fragment", K, get(target=b"http://a/p#f"), "RFC 9112 §3.2.2", 400)
reject("target-authority-form-connect", K, http(b"CONNECT a:443 HTTP/1.1", b"Host: a:443"),
       "RFC 9110 §9.3.6", 501)
reject("target-connect-origin-form", K, http(b"CONNECT / HTTP/1.1", b"Host: x"),
       "RFC 9110 §9.3.6", 501)
reject("target-relative-path", K, get(target=b"a/b"), "RFC 9112 §3.2", 400)
reject("target-control-byte", K, get(target=b"/a\x01b"), "RFC 9112 §3.2", 400)
reject("target-nul", K, get(target=b"/a\x00b"), "RFC 9112 §3.2", 400)
reject("target-del", K, get(target=b"/a\x7fb"), "RFC 9112 §3.2", 400)
reject("target-utf8", K, get(target=b"/\xc3\xa9"), "RFC 9112 §3.2", 400)
reject("target-high-byte", K, get(target=b"/\xff"), "RFC 9112 §3.2", 400)
reject("target-space-inside", K, get(target=b"/a b"), "RFC 9112 §3", 400)
reject("target-too-long", K, get(target=b"/" + b"a" * 8300), "RFC 9110 §15.5.15", 414)
serve("target-long-but-allowed", K, get(target=b"/" + b"a" * 8000), "RFC 9112 §3",
      echo(target="/" + "a" * 8000))
serve("target-query-with-question-mark", K, get(target=b"/p?a?b"), "RFC 3986 §3.4",
      echo(target="/p?a?b", path="/p", query="a?b"))

# -- host ------------------------------------------------------------------------------
K = "host"
H = "RFC 9112 §3.2"
reject("host-missing", K, http(b"GET / HTTP/1.1"), H, 400)
reject("host-twice-equal", K, http(b"GET / HTTP/1.1", b"Host: x", b"Host: x"), H, 400)
reject("host-twice-different", K, http(b"GET / HTTP/1.1", b"Host: x", b"Host: y"), H, 400)
reject("host-twice-different-case", K, http(b"GET / HTTP/1.1", b"host: x", b"HOST: y"), H, 400)
reject("host-twice-apart", K, http(b"GET / HTTP/1.1", b"Host: x", b"X-A: b", b"Host: x"), H,
       400)
reject("host-space-inside", K, http(b"GET / HTTP/1.1", b"Host: a b"), "RFC 9110 §7.2", 400)
reject("host-tab-inside", K, http(b"GET / HTTP/1.1", b"Host: a\tb"), "RFC 9110 §7.2", 400)
reject("host-list", K, http(b"GET / HTTP/1.1", b"Host: a, b"), "RFC 9110 §7.2", 400)
reject("host-userinfo", K, http(b"GET / HTTP/1.1", b"Host: user@a"), "RFC 9110 §4.2.4", 400)
reject("host-port-too-big", K, http(b"GET / HTTP/1.1", b"Host: a:65536"), "RFC 9110 §7.2",
       400)
reject("host-port-not-digits", K, http(b"GET / HTTP/1.1", b"Host: a:b"), "RFC 9110 §7.2", 400)
reject("host-path", K, http(b"GET / HTTP/1.1", b"Host: a/b"), "RFC 9110 §7.2", 400)
reject("host-bad-ipv6", K, http(b"GET / HTTP/1.1", b"Host: [::g]"), "RFC 3986 §3.2.2", 400)
reject("host-http10-invalid", K, http(b"GET / HTTP/1.0", b"Host: a b"), "RFC 9110 §7.2", 400)
serve("host-empty", K, http(b"GET / HTTP/1.1", b"Host:"), "RFC 9110 §7.2",
      echo(HTTP_HOST=""))
serve("host-ipv6-literal", K, http(b"GET / HTTP/1.1", b"Host: [::1]:8080"), "RFC 9110 §7.2",
      echo(HTTP_HOST="[::1]:8080"))
serve("host-name-and-port", K, http(b"GET / HTTP/1.1", b"Host: example.com:443"),
      "RFC 9110 §7.2", echo(HTTP_HOST="example.com:443"))
serve("host-empty-port", K, http(b"GET / HTTP/1.1", b"Host: a:"), "RFC 3986 §3.2.3",
      echo(HTTP_HOST="a:"))
serve("host-upper-case-name", K, http(b"GET / HTTP/1.1", b"HOST: a"), "RFC 9110 §5.1",
      echo(HTTP_HOST="a"))
serve("host-http10-without-host", K, http(b"GET /h HTTP/1.0", b"Connection: keep-alive"),
      "RFC 9112 §3.2", echo(target="/h", HTTP_HOST=None))

# -- fields ----------------------------------------------------------------------------
K = "fields"
F = "RFC 9112 §5"
V = "RFC 9110 §5.5"
reject("fields-space-before-colon", K, with_field(b"X-B : c"), "RFC 9112 §5.1", 400)
reject("fields-tab-before-colon", K, with_field(b"X-B\t: c"), "RFC 9112 §5.1", 400)
reject("fields-host-space-before-colon", K, http(b"GET / HTTP/1.1", b"Host : x"),
       "RFC 9112 §5.1", 400)
reject("fields-empty-name", K, with_field(b": c"), F, 400)
reject("fields-name-not-a-token", K, with_field(b"X(B): c"), "RFC 9110 §5.1", 400)
reject("fields-space-in-name", K, with_field(b"X B: c"), "RFC 9110 §5.1", 400)
reject("fields-high-byte-in-name", K, with_field(b"X\xe9: c"), "RFC 9110 §5.1", 400)
reject("fields-no-colon", K, with_field(b"X-B c"), F, 400)
reject("fields-nul-in-value", K, with_field(b"X-B: a\x00b"), V, 400)
reject("fields-cr-in-value", K, with_field(b"X-B: a\rb"), V, 400)
reject("fields-lf-in-value", K, with_field(b"X-B: a\nb"), V, 400)
reject("fields-vt-in-value", K, with_field(b"X-B: a\x0bb"), V, 400)
reject("fields-ff-in-value", K, with_field(b"X-B: a\x0cb"), V, 400)
reject("fields-del-in-value", K, with_field(b"X-B: a\x7fb"), V, 400)
reject("fields-soh-in-value", K, with_field(b"X-B: a\x01b"), V, 400)
reject("fields-esc-in-value", K, with_field(b"X-B: a\x1bb"), V, 400)
reject("fields-us-in-value", K, with_field(b"X-B: \x1f"), V, 400)
reject("fields-obs-fold-space", K, with_field(b"X-B: a\r\n b"), "RFC 9112 §5.2", 400)
reject("fields-obs-fold-tab", K, with_field(b"X-B: a\r\n\tb"), "RFC 9112 §5.2", 400)
reject("fields-whitespace-line", K, with_field(b"X-B: a\r\n "), "RFC 9112 §5.2", 400)
reject("fields-bare-lf-terminator", K, b"GET / HTTP/1.1\r\nHost: x\nX-B: c\r\n\r\n",
       "RFC 9112 §2.2", 400)
reject("fields-bare-lf-end-of-head", K, b"GET / HTTP/1.1\r\nHost: x\r\n\n", "RFC 9112 §2.2",
       400)
reject("fields-bare-lf-only-end-of-head", K, b"GET / HTTP/1.1\r\nHost: x\n\n",
       "RFC 9112 §2.2", 400)
reject("fields-bare-cr-terminator", K, b"GET / HTTP/1.1\r\nHost: x\rX-B: c\r\n\r\n",
       "RFC 9112 §2.2", 400)
reject("fields-bare-cr-end-of-head", K, b"GET / HTTP/1.1\r\nHost: x\r\n\r", "RFC 9112 §2.2",
       400)
reject("fields-space-before-first-field", K, b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
       "RFC 9112 §2.2", 400)
reject("fields-tab-before-first-field", K, b"GET / HTTP/1.1\r\n\tHost: x\r\n\r\n",
       "RFC 9112 §2.2", 400)
reject("fields-two-content-types", K,
       with_length(b"0", b"", b"Content-Type: text/plain", b"Content-Type: text/html"),
       "RFC 9110 §5.3", 400)
reject("fields-too-many", K, get(*[b"X-%d: v" % i for i in range(200)]), "RFC 6585 §5", 431)
reject("fields-section-too-large", K, get(b"X-Big: " + b"v" * 70000), "RFC 6585 §5", 431)
serve("fields-obs-text-nel", K, with_field(b"X-B: a\x85b"), V, echo(HTTP_X_B="a\x85b"))
serve("fields-obs-text-nbsp-around", K, with_field(b"X-B: \xa0a\xa0"), V,
      echo(HTTP_X_B="\xa0a\xa0"))
serve("fields-obs-text-nel-around", K, with_field(b"X-B: \x85a\x85"), V,
      echo(HTTP_X_B="\x85a\x85"))
serve("fields-obs-text-high", K, with_field(b"X-B: \x80\xfe\xff"), V,
      echo(HTTP_X_B="\x80\xfe\xff"))
serve("fields-ows-around-value", K, with_field(b"X-B: \t a b \t "), V, echo(HTTP_X_B="a b"))
serve("fields-no-ows", K, with_field(b"X-B:c"), V, echo(HTTP_X_B="c"))
serve("fields-empty-value", K, with_field(b"X-B:"), V, echo(HTTP_X_B=""))
serve("fields-only-ows-value", K, with_field(b"X-B: \t "), V, echo(HTTP_X_B=""))
serve("fields-tab-inside-value", K, with_field(b"X-B: a\tb"), V, echo(HTTP_X_B="a\tb"))
serve("fields-colon-in-value", K, with_field(b"X-B: a:b"), V, echo(HTTP_X_B="a:b"))
serve("fields-repeated-combined", K, get(b"X-B: 1", b"X-B: 2"), "RFC 9110 §5.3",
      echo(HTTP_X_B="1, 2"))
serve("fields-underscore-not-dash", K, get(b"X-B: dash", b"X_B: underscore"), "RFC 9110 §5.1",
      echo(HTTP_X_B="dash"))

# -- content-length --------------------------------------------------------------------
K = "content-length"
C = "RFC 9110 §8.6"
serve("content-length-leading-zeros", K, with_length(b"007", b"seven!!"), C,
      got_length(b"seven!!"))
serve("content-length-zero", K, with_length(b"0", b""), C, got_length(b""))
serve("content-length-ows", K, with_length(b" \t5 \t", b"hello"), "RFC 9110 §5.5",
      got_length(b"hello"))
serve("content-length-on-get", K, get(b"Content-Length: 5") + b"hello", "RFC 9112 §6.3",
      echo(body=b"hello", CONTENT_LENGTH="5"))
serve("content-length-body-ends-where-it-says", K, with_length(b"5", b"hello"), "RFC 9112 §6.3",
      got_length(b"hello"))
serve("content-length-body-holds-a-request", K, with_length(b"%d" % len(SECOND), SECOND),
      "RFC 9112 §6.3", got_length(SECOND))
serve("content-length-body-holds-crlf", K, with_length(b"4", b"\r\n\r\n"), "RFC 9112 §6.3",
      got_length(b"\r\n\r\n"))
reject("content-length-plus", K, with_length(b"+5", b"hello"), C, 400)
reject("content-length-minus", K, with_length(b"-5", b"hello"), C, 400)
reject("content-length-hex", K, with_length(b"0x5", b"hello"), C, 400)
reject("content-length-underscore", K, with_length(b"1_0", b"helloworld"), C, 400)
reject("content-length-space-inside", K, with_length(b"1 0", b"helloworld"), C, 400)
reject("content-length-decimal", K, with_length(b"5.0", b"hello"), C, 400)
reject("content-length-exponent", K, with_length(b"5e0", b"hello"), C, 400)
reject("content-length-arabic-digit", K, with_length(b"\xd9\xa5", b"hello"), C, 400)
reject("content-length-fullwidth-digit", K, with_length(b"\xef\xbc\x95", b"hello"), C, 400)
reject("content-length-superscript-digit", K, with_length(b"\xb9", b"h"), C, 400)
reject("content-length-empty", K, with_length(b"", b""), C, 400)
reject("content-length-list-equal", K, with_length(b"5, 5", b"hello"), C, 400)
reject("content-length-list-different", K, with_length(b"1, 2", b"he"), C, 400)
reject("content-length-trailing-comma", K, with_length(b"5,", b"hello"), C, 400)
reject("content-length-two-fields-equal", K,
       with_length(b"5", b"hello", b"Content-Length: 5"), C, 400)
reject("content-length-two-fields-different", K,
       with_length(b"5", b"hello", b"Content-Length: 6"), C, 400)
reject("content-length-overflow", K, with_length(b"9" * 20, b"hello"), C, 400)
reject("content-length-2-to-the-64", K, with_length(b"18446744073709551616", b"h"), C, 400)
reject("content-length-too-large", K, with_length(str(MAX_BODY + 1).encode(), b""),
       "RFC 9110 §15.5.14", 413)
reject("content-length-and-chunked", K,
       with_length(b"5", HELLO, b"Transfer-Encoding: chunked"), "RFC 9112 §6.1", 400)
reject("content-length-after-chunked", K,
       chunked(HELLO, b"Content-Length: 5"), "RFC 9112 §6.1", 400)
reject("content-length-zero-and-chunked", K,
       with_length(b"0", HELLO, b"Transfer-Encoding: chunked"), "RFC 9112 §6.1", 400)
reject("content-length-body-cut-by-eof", K, with_length(b"10", b"hello"), "RFC 9112 §8", 400,
       eof=True)

# -- transfer-encoding -----------------------------------------------------------------
K = "transfer-encoding"
T = "RFC 9112 §6.1"


def coded(value: bytes, body: bytes = HELLO, version: bytes = b"HTTP/1.1") -> bytes:
    return http(b"POST /c " + version, b"Host: x", b"Transfer-Encoding: " + value, body=body)


serve("transfer-encoding-upper-case", K, coded(b"CHUNKED"), T,
      got_chunked(HTTP_TRANSFER_ENCODING="CHUNKED"))
serve("transfer-encoding-mixed-case", K, coded(b"cHuNkEd"), T, got_chunked())
serve("transfer-encoding-leading-ows", K, coded(b" \t chunked"), "RFC 9110 §5.5",
      got_chunked())
serve("transfer-encoding-trailing-space", K, coded(b"chunked  "), "RFC 9110 §5.5",
      got_chunked())
serve("transfer-encoding-trailing-tab", K, coded(b"chunked\t"), "RFC 9110 §5.5", got_chunked())
serve("transfer-encoding-no-ows", K, b"POST /c HTTP/1.1\r\nHost: x\r\n"
      b"Transfer-Encoding:chunked\r\n\r\n" + HELLO, T, got_chunked())
serve("transfer-encoding-underscore-name-is-not-te", K,
      with_length(b"5", b"hello", b"Transfer_Encoding: chunked"), "RFC 9110 §5.1",
      got_length(b"hello", HTTP_TRANSFER_ENCODING=None))
reject("transfer-encoding-gzip-chunked", K, coded(b"gzip, chunked"), "RFC 9112 §6.1", 501)
reject("transfer-encoding-deflate-chunked", K, coded(b"deflate,chunked"), "RFC 9112 §6.1", 501)
reject("transfer-encoding-identity", K, coded(b"identity"), T, 400)
reject("transfer-encoding-gzip-alone", K, coded(b"gzip"), "RFC 9112 §6.3", 400)
reject("transfer-encoding-unknown-alone", K, coded(b"foo"), "RFC 9112 §6.3", 400)
reject("transfer-encoding-chunked-not-last", K, coded(b"chunked, gzip"), "RFC 9112 §6.3", 400)
reject("transfer-encoding-chunked-twice", K, coded(b"chunked, chunked"), T, 400)
reject("transfer-encoding-leading-comma", K, coded(b",chunked"), "RFC 9110 §5.6.1", 400)
reject("transfer-encoding-trailing-comma", K, coded(b"chunked,"), "RFC 9110 §5.6.1", 400)
reject("transfer-encoding-empty-element", K, coded(b"gzip,,chunked"), "RFC 9110 §5.6.1", 400)
reject("transfer-encoding-empty", K, coded(b""), T, 400)
reject("transfer-encoding-two-fields-chunked", K,
       chunked(HELLO, b"Transfer-Encoding: chunked"), T, 400)
reject("transfer-encoding-two-fields-gzip-chunked", K,
       http(b"POST /c HTTP/1.1", b"Host: x", b"Transfer-Encoding: gzip",
            b"Transfer-Encoding: chunked", body=HELLO), T, 400)
reject("transfer-encoding-vt-before", K, coded(b"\x0bchunked"), V, 400)
reject("transfer-encoding-ff-after", K, coded(b"chunked\x0c"), V, 400)
reject("transfer-encoding-nbsp-after", K, coded(b"chunked\xa0"), T, 400)
reject("transfer-encoding-quoted", K, coded(b'"chunked"'), T, 400)
reject("transfer-encoding-with-parameter", K, coded(b"chunked; q=1"), T, 400)
reject("transfer-encoding-prefixed", K, coded(b"xchunked"), T, 400)
reject("transfer-encoding-suffixed", K, coded(b"chunkedx"), T, 400)
reject("transfer-encoding-space-inside", K, coded(b"chun ked"), T, 400)
reject("transfer-encoding-space-before-colon", K,
       http(b"POST /c HTTP/1.1", b"Host: x", b"Transfer-Encoding : chunked", body=HELLO),
       "RFC 9112 §5.1", 400)
reject("transfer-encoding-obs-fold", K,
       http(b"POST /c HTTP/1.1", b"Host: x", b"Transfer-Encoding:", b" chunked", body=HELLO),
       "RFC 9112 §5.2", 400)
reject("transfer-encoding-http10", K, coded(b"chunked", version=b"HTTP/1.0"), T, 400)

# -- chunk-size ------------------------------------------------------------------------
K = "chunk-size"
S = "RFC 9112 §7.1"
serve("chunk-size-lower-hex", K, chunked(b"a\r\n0123456789\r\n0\r\n\r\n"), S,
      got_chunked(b"0123456789"))
serve("chunk-size-upper-hex", K, chunked(b"A\r\n0123456789\r\n0\r\n\r\n"), S,
      got_chunked(b"0123456789"))
serve("chunk-size-leading-zeros", K, chunked(b"0005\r\nhello\r\n000\r\n\r\n"), S,
      got_chunked())
serve("chunk-size-16-digits", K, chunked(b"0000000000000005\r\nhello\r\n0\r\n\r\n"), S,
      got_chunked())
reject("chunk-size-17-digits", K, chunked(b"00000000000000005\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-overflow", K, chunked(b"10000000000000000\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-overflow-all-f", K, chunked(b"FFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"), S,
       400)
reject("chunk-size-0x", K, chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-plus", K, chunked(b"+5\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-minus", K, chunked(b"-5\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-underscore", K, chunked(b"1_0\r\n0123456789\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-leading-space", K, chunked(b" 5\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-leading-tab", K, chunked(b"\t5\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-trailing-space", K, chunked(b"5 \r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-trailing-tab", K, chunked(b"5\t\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-space-inside", K, chunked(b"1 0\r\n0123456789\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-empty", K, chunked(b"\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-not-hex", K, chunked(b"g\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-extension-only", K, chunked(b";a\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-bare-lf", K, chunked(b"5\nhello\r\n0\r\n\r\n"), "RFC 9112 §2.2", 400)
reject("chunk-size-bare-cr", K, chunked(b"5\rhello\r\n0\r\n\r\n"), "RFC 9112 §2.2", 400)
reject("chunk-size-nul", K, chunked(b"5\x00\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-arabic-digit", K, chunked(b"\xd9\xa5\r\nhello\r\n0\r\n\r\n"), S, 400)
reject("chunk-size-last-chunk-bare-lf", K, chunked(b"5\r\nhello\r\n0\n\r\n"), "RFC 9112 §2.2",
       400)
reject("chunk-size-total-too-large", K, chunked(b"%x\r\n" % (MAX_BODY + 1)),
       "RFC 9110 §15.5.14", 413, pad=MAX_BODY + 1)

# -- chunk-ext -------------------------------------------------------------------------
K = "chunk-ext"
E = "RFC 9112 §7.1.1"
for name, line in [
    ("name", b"5;ext"), ("token-value", b"5;a=b"), ("quoted-value", b'5;a="b c"'),
    ("quoted-pair", b'5;a="b\\"c"'), ("empty-quoted-value", b'5;a=""'),
    ("several", b"5;a=b;c;d=\"e\""), ("bws-before-semicolon", b"5 ;ext"),
    ("bws-after-semicolon", b"5; ext"), ("bws-around-equals", b"5;a = b"),
    ("bws-tabs", b"5\t;\ta\t=\tb"), ("bws-everywhere", b"5 ; a = b ; c"),
    ("obs-text-in-quoted", b'5;a="\x85\xff"'),
]:
    serve(f"chunk-ext-{name}", K, chunked(line + b"\r\nhello\r\n0\r\n\r\n"), E, got_chunked())
serve("chunk-ext-on-last-chunk", K, chunked(b"5\r\nhello\r\n0;a=b\r\n\r\n"), E, got_chunked())
for name, line in [
    ("nul-in-name", b"5;a\x00"), ("ctl-in-value", b"5;a=\x01"), ("del-in-value", b"5;a=\x7f"),
    ("name-not-a-token", b"5;(a)"), ("empty-name", b"5;=b"), ("semicolon-alone", b"5;"),
    ("value-not-a-token", b"5;a=@"), ("space-inside-value", b"5;a=b c"),
    ("missing-value", b"5;a="), ("unterminated-quote", b'5;a="b'),
    ("nul-in-quoted", b'5;a="\x00"'), ("bare-cr", b"5;a\r"), ("high-byte-in-name", b"5;\xe9"),
]:
    reject(f"chunk-ext-{name}", K, chunked(line + b"\r\nhello\r\n0\r\n\r\n"), E, 400)
reject("chunk-ext-bare-lf", K, chunked(b"5;a\nhello\r\n0\r\n\r\n"), "RFC 9112 §2.2", 400)

# -- chunk-data (and the trailer section) -----------------------------------------------
K = "chunk-data"
D = "RFC 9112 §7.1"
L = "RFC 9112 §7.1.2"
serve("chunk-data-several-chunks", K, chunked(b"3\r\nabc\r\n4\r\ndefg\r\n1\r\nh\r\n0\r\n\r\n"), D,
      got_chunked(b"abcdefgh"))
serve("chunk-data-holds-crlf", K, chunked(b"4\r\n\r\n\r\n\r\n0\r\n\r\n"), D,
      got_chunked(b"\r\n\r\n"))
serve("chunk-data-holds-last-chunk", K, chunked(b"5\r\n0\r\n\r\n\r\n0\r\n\r\n"), D,
      got_chunked(b"0\r\n\r\n"))
serve("chunk-data-holds-a-request", K,
      chunked(b"%x\r\n" % len(SECOND) + SECOND + b"\r\n0\r\n\r\n"), D, got_chunked(SECOND))
serve("chunk-data-binary", K, chunked(b"100\r\n" + bytes(range(256)) + b"\r\n0\r\n\r\n"), D,
      got_chunked(bytes(range(256))))
serve("chunk-data-empty-body", K, chunked(b"0\r\n\r\n"), D, got_chunked(b""))
reject("chunk-data-missing-crlf", K, chunked(b"5\r\nhello0\r\n\r\n"), D, 400)
reject("chunk-data-extra-byte", K, chunked(b"5\r\nhellox\r\n0\r\n\r\n"), D, 400)
reject("chunk-data-longer-than-size", K, chunked(b"3\r\nhello\r\n0\r\n\r\n"), D, 400)
reject("chunk-data-shorter-than-size", K, chunked(b"7\r\nhello\r\n0\r\n\r\n"), D, 400)
reject("chunk-data-bare-lf-after", K, chunked(b"5\r\nhello\n0\r\n\r\n"), "RFC 9112 §2.2", 400)
reject("chunk-data-bare-cr-after", K, chunked(b"5\r\nhello\r0\r\n\r\n"), "RFC 9112 §2.2", 400)
reject("chunk-data-cut-by-eof", K, chunked(b"5\r\nhel"), "RFC 9112 §8", 400, eof=True)
reject("chunk-data-no-last-chunk", K, chunked(b"5\r\nhello\r\n"), "RFC 9112 §8", 400, eof=True)
reject("chunk-data-last-chunk-cut-by-eof", K, chunked(b"5\r\nhello\r\n0\r\n"), "RFC 9112 §8",
       400, eof=True)
serve("chunk-data-trailer-dropped", K, chunked(b"5\r\nhello\r\n0\r\nX-T: v\r\n\r\n"), L,
      got_chunked(HTTP_X_T=None))
serve("chunk-data-trailer-host-dropped", K,
      chunked(b"5\r\nhello\r\n0\r\nHost: evil\r\n\r\n"), L, got_chunked(HTTP_HOST="x"))
serve("chunk-data-trailer-content-length-ignored", K,
      chunked(b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"), L, got_chunked())
serve("chunk-data-trailer-transfer-encoding-ignored", K,
      chunked(b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"), L, got_chunked())
serve("chunk-data-trailer-obs-text", K, chunked(b"5\r\nhello\r\n0\r\nX-T: \x85\r\n\r\n"), L,
      got_chunked(HTTP_X_T=None))
reject("chunk-data-trailer-space-before-colon", K,
       chunked(b"5\r\nhello\r\n0\r\nX-T : v\r\n\r\n"), L, 400)
reject("chunk-data-trailer-no-colon", K, chunked(b"5\r\nhello\r\n0\r\nX-T v\r\n\r\n"), L, 400)
reject("chunk-data-trailer-obs-fold", K,
       chunked(b"5\r\nhello\r\n0\r\nX-T: v\r\n w\r\n\r\n"), L, 400)
reject("chunk-data-trailer-nul", K, chunked(b"5\r\nhello\r\n0\r\nX-T: \x00\r\n\r\n"), L, 400)
reject("chunk-data-trailer-bare-lf", K, chunked(b"5\r\nhello\r\n0\r\nX-T: v\n\r\n"), L, 400)
reject("chunk-data-trailer-bare-cr", K, chunked(b"5\r\nhello\r\n0\r\nX-T: v\r\r\n"), L, 400)
reject("chunk-data-trailer-cut-by-eof", K, chunked(b"5\r\nhello\r\n0\r\nX-T: v\r\n"),
       "RFC 9112 §8", 400, eof=True)

# -- pipeline --------------------------------------------------------------------------
K = "pipeline"
P = "RFC 9112 §9.3.2"
X = "RFC 9112 §9.6"
BAD = http(b"GET /bad HTTP/1.1", b"Host: x", b"Host: y")
serve("pipeline-three-gets", K, get(target=b"/1") + get(target=b"/2") + get(target=b"/3"), P,
      echo(target="/1"), echo(target="/2"), echo(target="/3"))
serve("pipeline-bodies-then-get", K,
      with_length(b"5", b"hello") + chunked(b"3\r\nabc\r\n0\r\n\r\n") + get(target=b"/3"), P,
      got_length(b"hello"), got_chunked(b"abc"), echo(target="/3"))
serve("pipeline-twenty-gets", K, b"".join(get(target=b"/%d" % i) for i in range(20)), P,
      *[echo(target=f"/{i}") for i in range(20)])
reject("pipeline-bad-first", K, BAD + get(target=b"/c"), P, 400)
reject("pipeline-bad-second", K, get(target=b"/a") + BAD + get(target=b"/c"), P, 400,
       echo(target="/a"))
reject("pipeline-bad-after-chunked", K, chunked(HELLO) + BAD, P, 400, got_chunked())
reject("pipeline-bad-after-content-length", K, with_length(b"5", b"hello") + BAD, P, 400,
       got_length(b"hello"))
reject("pipeline-te-and-cl-smuggle", K,
       with_length(b"4", b"0\r\n\r\n" + http(b"GET /admin HTTP/1.1", b"Host: x"),
                   b"Transfer-Encoding: chunked"), "RFC 9112 §6.1", 400)
reject("pipeline-bytes-after-last-chunk", K, chunked(b"0\r\n\r\n5\r\nhello\r\n"), P, 400,
       got_chunked(b""), after=False)
reject("pipeline-unknown-method-second", K, get(target=b"/a") + http(b"FOO / HTTP/1.1",
                                                                     b"Host: x"),
       "RFC 9110 §9.1", 501, echo(target="/a"))
serve("pipeline-close-then-get", K, get(b"Connection: close", target=b"/a"), X,
      echo(target="/a"), after="ignored")
serve("pipeline-close-upper-case", K, get(b"Connection: CLOSE", target=b"/a"), X,
      echo(target="/a"), after="ignored")
serve("pipeline-close-in-a-list", K, get(b"Connection: keep-alive, close", target=b"/a"), X,
      echo(target="/a"), after="ignored")
serve("pipeline-close-then-garbage", K,
      get(b"Connection: close", target=b"/a") + b"GARBAGE\x00\r\n\r\n", X,
      echo(target="/a"), after="none", closes=True)
serve("pipeline-close-then-half-request", K,
      get(b"Connection: close", target=b"/a") + b"GET /b HTTP/1.1\r\nHo", X,
      echo(target="/a"), after="none", closes=True)
serve("pipeline-close-then-bad-request", K, get(b"Connection: close", target=b"/a") + BAD, X,
      echo(target="/a"), after="none", closes=True)
serve("pipeline-close-on-chunked-then-get", K, chunked(HELLO, b"Connection: close"), X,
      got_chunked(), after="ignored")
serve("pipeline-close-then-get-eof", K, get(b"Connection: close", target=b"/a") + SECOND, X,
      echo(target="/a"), after="none", closes=True, eof=True)
serve("pipeline-http10-then-get", K, http(b"GET /a HTTP/1.0"), "RFC 9112 §9.3",
      echo(target="/a"), after="ignored")
serve("pipeline-get-body-then-get", K,
      get(b"Content-Length: %d" % len(SECOND), target=b"/a") + SECOND, "RFC 9112 §6.3",
      echo(target="/a", body=SECOND))

# -- expect ----------------------------------------------------------------------------
K = "expect"
X = "RFC 9110 §10.1.1"
serve("expect-100-continue-length", K, with_length(b"5", b"hello", b"Expect: 100-continue"),
      X, echo("POST", "/l", b"hello", interim=True))
serve("expect-100-continue-chunked", K, chunked(HELLO, b"Expect: 100-continue"), X,
      echo("POST", "/c", b"hello", interim=True))
serve("expect-100-continue-mixed-case", K,
      with_length(b"5", b"hello", b"Expect: 100-Continue"), X,
      echo("POST", "/l", b"hello", interim=True))
serve("expect-100-continue-ows", K, with_length(b"5", b"hello", b"Expect:  100-continue \t"),
      X, echo("POST", "/l", b"hello", interim=True))
serve("expect-100-continue-http10", K,
      http(b"POST /l HTTP/1.0", b"Expect: 100-continue", b"Content-Length: 5", body=b"hello"),
      X, echo("POST", "/l", b"hello", protocol="HTTP/1.0"), after="ignored")
serve("expect-100-continue-then-get", K,
      with_length(b"5", b"hello", b"Expect: 100-continue") + get(target=b"/b"), X,
      echo("POST", "/l", b"hello", interim=True), echo(target="/b"))
reject("expect-unknown", K, with_length(b"5", b"hello", b"Expect: foo"), "RFC 9110 §15.5.18",
       417)
reject("expect-list", K, with_length(b"5", b"hello", b"Expect: 100-continue, foo"),
       "RFC 9110 §15.5.18", 417)
reject("expect-101-continue", K, with_length(b"5", b"hello", b"Expect: 101-continue"),
       "RFC 9110 §15.5.18", 417)
reject("expect-unknown-after-get", K,
       get(target=b"/a") + with_length(b"5", b"hello", b"Expect: bar"), "RFC 9110 §15.5.18",
       417, echo(target="/a"))
reject("expect-100-continue-too-large", K,
       with_length(str(MAX_BODY + 1).encode(), b"", b"Expect: 100-continue"),
       "RFC 9110 §15.5.14", 413)

# -- upgrade ---------------------------------------------------------------------------
K = "upgrade"
U = "RFC 9110 §7.8"
WS = (b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13",
      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
serve("upgrade-foo-body", K, with_length(b"5", b"hello", b"Upgrade: foo"), "RFC 9112 §6.3",
      got_length(b"hello", HTTP_UPGRADE="foo"), after="none")
serve("upgrade-foo-connection-upgrade-body", K,
      with_length(b"5", b"hello", b"Upgrade: foo", b"Connection: Upgrade"), "RFC 9112 §6.3",
      got_length(b"hello", HTTP_UPGRADE="foo"), after="ignored")
serve("upgrade-foo-body-holds-a-request", K,
      with_length(b"%d" % len(SECOND), SECOND, b"Upgrade: foo", b"Connection: Upgrade"),
      "RFC 9112 §6.3", got_length(SECOND), after="ignored")
serve("upgrade-foo-chunked-body", K, chunked(HELLO, b"Upgrade: foo", b"Connection: Upgrade"),
      "RFC 9112 §6.3", got_chunked(), after="ignored")
serve("upgrade-websocket", K, get(*WS), U, echo(HTTP_UPGRADE="websocket"), after="ignored")
serve("upgrade-websocket-lower-case", K,
      get(b"upgrade: websocket", b"connection: upgrade"), U, echo(HTTP_UPGRADE="websocket"),
      after="ignored")
serve("upgrade-websocket-with-body", K,
      with_length(b"5", b"hello", *WS), "RFC 9112 §6.3", got_length(b"hello"), after="ignored")
serve("upgrade-h2c", K,
      get(b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
          b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), "RFC 7540 §3.2",
      echo(HTTP_UPGRADE="h2c"), after="ignored")
serve("upgrade-websocket-http10", K,
      http(b"GET / HTTP/1.0", b"Upgrade: websocket", b"Connection: Upgrade"), U,
      echo(protocol="HTTP/1.0"), after="ignored")
reject("upgrade-http2-preface", K, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "RFC 9113 §3.4", 505,
       after=False)
reject("upgrade-http2-preface-and-settings", K,
       b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
       "RFC 9113 §3.4", 505, after=False)
reject("upgrade-connect-with-upgrade", K,
       http(b"CONNECT a:80 HTTP/1.1", b"Host: a:80", b"Upgrade: websocket",
            b"Connection: Upgrade"), "RFC 9110 §9.3.6", 501)


def by_class() -> Counter:
    return Counter(c.klass for c in CASES)
