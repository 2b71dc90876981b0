"""Sans-I/O HTTP/1.1 server connection: bytes in, events out.

Theory of operation
-------------------
HttpConnection owns no socket, clock or logger. `receive_data(bytes)` feeds
httptools (llhttp, strict), whose callbacks only build Request objects and
append events. `next_event()` returns, in order:

- CONTINUE       the current request sent `Expect: 100-continue` and its
                 body will be accepted: the caller sends `100 Continue`;
- a Request      complete, body included (the app never waits for I/O);
- an HttpError   the client broke the protocol or a limit: answer with its
                 status and close; nothing after it is parsed;
- NEED_DATA      nothing more until more bytes arrive.

(`events` is the queue itself; the protocol drains it directly on its hot path.)

Limits are checked as bytes arrive, so memory is bounded by the limits and
not by what a client chooses to send. Bodies past `body_buffer_bytes` spill
to an anonymous temporary file.

Strictness: llhttp (strict) rejects bad bytes, bare CR/LF, obs-fold, bad
chunk sizes and CL+TE. What it lets through, this module checks, on the bytes
already in hand: Host (exactly one, valid, no userinfo), the request target's
form, Transfer-Encoding (only `chunked`, once; never in HTTP/1.0), singleton
fields, the version (HTTP/1.x with x > 1 is served as 1.1), trailing OWS,
unknown methods (501), CONNECT (501), and bodies of requests that asked to
upgrade (framed as usual: preforkd does not switch protocols). A usual request
pays for this with a memo lookup and two byte tests (see on_headers_complete).
tests/unit/rfc_table.py lists every rule with its section and test.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tempfile
from dataclasses import dataclass
from typing import Any

import httptools

from preforkd.config import FIELDS_BY_KEY


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
_NO_EVENTS: tuple = ()
CONTINUE = _Sentinel("CONTINUE")


def _default(key: str) -> Any:
    return FIELDS_BY_KEY[key].default


@dataclass(frozen=True)
class Limits:
    """The request limits, named and defaulted as in the config table."""

    max_request_line_bytes: int = _default("max_request_line_bytes")
    max_header_bytes: int = _default("max_header_bytes")
    max_header_count: int = _default("max_header_count")
    max_body_bytes: int = _default("max_body_bytes")
    body_buffer_bytes: int = _default("body_buffer_bytes")

    @classmethod
    def from_config(cls, config: Any) -> Limits:
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


class HttpError(Exception):
    """A request that gets an error response and a closed connection (also an event)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Request:
    """One parsed request. Fields most requests leave alone are class attributes:
    a new request sets three fields instead of initialising eleven (hot path)."""

    method: bytes = b""
    target: bytes = b""
    headers: list[tuple[bytes, bytes]]  # set by the parser: never shared
    version = "1.1"
    keep_alive = True
    body: Any = b""  # bytes, bytearray, or a spooled file past body_buffer_bytes
    body_size = 0
    content_length = -1
    expect = b""
    chunked = False
    connection_header = False
    plain = False  # HTTP/1.1, kept alive, no body: nothing above needs a second look

    def body_file(self) -> Any:
        """The body as a readable binary file positioned at 0."""
        if isinstance(self.body, (bytes, bytearray)):
            import io

            return io.BytesIO(self.body)
        self.body.seek(0)
        return self.body


# Header names whose value the connection itself needs, found by length first (cheap).
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_EXPECT = b"expect"
_CONNECTION = b"connection"
_WATCHED_LENGTHS = frozenset(len(n) for n in (_CONTENT_LENGTH, _TRANSFER_ENCODING, _EXPECT,
                                                _CONNECTION))
_HOST = b"host"
# Fields that may come once only (RFC 9110 §5.3; Content-Length: llhttp's own rule).
_SINGLETONS = (_HOST, b"content-type")
_OWS = b" \t"

# RFC 9110 §4.2 / RFC 3986 §3.2.2: uri-host [":" port]. A reg-name has no "@" (so no
# userinfo) and no whitespace; IP literals are checked by ipaddress.
_REG_NAME = rb"(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*"
_AUTHORITY = re.compile(rb"(?:\[([0-9A-Fa-f:.]+)\]|(" + _REG_NAME + rb"))(?::([0-9]*))?")
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.S)
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# llhttp's own version rule accepts only 0.9, 1.0, 1.1 and 2.0 and answers the rest
# with a parse error: preforkd decides instead (HTTP/1.2 is served as 1.1, RFC 9110
# §2.5). BWS before a chunk extension's ";" is allowed by the grammar (RFC 9112 §7.1.1).
_LENIENCIES = {"lenient_version": True, "lenient_spaces_after_chunk_size": True}


def valid_authority(value: bytes, empty_ok: bool = True) -> bool:
    """uri-host [":" port], the form of a Host value and of an absolute target's
    authority (RFC 9110 §7.2, RFC 3986 §3.2.2)."""
    m = _AUTHORITY.fullmatch(value)
    if m is None:
        return False
    literal, name, port = m.groups()
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except ValueError:
            return False
    elif not name and not empty_ok:
        return False
    return not port or int(port) <= 65535


class HttpConnection:
    __slots__ = ("limits", "_parser", "events", "request", "in_headers", "_failed",
                 "_head_bytes", "_big", "eof", "_max_head", "_max_line", "_max_count",
                 "_special", "_held", "_fields_ok")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._parser: Any = None  # made on the first byte, dropped by release()
        self.events: Any = _NO_EVENTS  # a list once there is something to report
        self.request: Request | None = None
        self.in_headers = False
        self._failed = False
        # Bytes fed while a header section was incomplete. While this plus the next
        # read stays under max_header_bytes, no header section in that read can be
        # too large, so the per-header byte count is skipped (the common case).
        self._head_bytes = 0
        self._big = False
        self._special = False  # the request in its headers has a watched header
        self._held: Request | None = None  # asked to upgrade; llhttp skips its body
        # The last header section that passed the field checks: a client repeats its
        # fields, and an equal list (one C-level compare) needs no second look.
        self._fields_ok: list | None = None
        self._max_head = limits.max_header_bytes
        self._max_line = limits.max_request_line_bytes
        self._max_count = limits.max_header_count
        self.eof = False

    # `request` is not None while part of a request has arrived and its end has not;
    # `in_headers` while that part is still the header section.

    @property
    def has_events(self) -> bool:
        return bool(self.events)

    def receive_data(self, data: bytes) -> None:
        if self._failed:
            return
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
            parser.set_dangerous_leniencies(**_LENIENCIES)
        # An unfinished header section's bytes so far plus this read: while that stays
        # under the limit, no header section completed in this read can be too large,
        # and on_headers_complete skips the exact count (the common case).
        self._big = self._head_bytes + len(data) > self._max_head
        done = len(self.events)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade_refused(data[e.args[0]:])
            return
        except httptools.HttpParserCallbackError as e:
            err = e.__context__
            self._fail(err if isinstance(err, HttpError) else HttpError(400, str(err)))
        except httptools.HttpParserInvalidMethodError as e:
            self._fail(_method_error(data, self.events[done:], str(e)))
            return
        except httptools.HttpParserError as e:
            self._fail(HttpError(400, str(e)))
            return
        if self.in_headers:
            # The read ended inside a header section. llhttp holds a partial header
            # line itself, unbounded: cap what we let it hold. (This counts the whole
            # read, an upper bound of the section's part in it.)
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._fail(HttpError(431, "header section too large"))

    def receive_eof(self) -> None:
        """The client half-closed: a request cut short is an error (answered, then closed)."""
        self.eof = True
        if self.request is not None and not self._failed:
            self._fail(HttpError(400, "connection closed in the middle of a request"))

    def _upgrade_refused(self, rest: bytes) -> None:
        """llhttp stopped after a request that asked to switch protocols (Upgrade,
        WebSocket, h2c). preforkd does not switch: the request is answered, then the
        connection closes. Its body, which llhttp skipped, is framed as usual (RFC 9112
        §6.3) by a parser that sees only the framing."""
        req = self._held
        if req is None:
            last = self.events[-1] if self.events else None
            if isinstance(last, Request):
                if last.method == b"CONNECT":
                    self.events[-1] = _connect_refused()
                last.keep_alive = False
            self._failed = True
            return
        self._held = None
        self.request = req
        framing = (b"Transfer-Encoding: chunked" if req.chunked
                   else b"Content-Length: %d" % req.content_length)
        parser = self._parser = httptools.HttpRequestParser(_HeldBody(self, req))
        parser.feed_data(b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n")
        if rest:
            self.receive_data(rest)

    def _fail(self, error: HttpError) -> None:
        if self._failed:
            return  # (the request that asked to upgrade was the last one)
        self._failed = True
        self.in_headers = False
        self.request = None
        self._emit(error)

    def next_event(self) -> Any:
        if self.events:
            return self.events.pop(0)
        return NEED_DATA

    def close(self) -> None:
        """The connection is gone: drop the parser (it holds our bound methods)."""
        self._parser = None
        self._failed = True

    def release(self) -> None:
        """Between requests, drop the parser (a few hundred bytes); the next byte
        makes a new one. For connections that sit idle."""
        if self.request is None and not self.events and not self._failed:
            self._parser = None
            self.events = _NO_EVENTS
            self._fields_ok = None

    # -- httptools callbacks (they only record) -------------------------------------
    # No on_message_begin: one Python call fewer per request. A request starts with
    # its target's first bytes (llhttp reports nothing earlier).
    def on_url(self, part: bytes) -> None:
        if self.in_headers:  # the target goes on (split across reads)
            req = self.request
            target = req.target = req.target + part
        else:
            req = self.request = Request()
            req.headers = []
            self.in_headers = True
            self._special = False
            target = req.target = part
        if len(target) > self._max_line:
            raise HttpError(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_headers:  # (else a chunked trailer: dropped, bounded by llhttp)
            # llhttp strips leading OWS only; trailing OWS is not part of the value
            # either (RFC 9110 §5.5). (rstrip returns the same object when there is none.)
            value = value.rstrip(_OWS)
            self.request.headers.append((name, value))
            if len(name) in _WATCHED_LENGTHS:
                self._watch(name.lower(), value)

    def _watch(self, lower: bytes, value: bytes) -> None:
        req = self.request
        if lower == _CONTENT_LENGTH:
            req.content_length = int(value)  # llhttp has validated the digits
        elif lower == _TRANSFER_ENCODING:
            _check_coding(req, value)
        elif lower == _EXPECT:
            req.expect = value.lower()
        elif lower == _CONNECTION:
            req.connection_header = True
        else:
            return
        self._special = True

    def on_headers_complete(self) -> None:
        req = self.request
        parser = self._parser
        self.in_headers = False
        self._head_bytes = 0
        req.method = parser.get_method()
        if self._big or len(req.headers) > self._max_count:
            self._check_size(req)
        # Without a Connection header llhttp keeps alive only versions with major and
        # minor >= 1. So a request that is kept alive and has none of the watched
        # headers is HTTP/1.1 (or 1.x, served as 1.1) without a body, known without
        # asking for the version (which formats a string).
        if self._special or not parser.should_keep_alive():
            self._check_framing(req, parser)
        else:
            req.plain = True
        if req.headers != self._fields_ok:
            self._check_fields(req)
        # The usual target: origin-form without a fragment (47 is "/", 35 "#").
        target = req.target
        if target[0] != 47 or 35 in target:
            _check_target(req)

    def _check_fields(self, req: Request) -> None:
        """Host: exactly one, valid, no userinfo (RFC 9112 §3.2, RFC 9110 §7.2); required
        from HTTP/1.1 only; and no singleton field twice."""
        seen = [n.lower() for n, _ in req.headers]
        for name in _SINGLETONS:
            if seen.count(name) > 1:
                raise HttpError(400, f"two {name.decode().title()} fields")
        if _HOST in seen:
            if not valid_authority(req.headers[seen.index(_HOST)][1]):
                raise HttpError(400, "invalid Host field")
            self._fields_ok = req.headers
        elif req.version != "1.0":
            raise HttpError(400, "no Host field")

    def _check_size(self, req: Request) -> None:
        if len(req.headers) > self._max_count:
            raise HttpError(431, "too many header fields")
        if len(req.target) + sum(len(n) + len(v) + 4 for n, v in req.headers) > self._max_head:
            raise HttpError(431, "header section too large")

    def _check_framing(self, req: Request, parser: Any) -> None:
        keep_alive = req.keep_alive = parser.should_keep_alive()
        if not keep_alive or req.connection_header:
            req.version = _served_version(parser.get_http_version())
        if req.chunked and req.version == "1.0":
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")  # RFC 9112 §6.1
        if req.content_length > self.limits.max_body_bytes:
            raise HttpError(413, "request body too large")
        if req.expect:
            if req.expect != b"100-continue":
                raise HttpError(417, "unsupported expectation")
            # Never to an HTTP/1.0 client (RFC 9110 §10.1.1): it sends its body anyway.
            if (req.content_length > 0 or req.chunked) and req.version != "1.0":
                self._emit(CONTINUE)
        if (req.content_length > 0 or req.chunked) and parser.should_upgrade():
            self._held = req  # llhttp will skip the body: see _upgrade_refused

    def on_body(self, data: bytes) -> None:
        req = self.request
        size = req.body_size + len(data)
        if size > self.limits.max_body_bytes:
            raise HttpError(413, "request body too large")
        req.body_size = size
        body = req.body
        if not body:
            req.body = data  # the common case: the whole body in one piece, no copy
        elif isinstance(body, (bytes, bytearray)):
            if size > self.limits.body_buffer_bytes:
                spill = tempfile.TemporaryFile()
                spill.write(body)
                spill.write(data)
                req.body = spill
            elif isinstance(body, bytes):
                req.body = bytearray(body) + data
            else:
                body += data
        else:
            body.write(data)

    def on_message_complete(self) -> None:
        req = self.request
        self.request = None
        if req is self._held:
            return  # its body is still to come (_upgrade_refused)
        events = self.events
        if events is _NO_EVENTS:  # (_emit inlined: this runs for every request)
            self.events = [req]
        else:
            events.append(req)

    def _emit(self, event: Any) -> None:
        if self.events is _NO_EVENTS:
            self.events = [event]
        else:
            self.events.append(event)


class _HeldBody:
    """The callbacks of a parser that reads only the body of a request whose head
    another parser took (see HttpConnection._upgrade_refused)."""

    __slots__ = ("conn", "req")

    def __init__(self, conn: HttpConnection, req: Request) -> None:
        self.conn = conn
        self.req = req

    def on_body(self, data: bytes) -> None:
        self.conn.on_body(data)

    def on_message_complete(self) -> None:
        conn, req = self.conn, self.req
        if req is None:
            return  # bytes after it: never served (the connection closes)
        self.req = None
        conn.request = None
        req.keep_alive = False
        conn._emit(req)
        conn._failed = True


def _connect_refused() -> HttpError:
    """An origin server that does not tunnel refuses CONNECT (RFC 9110 §9.3.6)."""
    return HttpError(501, "CONNECT is not served (no tunnels)")


def _served_version(version: str) -> str:
    """The version a request is served as (RFC 9110 §2.5, §6.2)."""
    if version == "1.1" or version == "1.0":
        return version
    if version[0] == "1":
        return "1.1"  # a higher minor version: the highest one we implement
    if version == "0.9":
        raise HttpError(400, "no HTTP version in the request line")
    raise HttpError(505, f"HTTP/{version} is not supported")


def _check_coding(req: Request, value: bytes) -> None:
    """Transfer-Encoding: only `chunked`, once (RFC 9112 §6.1, §7). A list, an empty
    element or a second field is refused rather than interpreted: two parsers that
    read such framing differently are a request-smuggling hole."""
    if req.chunked:
        raise HttpError(400, "Transfer-Encoding twice")
    coding = value.lower()
    if coding != b"chunked":
        elements = [e.strip(_OWS) for e in coding.split(b",")]
        if all(_TOKEN.fullmatch(e) for e in elements) and elements[-1] == b"chunked":
            raise HttpError(501, "transfer coding not implemented")
        raise HttpError(400, "invalid Transfer-Encoding")
    req.chunked = True


def _check_target(req: Request) -> None:
    """The request target's form (RFC 9112 §3.2.1-4, RFC 9110 §4.2.1), for a target
    that is not the usual one."""
    target = req.target
    if target[0] == 47:  # origin-form
        if 35 in target:
            raise HttpError(400, "fragment in the request target")
    elif target == b"*":
        if req.method != b"OPTIONS":
            raise HttpError(400, "asterisk-form is only for OPTIONS")
    elif req.method == b"CONNECT":
        raise _connect_refused()
    else:
        _absolute_form(req)


def _absolute_form(req: Request) -> None:
    """An absolute-form target: its authority is the request's host, whatever the
    Host field says (RFC 9112 §3.2.2); an http(s) URI needs a host (RFC 9110 §4.2)."""
    m = _ABSOLUTE.fullmatch(req.target)
    if m is None:
        raise HttpError(400, "invalid request target")
    scheme, authority, rest = m.groups()
    if scheme.lower() not in (b"http", b"https"):
        raise HttpError(400, "request target is not an http(s) URI")
    if not valid_authority(authority, empty_ok=False):
        raise HttpError(400, "invalid authority in the request target")
    if 35 in rest or (rest and rest[0] != 47 and rest[0] != 63):
        raise HttpError(400, "invalid request target")
    req.headers = [(n, authority if n.lower() == _HOST else v) for n, v in req.headers]


def _method_error(data: bytes, done: list, detail: str) -> HttpError:
    """llhttp knows a fixed list of methods; methods are an open set (RFC 9110 §9.1): a
    token it does not know is 501, anything else 400. llhttp gives no error offset,
    so the method is found after the requests this read completed, when their ends
    can be found (no chunked body); else 400."""
    pos = 0
    for req in done:
        if not isinstance(req, Request) or req.chunked:
            return HttpError(400, detail)
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return HttpError(400, detail)
        pos = end + 4 + max(req.content_length, 0)
    while data.startswith(b"\r\n", pos):
        pos += 2
    space = data.find(b" ", pos)
    method = data[pos:space if space >= 0 else len(data)]
    if method and _TOKEN.fullmatch(method):
        return HttpError(501, "method not implemented")
    return HttpError(400, detail)
